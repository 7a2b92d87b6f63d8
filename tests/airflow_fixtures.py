"""Running DAGs through Airflow itself (``dag.test()``) against a real metadata database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_c66.testing import dags


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[None]:
    """Migrate the scratch SQLite metadata database once per session (about 4 s)."""
    dags.migrate_metadata_db()
    yield


@pytest.fixture
def run_dag(airflow_db: None) -> Any:
    """Run a DAG built in a test with ``dag.test()``; returns the DagRun."""
    return dags.run_dag

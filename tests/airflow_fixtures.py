"""Running DAGs through Airflow itself (``dag.test()``) against a real metadata database."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[None]:
    """Migrate the scratch SQLite metadata database once per session (about 4 s)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, timeout=300
    )
    yield


def _sync_to_db(dag: Any) -> None:
    """Serialize a DAG built in a test into the metadata DB, as the DAG processor would.

    Airflow 3 runs ``dag.test()`` only for DAGs serialized under a bundle.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    try:
        from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag, sync_bag_to_db  # type: ignore[no-redef]

    manager = DagBundlesManager()
    manager.sync_bundles_to_db()
    bundle = next(iter(manager.get_all_dag_bundles())).name
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, bundle, None)


@pytest.fixture
def run_dag(airflow_db: None) -> Any:
    """Run a DAG built in a test with ``dag.test()``; returns the DagRun."""

    def run(dag: Any, **kwargs: Any) -> Any:
        _sync_to_db(dag)
        return dag.test(**kwargs)

    return run

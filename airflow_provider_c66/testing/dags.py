"""Run a DAG through Airflow itself (``dag.test()``) from a test or a script, offline.

Airflow 3 runs ``dag.test()`` only for DAGs serialized in the metadata database under a bundle; a DAG
built in a test, or imported from a file by a script, is written there first, as the DAG processor
would. Airflow is imported when called, never at import time.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any


def migrate_metadata_db() -> None:
    """Create or upgrade the metadata database that ``AIRFLOW_HOME`` points at (SQLite: seconds)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, timeout=600
    )


def sync_dag_to_db(dag: Any) -> None:
    """Serialize ``dag`` into the metadata database under the first configured bundle."""
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


def run_dag(dag: Any, **test_kwargs: Any) -> Any:
    """``dag.test(**test_kwargs)`` after serializing the DAG; returns the DagRun."""
    sync_dag_to_db(dag)
    return dag.test(**test_kwargs)

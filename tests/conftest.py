"""Test set-up: a scratch Airflow home with a migrated SQLite database, and shared fixtures."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Airflow reads its configuration at import: point it at a scratch home before anything imports it.
_HOME = tempfile.mkdtemp(prefix="c66-airflow-home-")
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["AIRFLOW_HOME"] = _HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", os.path.join(_HOME, "dags"))
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{_HOME}/airflow.db")
os.environ.setdefault("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
os.environ.setdefault("AIRFLOW__LOGGING__REMOTE_LOGGING", "False")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

pytest_plugins = ["tests.s3_fixtures", "tests.airflow_fixtures", "tests.copy_fixtures"]

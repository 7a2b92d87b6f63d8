"""Apache Airflow provider for Cloud 66 managed database backups.

Importing this package is cheap on purpose: it is imported while DAG files are parsed, so it
pulls in neither boto3 nor Airflow; each class lives in the module named after its kind.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

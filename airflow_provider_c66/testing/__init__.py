"""Test helpers: a live Cloud 66 API emulator and its deterministic backup content.

Importing this package loads the standard library only (no Airflow, no boto3), so test suites can
use it freely. The pytest fixtures live in :mod:`.pytest_plugin`, registered as a ``pytest11`` plugin.
"""

from airflow_provider_c66.testing.content import content_range, iter_content, sha256_hex, sha256_range
from airflow_provider_c66.testing.emulator import Cloud66Emulator, RecordedRequest

__all__ = [
    "Cloud66Emulator",
    "RecordedRequest",
    "content_range",
    "iter_content",
    "sha256_hex",
    "sha256_range",
]

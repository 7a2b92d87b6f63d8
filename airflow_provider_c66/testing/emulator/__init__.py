"""An in-process HTTP emulator of the Cloud 66 v3 backups API and of its S3 signed file URLs.

Tests, benchmarks and demos talk to it over real sockets instead of Cloud 66, so the provider's HTTP
code (auth, pagination, rate limits, the ``%25`` URL quirk, ranged downloads, dropped connections)
is exercised exactly as in production. It uses the standard library only: importing it must stay
cheap for users' test suites.

One module per role, combined into :class:`Cloud66Emulator` in ``core``: ``state`` (stacks, backups,
their files, the request log), ``budget`` (the rate budget's windows), ``faults`` (fault injection),
``api`` (the API router), ``files`` (signed URLs and downloads), ``server`` (the HTTP server), and
``replies`` (what an answer is). Tests change the emulator through its public hooks only:
:meth:`~Cloud66Emulator.route_api`, :meth:`~Cloud66Emulator.sign_url`,
:meth:`~Cloud66Emulator.file_reply` and :attr:`RecordedRequest.budget_window`.
"""

from __future__ import annotations

from airflow_provider_c66.testing.emulator.api import PER_PAGE
from airflow_provider_c66.testing.emulator.core import Cloud66Emulator
from airflow_provider_c66.testing.emulator.files import ACCESS_KEY_ID
from airflow_provider_c66.testing.emulator.server import LOG_ENV
from airflow_provider_c66.testing.emulator.state import (
    API_PREFIX,
    DB_TYPES,
    FILE_PREFIX,
    RecordedRequest,
    RequestKind,
)

__all__ = [
    "ACCESS_KEY_ID",
    "API_PREFIX",
    "DB_TYPES",
    "FILE_PREFIX",
    "LOG_ENV",
    "PER_PAGE",
    "Cloud66Emulator",
    "RecordedRequest",
    "RequestKind",
]

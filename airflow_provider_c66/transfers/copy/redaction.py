"""Keeping the signature part of signed URLs out of messages and urllib3's logs."""

from __future__ import annotations

import logging
import re

from airflow_provider_c66.api import redact_text

_QUERY = re.compile(r"\?[^\s'\"<>()]*")


def _scrub(text: str) -> str:
    """Free text fit for a message: signed-URL credentials and whole query strings blanked out."""
    return _QUERY.sub("?[redacted]", redact_text(text))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_scrub(str(exc))}"


class _RedactSignedUrls(logging.Filter):
    """urllib3 logs every request's full path at DEBUG, and a signed URL's query string is a credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def _redact_urllib3_logs() -> None:
    # A logger's filters see only records logged on that very logger, so each module's logger gets one.
    for name in ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager", "urllib3.connection"):
        target = logging.getLogger(name)
        if not any(isinstance(existing, _RedactSignedUrls) for existing in target.filters):
            target.addFilter(_RedactSignedUrls())

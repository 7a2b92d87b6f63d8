"""Every secret rule of the package in one place: redaction of text, URLs and logs, and masking.

A signed URL's query string is a credential, and so is the API token. Two defences keep them out of
output, and both live here so that every path (hook, operators, transfers, copy engine, validation,
errors) calls the same code:

- *redaction* rewrites a text before it is written: :func:`redact_url`, :func:`redact_text`,
  :func:`redact_message`, :func:`redact_invalid_url`, :func:`describe_error`, and the logging filter
  :class:`RedactSignedUrls` (installed on urllib3 by :func:`redact_urllib3_logs`);
- *masking* registers a value with Airflow's secrets masker, which blanks it in every task log line
  and stored rendered field: :func:`mask_credential`, :func:`mask_for_rendered_fields`,
  :func:`mask_presigned_url`.

Cloud 66's own texts (error descriptions, a failed import's ``backup_result``) may echo a signed URL,
and not always verbatim: percent-encoded once or twice (``X-Amz-Signature%3D...%26``), or JSON-escaped
(``\\u0026``). Every form is caught here, so no caller has to know which one it holds.

Airflow is imported only inside the masking functions: the copy engine uses this module and stays
free of Airflow.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

_SECRET_NAMES = (
    "Signature",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "AWSAccessKeyId",
    "X-Goog-Signature",
    "X-Goog-Credential",
    "sig",
)
# ``=`` as written, percent-encoded once or twice, or JSON-escaped.
_EQUALS = r"(?:=|%3D|%253D|\\u003d)"
# A value ends where its parameter does: ``&`` in any of the same forms, a quote, a space or a bracket.
_VALUE = r"(?:(?!%26|%2526|\\u0026)[^&\s'\"<>\\])+"
# A name may follow a digit: ``%26X-Amz-Signature`` is an encoded ``&X-Amz-Signature``.
_SECRET_PARAMS = re.compile(rf"(?i)(?<![A-Za-z-])({'|'.join(_SECRET_NAMES)})({_EQUALS})({_VALUE})")
# A whole query string in free text, up to a space, a quote or a bracket.
_QUERY = re.compile(r"\?[^\s'\"<>()]*")
# Query parameters of an S3 presigned URL that grant access on their own: each is masked by itself too.
_PRESIGNED_SECRETS = frozenset(
    {"Signature", "X-Amz-Signature", "X-Amz-Security-Token", "x-amz-security-token"}
)
# urllib3's loggers that write request paths; a logger's filters see only its own records.
_URLLIB3_LOGGERS = (
    "urllib3.connectionpool",
    "urllib3.util.retry",
    "urllib3.poolmanager",
    "urllib3.connection",
)


def redact_url(url: str) -> str:
    """A URL fit for a log line: scheme, host and path; the query string (a credential) is dropped."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "[redacted]" if parts.query else "", ""))


def redact_invalid_url(value: str) -> str:
    """A value refused as a URL, fit for an error message: it may not parse, so it is cut at the
    first ``?`` instead of parsed, and kept to 120 characters."""
    return value.split("?", 1)[0][:120] + ("?[redacted]" if "?" in value else "")


def redact_text(text: str) -> str:
    """Blank out signed-URL credentials wherever they appear in free text, in any of their encodings."""
    return _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)


def redact_message(text: str) -> str:
    """Free text from a library (requests, urllib3, botocore) fit for a message: a signed URL there
    may carry credentials under any name, so every query string is blanked, not only known ones."""
    return _QUERY.sub("?[redacted]", redact_text(text))


def describe_error(exc: BaseException) -> str:
    """An exception as ``Type: text`` for a message or a retry reason, through :func:`redact_message`."""
    return f"{type(exc).__name__}: {redact_message(str(exc))}"


class RedactSignedUrls(logging.Filter):
    """urllib3 logs every request's full path at DEBUG, and a signed URL's query string is a credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def redact_urllib3_logs() -> None:
    """Install :class:`RedactSignedUrls` on each urllib3 logger, once: the copy engine's GETs pass there."""
    for name in _URLLIB3_LOGGERS:
        target = logging.getLogger(name)
        if not any(isinstance(existing, RedactSignedUrls) for existing in target.filters):
            target.addFilter(RedactSignedUrls())


def mask_credential(secret: str) -> None:
    """Register a credential with Airflow's secrets masker so no task log line can show it."""
    if not secret:
        return
    try:
        from airflow.providers.common.compat.sdk import mask_secret
    except ImportError:  # pragma: no cover
        return
    mask_secret(secret)


def mask_for_rendered_fields(secret: str) -> None:
    """Mask a credential in task logs and in the rendered fields Airflow stores.

    Airflow 3.1 redacts the rendered fields it stores with airflow-core's secrets masker, which
    ``mask_secret`` (the Task SDK's) does not reach; newer releases (3.3) use the SDK's masker.
    """
    mask_credential(secret)
    if not secret:
        return
    try:
        from airflow._shared.secrets_masker import mask_secret as core_mask_secret
    except ImportError:  # a worker without airflow-core
        return
    core_mask_secret(secret)


def mask_presigned_url(url: str) -> None:
    """Mask an S3 presigned URL's query, and each parameter that grants access on its own, since a
    message may quote one without the rest of the query."""
    query = urlsplit(url).query
    mask_credential(query)
    for name, value in parse_qsl(query):
        if name in _PRESIGNED_SECRETS:
            mask_credential(value)

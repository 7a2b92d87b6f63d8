"""Redaction of signed-URL credentials in text: the one rule every message, log line and error uses.

A signed URL's query string is a credential. Cloud 66's own texts (error descriptions, a failed
import's ``backup_result``) may echo one, and not always verbatim: percent-encoded once or twice
(``X-Amz-Signature%3D...%26``), or JSON-escaped (``\\u0026``). Every form is caught here, so no caller
has to know which one it holds.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

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


def redact_url(url: str) -> str:
    """A URL fit for a log line: scheme, host and path; the query string (a credential) is dropped."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "[redacted]" if parts.query else "", ""))


def redact_text(text: str) -> str:
    """Blank out signed-URL credentials wherever they appear in free text, in any of their encodings."""
    return _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)

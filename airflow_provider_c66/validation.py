"""Checks for user input, run before any request so bad input fails with no side effect.

Every check raises :class:`Cloud66InputError` naming the argument and what is allowed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit

from airflow_provider_c66.exceptions import Cloud66InputError
from airflow_provider_c66.models import DB_TYPES, parse_datetime
from airflow_provider_c66.redaction import redact_invalid_url

_STACK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_FILE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MAX_KEEP_COUNT = 10_000


def _describe(value: object) -> str:
    return f"{value!r:.80} ({type(value).__name__})"


def stack_id(value: object, field: str = "stack_id") -> str:
    """A stack UID: letters, digits, ``-`` and ``_``, at most 128 characters."""
    if not isinstance(value, str) or not _STACK_ID.fullmatch(value.strip()):
        raise Cloud66InputError(
            field,
            "must be a Cloud 66 stack UID (letters, digits, '-' or '_', at most 128 characters), "
            f"got {_describe(value)}",
        )
    return value.strip()


def positive_int(value: object, field: str, maximum: int | None = None) -> int:
    """An integer ≥ 1 (a numeric string is accepted, as templated fields render to strings)."""
    return integer(value, field, minimum=1, maximum=maximum)


def integer(value: object, field: str, *, minimum: int, maximum: int | None = None, note: str = "") -> int:
    """An integer from ``minimum`` (to ``maximum``); a numeric string is accepted, as templated fields
    render to strings. ``note`` says what a bound means, e.g. what 0 does."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        number = int(value)
    if number is None or number < minimum or (maximum is not None and number > maximum):
        if maximum is None:
            allowed = f"of at least {minimum}"
        elif minimum == 1:
            allowed = f"of at least 1 and at most {maximum}"
        else:
            allowed = f"from {minimum} to {maximum}"
        raise Cloud66InputError(field, f"must be an integer {allowed}{note}, got {_describe(value)}")
    return number


def flag(value: object, field: str) -> bool:
    """A boolean; templated fields render to ``"True"``/``"False"``, which are read as such."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise Cloud66InputError(field, f"must be true or false, got {value!r:.80}")


def backup_id(value: object, field: str = "backup_id") -> int:
    return positive_int(value, field)


def file_id(value: object, field: str = "file_id") -> str:
    if not isinstance(value, str) or not _FILE_ID.fullmatch(value) or ".." in value:
        raise Cloud66InputError(
            field, f"must be a backup file id such as 'tar' or 'tar-aa', got {_describe(value)}"
        )
    return value


def db_type(value: object, field: str = "db_type") -> str:
    """One database type: mysql, postgresql, redis or mongodb."""
    if not isinstance(value, str) or value.strip().lower() not in DB_TYPES:
        raise Cloud66InputError(field, f"must be one of {', '.join(DB_TYPES)}, got {_describe(value)}")
    return value.strip().lower()


def db_types(value: object, field: str = "db_type", *, allow_all: bool = True) -> list[str]:
    """A list of database types, or a comma-separated string; ``all`` where the API takes it."""
    items: list[object]
    if isinstance(value, str):
        items = [part for part in value.split(",")]
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, dict)):
        items = list(value)
    else:
        items = [value]
    allowed = ("all", *DB_TYPES) if allow_all else DB_TYPES
    cleaned = [item.strip().lower() if isinstance(item, str) else item for item in items]
    if not cleaned or any(item not in allowed for item in cleaned):
        raise Cloud66InputError(
            field,
            f"must be one or more of {', '.join(allowed)} (a list or comma-separated), got {_describe(value)}",
        )
    if "all" in cleaned and len(cleaned) > 1:
        raise Cloud66InputError(field, f"'all' cannot be combined with other types, got {_describe(value)}")
    return list(dict.fromkeys(str(item) for item in cleaned))


_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)


def cron(value: object, field: str = "frequency") -> str:
    """A 5-field cron expression (minute hour day-of-month month day-of-week), as Cloud 66 takes."""
    problem = "must be a 5-field cron expression such as '0 */1 * * *'"
    if not isinstance(value, str):
        raise Cloud66InputError(field, f"{problem}, got {_describe(value)}")
    parts = value.split()
    if len(parts) != 5:
        raise Cloud66InputError(field, f"{problem}, got {len(parts)} fields in {value!r:.80}")
    for text, (name, low, high, names) in zip(parts, _CRON_FIELDS, strict=True):
        if not _cron_field_ok(text.lower(), low, high, names):
            raise Cloud66InputError(
                field, f"{problem}; the {name} field {text!r} is not valid ({low}-{high})"
            )
    return " ".join(parts)


def _cron_field_ok(text: str, low: int, high: int, names: tuple[str, ...]) -> bool:
    def number(token: str) -> int | None:
        if token in names:
            return names.index(token) + low
        if token.isdigit() and low <= int(token) <= high:
            return int(token)
        return None

    for item in text.split(","):
        base, _, step = item.partition("/")
        if step and (not step.isdigit() or int(step) < 1):
            return False
        if base == "*":
            continue
        first, dash, last = base.partition("-")
        start, end = number(first), number(last) if dash else None
        if start is None or (dash and (end is None or end < start)):
            return False
    return True


def keep_count(value: object, field: str = "keep_count") -> int:
    return positive_int(value, field, maximum=MAX_KEEP_COUNT)


def group(value: object, field: str = "group") -> int:
    return positive_int(value, field)


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url(value: object, field: str, *, what: str = "URL") -> str:
    """An ``https`` URL, or ``http`` to a loopback host (local testing only)."""
    if not isinstance(value, str) or not value.strip():
        raise Cloud66InputError(field, f"must be an https {what}, got {_describe(value)}")
    parts = urlsplit(value.strip())
    host = parts.hostname
    if not host or parts.scheme not in ("https", "http") or any(c.isspace() for c in value.strip()):
        raise Cloud66InputError(field, f"must be an https {what}, got {redact_invalid_url(value)}")
    if parts.scheme == "http" and not is_loopback_host(host):
        raise Cloud66InputError(
            field, f"must use https (plain http only to 127.0.0.1 or localhost), got {host}"
        )
    if parts.scheme == "https" and _is_private_host(host):
        raise Cloud66InputError(field, f"must point to a public host that Cloud 66 can reach, got {host}")
    return value.strip()


def _is_private_host(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return not address.is_global and not address.is_loopback


def non_empty_str(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Cloud66InputError(field, f"must be a non-empty string, got {_describe(value)}")
    return value.strip()


def newer_than(value: object, field: str = "newer_than") -> datetime | None:
    """A datetime or an ISO 8601 string (templated); ``None``, ``""`` and ``"None"`` mean "not given"."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return None
    try:
        return parse_datetime(value)
    except (TypeError, ValueError):
        raise Cloud66InputError(
            field,
            f"must be a datetime or an ISO 8601 timestamp such as 2026-01-01T00:00:00Z, got {value!r:.80}",
        ) from None


def seconds(value: object, field: str, *, allow_zero: bool = False) -> float:
    """A positive (or with ``allow_zero``, non-negative) number of seconds; numeric strings are
    accepted, as templates render strings."""
    try:
        number = (
            float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
        )
    except ValueError:
        number = None
    if number is None or not (number >= 0 if allow_zero else number > 0) or number == float("inf"):
        kind = "a non-negative" if allow_zero else "a positive"
        raise Cloud66InputError(field, f"must be {kind} number of seconds, got {value!r:.80}")
    return number


def tags(tags: object, field: str = "tags") -> str:
    """S3 object tags as the ``Tagging`` header: at most 10, keys of 1-128 and values of 0-256 characters."""
    if not isinstance(tags, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise Cloud66InputError(field, f"must be a mapping of strings to strings, got {tags!r:.80}")
    if len(tags) > 10 or any(not k or len(k) > 128 or len(v) > 256 for k, v in tags.items()):
        raise Cloud66InputError(field, "allows at most 10 tags, keys of 1-128 and values of 0-256 characters")
    return urlencode(dict(tags))


def aware_datetime(value: object, field: str) -> datetime:
    """A timezone-aware datetime (or ISO 8601 text), in UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise Cloud66InputError(field, f"must be an ISO 8601 date-time, got {value!r:.40}") from None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise Cloud66InputError(field, f"must be a timezone-aware datetime, got {value!r:.40}")
    return value.astimezone(UTC)


def bucket_name(value: object, field: str = "s3_bucket") -> str:
    """An S3 bucket name: 3-63 lowercase letters, digits, '.' or '-'."""
    if not isinstance(value, str) or not _BUCKET.fullmatch(value) or ".." in value:
        raise Cloud66InputError(
            field,
            f"must be an S3 bucket name (3-63 lowercase letters, digits, '.' or '-'), got {value!r:.80}",
        )
    return value


def table_names(value: object, field: str = "excluded_tables") -> str:
    """Table names, as a list or comma-separated, joined with commas."""
    problem = f"must be table names (a list or comma-separated), got {value!r:.80}"
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise Cloud66InputError(field, problem)
    names = [item.strip() for item in items if isinstance(item, str)]
    if len(names) != len(items) or any(not n or any(c.isspace() or ord(c) < 32 for c in n) for n in names):
        raise Cloud66InputError(field, problem)
    return ",".join(names)


def s3_key(key: object, field: str = "s3_key") -> str:
    """An object key inside a bucket: relative, no control characters, no '.' or '..' segments."""
    if isinstance(key, str) and key.startswith("s3://"):
        raise Cloud66InputError(field, "must be a key inside s3_bucket, not an s3:// URI")
    if not isinstance(key, str) or not key or key.startswith("/") or any(ord(c) < 32 for c in key):
        raise Cloud66InputError(field, f"must be a relative object key, got {key!r:.80}")
    if any(part in (".", "..") for part in key.split("/")):
        raise Cloud66InputError(field, f"must not contain '.' or '..' segments, got {key!r:.80}")
    return key

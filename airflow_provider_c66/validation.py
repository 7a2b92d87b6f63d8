"""Checks for user input, run before any request so bad input fails with no side effect.

Every check raises :class:`Cloud66InputError` naming the argument and what is allowed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from airflow_provider_c66.exceptions import Cloud66InputError
from airflow_provider_c66.models import DB_TYPES
from airflow_provider_c66.redaction import redact_invalid_url

_STACK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
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
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        number = int(value)
    if number is None or number < 1 or (maximum is not None and number > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise Cloud66InputError(field, f"must be an integer of at least 1{upper}, got {_describe(value)}")
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

"""Typed records for what the Cloud 66 Backups API returns.

The rest of the package never touches raw JSON: records are parsed here, once, by one parser per
record shape. ``Backup.to_dict()`` writes the API's own shape, so ``Backup.from_dict()`` is that
same parser and an XCom value round-trips exactly.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self, TypeVar

from airflow_provider_c66.exceptions import Cloud66ResponseError
from airflow_provider_c66.redaction import redact_text

DB_TYPES: tuple[str, ...] = ("mysql", "postgresql", "redis", "mongodb")


class _Status(enum.IntEnum):
    """A status code Cloud 66 documents; a value the docs do not name reads as ``UNKNOWN`` (-1)."""

    @classmethod
    def _missing_(cls, value: object) -> Self:
        return cls(-1)


class BackupStatus(_Status):
    """``backup_status``: 0 succeeded, 1 failed. Values the docs do not name read as UNKNOWN."""

    UNKNOWN = -1
    OK = 0
    FAILED = 1

    @property
    def is_terminal(self) -> bool:
        return self in (BackupStatus.OK, BackupStatus.FAILED)


class RestoreStatus(_Status):
    """``restore_status`` as documented by Cloud 66."""

    UNKNOWN = -1
    NOT_RESTORED = 0
    RESTORING = 1
    RESTORED = 2
    FAILED = 3


class VerifyStatus(_Status):
    """``verify_status`` as documented by Cloud 66."""

    UNKNOWN = -1
    NOT_VERIFIED = 0
    VERIFYING = 1
    VERIFIED = 2
    FAILED = 3
    UNABLE_TO_VERIFY = 4


_T = TypeVar("_T")


class _Record:
    """Reads fields of one raw record, turning every surprise into a clear Cloud66ResponseError."""

    def __init__(self, kind: str, raw: object) -> None:
        if not isinstance(raw, Mapping):
            raise Cloud66ResponseError(f"malformed {kind} record: expected a JSON object, got {_kind(raw)}")
        self.kind = kind
        self.raw = raw
        ident = raw.get("id")
        self.label = f"{kind} record id={ident!r}" if isinstance(ident, (int, str)) else f"{kind} record"

    def _fail(self, name: str, problem: str) -> Cloud66ResponseError:
        return Cloud66ResponseError(f"malformed {self.label}: field {name!r} {problem}")

    def _get(self, name: str, convert: Callable[[object], _T], required: bool, default: _T) -> _T:
        value = self.raw.get(name)
        if value is None:
            if required:
                raise self._fail(name, "is missing")
            return default
        try:
            return convert(value)
        except (TypeError, ValueError) as exc:
            raise self._fail(name, f"has an unexpected value {value!r:.80} ({exc})") from None

    def read_int(self, name: str, *, required: bool = False, default: int = 0) -> int:
        return self._get(name, _to_int, required, default)

    def read_opt_int(self, name: str) -> int | None:
        return self._get(name, _to_int, False, None)

    def read_str(self, name: str, *, required: bool = False, default: str = "") -> str:
        return self._get(name, _to_str, required, default)

    def read_opt_str(self, name: str) -> str | None:
        return self._get(name, _to_str, False, None)

    def read_required_str(self, name: str) -> str:
        """A string the record cannot do without (an id): missing or empty is malformed."""
        value = self.read_str(name, required=True)
        if not value:
            raise self._fail(name, "is empty")
        return value

    def read_text(self, name: str) -> str | None:
        """Free text Cloud 66 writes (a result, a reason): it may echo a signed URL, so it is redacted."""
        value = self.read_opt_str(name)
        return None if value is None else redact_text(value)

    def read_datetime(self, name: str, *, required: bool = False) -> datetime | None:
        return self._get(name, parse_datetime, required, None)

    def read_opt_bool(self, name: str) -> bool | None:
        return self._get(name, _to_bool, False, None)


def _kind(value: object) -> str:
    return type(value).__name__


def _to_int(value: object) -> int:
    if isinstance(value, bool):
        raise TypeError("a boolean is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise TypeError(f"expected an integer, got {_kind(value)}")


def _to_str(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise TypeError(f"expected a string, got {_kind(value)}")


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1, "true", "false"):
        return value in (1, "true")
    raise TypeError(f"expected a boolean, got {_kind(value)}")


def parse_datetime(value: object) -> datetime:
    """Parse an ISO 8601 timestamp into an aware UTC datetime (naive input is taken as UTC)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    else:
        raise TypeError(f"expected an ISO 8601 timestamp, got {_kind(value)}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset: a ValueError like any other bad timestamp
        raise ValueError(f"{value!r:.40} is out of the representable range") from None


def format_datetime(value: datetime) -> str:
    """The API's own timestamp form: ``2014-09-01T19:00:33Z`` (microseconds kept when present)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Backup:
    """One managed database backup of a stack.

    ``backup_date`` orders backups (newest first); ``status`` says whether it succeeded.
    """

    id: int
    db_type: str
    database_name: str
    backup_date: datetime
    status: BackupStatus
    result: str = ""
    server_uid: str = ""
    file_base: str = ""
    storage_path: str = ""
    skip_tables: str = ""
    backup_size: int = 0
    restore_status: RestoreStatus = RestoreStatus.NOT_RESTORED
    restore_result: str | None = None
    verify_status: VerifyStatus = VerifyStatus.NOT_VERIFIED
    verify_result: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    logical_backup: bool | None = None
    group: int | None = None

    @property
    def succeeded(self) -> bool:
        return self.status is BackupStatus.OK

    @property
    def failed(self) -> bool:
        return self.status is BackupStatus.FAILED

    @classmethod
    def from_api(cls, raw: object) -> Backup:
        """Parse one record as the API returns it; unknown fields are ignored."""
        rec = _Record("backup", raw)
        backup_id = rec.read_int("id", required=True)
        if backup_id <= 0:
            raise rec._fail("id", f"must be a positive integer, got {backup_id}")
        backup_date = rec.read_datetime("backup_date_iso") or rec.read_datetime("created_at_iso")
        if backup_date is None:
            raise rec._fail("backup_date_iso", "is missing (and so is created_at_iso)")
        return cls(
            id=backup_id,
            db_type=rec.read_str("db_type", required=True),
            database_name=rec.read_str("database_name"),
            backup_date=backup_date,
            status=BackupStatus(rec.read_int("backup_status", required=True)),
            result=rec.read_text("backup_result") or "",
            server_uid=rec.read_str("server_uid"),
            file_base=rec.read_str("file_base"),
            storage_path=rec.read_str("storage_path"),
            skip_tables=rec.read_str("skip_tables"),
            backup_size=rec.read_int("backup_size"),
            restore_status=RestoreStatus(rec.read_int("restore_status")),
            restore_result=rec.read_text("restore_result"),
            verify_status=VerifyStatus(rec.read_int("verify_status")),
            verify_result=rec.read_text("verify_result"),
            created_at=rec.read_datetime("created_at_iso"),
            updated_at=rec.read_datetime("updated_at_iso"),
            logical_backup=rec.read_opt_bool("logical_backup"),
            group=rec.read_opt_int("group"),
        )

    from_dict = from_api

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict in the API's own shape (for XCom); ``from_dict`` reads it back."""
        return {
            "id": self.id,
            "server_uid": self.server_uid,
            "db_type": self.db_type,
            "database_name": self.database_name,
            "file_base": self.file_base,
            "backup_date_iso": format_datetime(self.backup_date),
            "backup_status": int(self.status),
            "backup_result": self.result,
            "restore_status": int(self.restore_status),
            "restore_result": self.restore_result,
            "verify_status": int(self.verify_status),
            "verify_result": self.verify_result,
            "created_at_iso": format_datetime(self.created_at) if self.created_at else None,
            "updated_at_iso": format_datetime(self.updated_at) if self.updated_at else None,
            "storage_path": self.storage_path,
            "skip_tables": self.skip_tables,
            "backup_size": self.backup_size,
            "logical_backup": self.logical_backup,
            "group": self.group,
        }


# Split parts carry a suffix as `split` makes them: id "tar-aa", name "db.tar-aa" or "db.tar.aa".
_ID_PART = re.compile(r"-([a-z]{2,4})$")
_NAME_PART = re.compile(r"(\.tar(?:\.gz)?)[.-]([a-z]{2,4})$")


@dataclass(frozen=True)
class Stack:
    """A stack the token can see (``GET /stacks``): what discovery filters on."""

    uid: str
    name: str
    environment: str = ""

    @classmethod
    def from_api(cls, raw: object) -> Stack:
        rec = _Record("stack", raw)
        uid = rec.read_required_str("uid")
        return cls(uid=uid, name=rec.read_str("name") or uid, environment=rec.read_str("environment"))


@dataclass(frozen=True)
class BackupFile:
    """One file of a backup: the whole archive (``tar``) or one split part (``tar-aa``, ``tar-ab`` ...)."""

    id: str
    name: str
    part_suffix: str = field(default="", compare=False)

    @classmethod
    def from_api(cls, raw: object) -> BackupFile:
        rec = _Record("backup file", raw)
        file_id = rec.read_required_str("id")
        name = rec.read_str("name") or file_id
        match = _ID_PART.search(file_id) or _NAME_PART.search(name)
        suffix = match.group(match.lastindex or 1) if match else ""
        return cls(id=file_id, name=name, part_suffix=suffix)

    @property
    def sort_key(self) -> tuple[int, str, str]:
        """Orders parts as their bytes concatenate: ``aa`` < ``ab`` < ... < ``zz`` < ``aaa``."""
        return (len(self.part_suffix), self.part_suffix, self.id)

    @property
    def archive_name(self) -> str:
        """The whole archive's name, without a split suffix: ``db.tar-aa`` gives ``db.tar``."""
        if not self.part_suffix:
            return self.name
        match = _NAME_PART.search(self.name)
        if match:
            return self.name[: match.start()] + match.group(1)
        for sep in ("-", "."):
            tail = sep + self.part_suffix
            if self.name.endswith(tail):
                return self.name[: -len(tail)]
        return self.name


def parse_records(kind: Callable[[object], _T], payload: object, what: str) -> list[_T]:
    """Parse the ``response`` array of a list call into records."""
    if not isinstance(payload, list):
        raise Cloud66ResponseError(f"malformed {what} list: expected a JSON array, got {_kind(payload)}")
    return [kind(item) for item in payload]

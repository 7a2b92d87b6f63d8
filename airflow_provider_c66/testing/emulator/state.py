"""The emulator's state: its address, tokens, stacks, backups and their files, queued backup tasks and the
request log, with the helpers that read and change them.

Everything here is guarded by the emulator's one lock (an ``RLock``): the helpers of :class:`_State`
are called with it held. A queued backup task becomes a backup record once its delay has passed, the
next time the state is read (:meth:`_State._materialize`).
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from airflow_provider_c66.testing.emulator.replies import _NotFound

API_PREFIX = "/api/3"
FILE_PREFIX = "/c66-backups/"
DB_TYPES = ("mysql", "postgresql", "redis", "mongodb")

_DUMP_TOOLS = {"mysql": "mysqldump", "postgresql": "pg_dump", "redis": "redis-cli", "mongodb": "mongodump"}
_SUFFIX_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_PROTECTED = ("public", "admin")

RequestKind = Literal["api", "file"]


@dataclass(frozen=True, repr=False)
class RecordedRequest:
    """One request the emulator received, with the status it answered.

    Header names are normalised to ``Title-Case`` (``Authorization``, ``X-Account``). The repr
    redacts credentials so a failing assertion never prints a token or a URL signature.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any | None
    status: int
    kind: RequestKind
    body: bytes = b""
    time: float = 0.0
    budget_window: float | None = None
    """For an API request the rate budget counted (served or throttled): the start (epoch seconds) of
    the token's budget window it was counted in; None for file requests and uncounted answers."""

    def __repr__(self) -> str:
        headers = {k: ("<redacted>" if k == "Authorization" else v) for k, v in self.headers.items()}
        query = {k: ("<redacted>" if k == "Signature" else v) for k, v in self.query.items()}
        return (
            f"RecordedRequest(method={self.method!r}, path={self.path!r}, query={query!r}, "
            f"headers={headers!r}, json={self.json!r}, status={self.status!r}, kind={self.kind!r})"
        )


@dataclass
class _Stack:
    uid: str
    name: str
    databases: list[tuple[str, str]]
    created: datetime


@dataclass
class _Backup:
    id: int
    stack_uid: str
    db_type: str
    database_name: str
    size: int
    seed: int
    backup_date: datetime
    status: int
    result: str
    group: int
    gzip: bool
    skip_tables: str
    has_files: bool
    extra_fields: dict[str, Any]
    updated: datetime | None = None  # when the record last changed; None: its backup date
    reported_size: int | None = None  # what backup_size says; None: the files' current size

    @property
    def base_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9_]", "_", self.database_name) or "db"

    @property
    def storage_path(self) -> str:
        account = hashlib.md5(b"emulated-account", usedforsecurity=False).hexdigest()
        stack = hashlib.md5(self.stack_uid.encode(), usedforsecurity=False).hexdigest()
        started = (self.backup_date - timedelta(seconds=2)).strftime("%Y.%m.%d.%H.%M.%S")
        return f"{account}/backups/{stack}/{self.db_type}/{self.base_name}_{self.id}/{started}"


@dataclass(frozen=True)
class _File:
    id: str
    name: str
    offset: int
    length: int


@dataclass
class _Pending:
    due: float
    stack_uid: str
    db_type: str
    database_name: str
    group: int | None
    outcome: str
    size: int
    gzip: bool
    skip_tables: str


@dataclass
class _Growth:
    """A backup still being written: its files grow by ``by`` bytes after ``after`` more downloads."""

    stack_uid: str
    backup_id: int
    by: int
    after: int


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc_seconds(moment: datetime | None) -> datetime:
    if moment is None:
        moment = datetime.now(UTC)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def _suffix(index: int) -> str:
    if index >= len(_SUFFIX_LETTERS) ** 2:
        raise ValueError("more than 676 parts: split's two-letter suffixes are exhausted")
    return _SUFFIX_LETTERS[index // 26] + _SUFFIX_LETTERS[index % 26]


class _State:
    """The state every part of :class:`.Cloud66Emulator` shares; its constructor sets these attributes."""

    host: str
    split_threshold: int
    split_size: int
    record_group: bool
    _port: int | None
    _lock: threading.RLock
    _tokens: dict[str, tuple[str, ...]]
    _stacks: dict[str, _Stack]
    _backups: dict[str, dict[int, _Backup]]
    _objects: dict[str, tuple[str, int]]  # storage_path -> (stack uid, backup id)
    _pending: list[_Pending]
    _log: list[RecordedRequest]
    _next_id: int
    _growths: list[_Growth]

    # -- where it listens --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (kept after :meth:`.Cloud66Emulator.stop`, so URLs built from it simply stop
        answering)."""
        if self._port is None:
            raise RuntimeError("emulator not started")
        return self._port

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``: where signed file URLs point."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin + API_PREFIX

    # -- state helpers (call with the lock held) ---------------------------------------------------

    def _stack(self, uid: str) -> _Stack:
        stack = self._stacks.get(uid)
        if stack is None:
            raise _NotFound(f"Stack '{uid}' not found")
        return stack

    def _backup(self, stack_uid: str, backup_id: int) -> _Backup:
        self._materialize()
        self._stack(stack_uid)
        backup = self._backups[stack_uid].get(backup_id)
        if backup is None:
            raise _NotFound(f"Backup '{backup_id}' not found in stack '{stack_uid}'")
        return backup

    def _files(self, backup: _Backup) -> list[_File]:
        if not backup.has_files:
            return []
        base = backup.base_name
        if backup.size <= self.split_threshold:
            return [_File("tar", f"{base}.tar", 0, backup.size)]
        count = math.ceil(backup.size / self.split_size)
        parts = []
        for index in range(count):
            offset = index * self.split_size
            sfx = _suffix(index)
            parts.append(
                _File(f"tar-{sfx}", f"{base}.tar-{sfx}", offset, min(self.split_size, backup.size - offset))
            )
        return parts

    def _file(self, backup: _Backup, file_id: str) -> _File:
        for part in self._files(backup):
            if part.id == file_id:
                return part
        raise _NotFound(f"File '{file_id}' not found in backup '{backup.id}'")

    def _file_by_id(self, stack_uid: str, backup_id: int, file_id: str) -> _File:
        return self._file(self._backup(stack_uid, backup_id), file_id)

    def _grow(self, stack_uid: str, backup_id: int, by: int) -> None:
        backup = self._backups[stack_uid][backup_id]
        backup.size += by
        backup.has_files = True
        backup.updated = _utc_seconds(None)

    def _downloaded(self, backup: _Backup) -> None:
        """Count one answered download of ``backup`` towards its pending growths."""
        for growth in list(self._growths):
            if (growth.stack_uid, growth.backup_id) == (backup.stack_uid, backup.id):
                growth.after -= 1
                if growth.after <= 0:
                    self._growths.remove(growth)
                    self._grow(backup.stack_uid, backup.id, growth.by)

    def _sorted_backups(self, stack_uid: str) -> list[_Backup]:
        return sorted(self._backups[stack_uid].values(), key=lambda b: (b.backup_date, b.id), reverse=True)

    def _new_backup(self, stack_uid: str, *, seed: int | None, **fields: Any) -> _Backup:
        backup_id = self._next_id
        self._next_id += 1
        backup = _Backup(
            id=backup_id, stack_uid=stack_uid, seed=backup_id if seed is None else seed, **fields
        )
        self._backups[stack_uid][backup_id] = backup
        self._objects[backup.storage_path] = (stack_uid, backup_id)
        return backup

    def _materialize(self) -> None:
        """Turn queued backup tasks whose delay has passed into backup records."""
        now = time.time()
        due = sorted((p for p in self._pending if p.due <= now), key=lambda p: p.due)
        if not due:
            return
        self._pending = [p for p in self._pending if p.due > now]
        for task in due:
            backups = self._backups[task.stack_uid].values()
            # A real run takes minutes, so its date is always past every earlier backup's second.
            date = _utc_seconds(datetime.fromtimestamp(task.due, UTC))
            latest = max((b.backup_date for b in backups), default=None)
            if latest is not None and date <= latest:
                date = latest + timedelta(seconds=1)
            group = task.group
            if group is None:
                same = [
                    b for b in backups if (b.db_type, b.database_name) == (task.db_type, task.database_name)
                ]
                if same:
                    group = max(same, key=lambda b: (b.backup_date, b.id)).group
                else:
                    group = max((b.group for b in backups), default=0) + 1
            failed = task.outcome == "failed"
            tool = _DUMP_TOOLS.get(task.db_type, "backup")
            self._new_backup(
                task.stack_uid,
                db_type=task.db_type,
                database_name=task.database_name,
                size=0 if failed else task.size,
                seed=None,
                backup_date=date,
                status=1 if failed else 0,
                result=f"Backup failed: {tool} exited with status 2 (emulated failure)" if failed else "",
                group=group,
                gzip=task.gzip,
                has_files=not failed,
                skip_tables=task.skip_tables,
                extra_fields={},
            )

    def _record(self, backup: _Backup) -> dict[str, Any]:
        date = _iso(backup.backup_date)
        record: dict[str, Any] = {
            "id": backup.id,
            "server_uid": hashlib.md5(
                f"{backup.stack_uid}:{backup.db_type}".encode(), usedforsecurity=False
            ).hexdigest(),
            "db_type": backup.db_type,
            "database_name": backup.database_name,
            "file_base": "",
            "backup_date_iso": date,
            "backup_status": backup.status,
            "backup_result": backup.result,
            "restore_status": 0,
            "restore_result": None,
            "created_at_iso": date,
            "updated_at_iso": _iso(backup.updated) if backup.updated else date,
            "verify_status": 0,
            "verify_result": None,
            "storage_path": backup.storage_path,
            "skip_tables": backup.skip_tables,
            "backup_size": backup.size if backup.reported_size is None else backup.reported_size,
            "logical_backup": backup.db_type in ("mysql", "postgresql"),
        }
        if self.record_group:
            record["group"] = backup.group
        record.update(backup.extra_fields)
        return record

    def _stack_record(self, stack: _Stack) -> dict[str, Any]:
        return {
            "uid": stack.uid,
            "name": stack.name,
            "environment": "production",
            "status": 1,
            "health": 3,
            "account_id": 1,
            "created_at_iso": _iso(stack.created),
            "updated_at_iso": _iso(stack.created),
        }

    def _log_request(self, entry: RecordedRequest) -> None:
        with self._lock:
            self._log.append(entry)

""":class:`Cloud66Emulator`: the parts combined, with its constructor, lifecycle, setup and inspection."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import datetime
from types import TracebackType
from typing import Any

from airflow_provider_c66.testing import content
from airflow_provider_c66.testing.emulator.api import _Api
from airflow_provider_c66.testing.emulator.budget import _Budget
from airflow_provider_c66.testing.emulator.faults import _Faults
from airflow_provider_c66.testing.emulator.files import _Files
from airflow_provider_c66.testing.emulator.server import _Handler, _Server
from airflow_provider_c66.testing.emulator.state import (
    _PROTECTED,
    RecordedRequest,
    _Growth,
    _Stack,
    _utc_seconds,
)


class Cloud66Emulator(_Api, _Budget, _Files, _Faults):
    """A live Cloud 66 API (``/api/3``) and S3 signed-URL file server on 127.0.0.1.

    State (stacks, backups, tokens, injected faults) lives in memory behind one lock. File content is
    generated on the fly from a seed (see :mod:`.content`), so multi-GiB backups cost no memory.
    """

    def __init__(
        self,
        token: str = "test-token",  # noqa: S107 - a fake credential for a local fake server
        *,
        hourly_budget: int = 3000,
        budget_window: float = 3600.0,
        url_ttl: float = 300.0,
        split_threshold: int = 512 * 2**20,
        split_size: int = 256 * 2**20,
        backup_delay: float = 0.5,
        backup_outcome: str = "ok",
        bandwidth_per_connection: float | None = None,
        new_backup_size: int = 1024,
        record_group: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if split_size <= 0 or split_threshold < 0:
            raise ValueError("split_size must be positive and split_threshold non-negative")
        if backup_outcome not in ("ok", "failed"):
            raise ValueError("backup_outcome must be 'ok' or 'failed'")
        self.token = token
        self.hourly_budget = hourly_budget
        self.budget_window = budget_window
        self.url_ttl = url_ttl
        self.split_threshold = split_threshold
        self.split_size = split_size
        self.backup_delay = backup_delay
        self.backup_outcome = backup_outcome
        self.bandwidth_per_connection = bandwidth_per_connection
        self.new_backup_size = new_backup_size
        # The documented records carry no "group" field (the API filters on the parameter itself);
        # True adds one, as an API version that did would.
        self.record_group = record_group
        self.host = host
        self._requested_port = port
        self._lock = threading.RLock()
        self._tokens = {token: _PROTECTED}
        self._windows = {}
        self._stacks = {}
        self._backups = {}
        self._objects = {}
        self._pending = []
        self._faults = []
        self._log = []
        self._next_id = 1
        self._secret = os.urandom(20)
        self._old_secrets = []
        self._growths = []
        self._digests: dict[tuple[int, int], str] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._port = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Cloud66Emulator:
        """Bind an ephemeral port and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._stopping.clear()
        server = _Server((self.host, self._requested_port), _Handler, self)
        self._server = server
        self._port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="cloud66-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open keep-alive connections and close the listening socket."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Cloud66Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- setup -------------------------------------------------------------------------------------

    def add_token(self, token: str, scopes: tuple[str, ...]) -> None:
        with self._lock:
            self._tokens[token] = tuple(scopes)

    def add_stack(
        self, uid: str, name: str | None = None, databases: list[tuple[str, str]] | None = None
    ) -> None:
        """Register a stack; ``databases`` are the ``(db_type, database_name)`` pairs it backs up."""
        with self._lock:
            if uid in self._stacks:
                raise ValueError(f"stack {uid!r} already exists")
            dbs = list(databases) if databases is not None else [("mysql", "app_db")]
            self._stacks[uid] = _Stack(uid, name or f"Stack {uid}", dbs, _utc_seconds(None))
            self._backups[uid] = {}

    def add_backup(
        self,
        stack_uid: str,
        *,
        db_type: str = "mysql",
        database_name: str = "app_db",
        size: int = 1024,
        seed: int | None = None,
        backup_date: datetime | None = None,
        status: int = 0,
        result: str = "",
        group: int = 1,
        gzip: bool = False,
        extra_fields: dict[str, Any] | None = None,
        has_files: bool = True,
        skip_tables: str = "",
        updated_at: datetime | None = None,
        backup_size: int | None = None,
    ) -> int:
        """Add a finished backup and return its id; the default seed is the id, so backups differ.

        :param updated_at: the record's ``updated_at_iso`` (default: its backup date).
        :param backup_size: what the record's ``backup_size`` says (default: the files' size).
        """
        if size < 0:
            raise ValueError("size must be non-negative")
        with self._lock:
            self._materialize()
            self._stack(stack_uid)
            backup = self._new_backup(
                stack_uid,
                db_type=db_type,
                database_name=database_name,
                size=size,
                seed=seed,
                backup_date=_utc_seconds(backup_date),
                status=status,
                result=result,
                group=group,
                gzip=gzip,
                has_files=has_files,
                skip_tables=skip_tables,
                extra_fields=dict(extra_fields or {}),
                updated=_utc_seconds(updated_at) if updated_at is not None else None,
                reported_size=backup_size,
            )
            return backup.id

    def grow_backup(self, stack_uid: str, backup_id: int, by: int, *, after_downloads: int = 0) -> None:
        """Write ``by`` more bytes to a backup, as a run that is still uploading would: now, or once
        ``after_downloads`` more file downloads of it have been answered. The bytes already there stay
        the same; a split backup gets a longer last part or a new one, and ``updated_at`` moves on.
        """
        if by <= 0 or after_downloads < 0:
            raise ValueError("by must be positive and after_downloads non-negative")
        with self._lock:
            self._backup(stack_uid, backup_id)
            if after_downloads == 0:
                self._grow(stack_uid, backup_id, by)
            else:
                self._growths.append(_Growth(stack_uid, backup_id, by, after_downloads))

    # -- inspection --------------------------------------------------------------------------------

    def backups(self, stack_uid: str) -> list[dict[str, Any]]:
        """Every backup record of the stack as the API returns them (newest first, unpaginated)."""
        with self._lock:
            self._materialize()
            self._stack(stack_uid)
            return [self._record(b) for b in self._sorted_backups(stack_uid)]

    def group_of(self, stack_uid: str, backup_id: int) -> int:
        """The backup group a backup belongs to (the documented records do not say)."""
        with self._lock:
            return self._backup(stack_uid, backup_id).group

    def file_ids(self, stack_uid: str, backup_id: int) -> list[str]:
        """File ids in archive order (the API lists them scrambled)."""
        with self._lock:
            return [f.id for f in self._files(self._backup(stack_uid, backup_id))]

    def file_names(self, stack_uid: str, backup_id: int) -> list[str]:
        with self._lock:
            return [f.name for f in self._files(self._backup(stack_uid, backup_id))]

    def file_size(self, stack_uid: str, backup_id: int, file_id: str) -> int:
        with self._lock:
            return self._file(self._backup(stack_uid, backup_id), file_id).length

    def file_bytes(self, stack_uid: str, backup_id: int, file_id: str) -> bytes:
        """One file's whole content; refuses files over 256 MiB (use :meth:`iter_archive`)."""
        with self._lock:
            backup = self._backup(stack_uid, backup_id)
            part = self._file(backup, file_id)
        if part.length > 256 * 2**20:
            raise ValueError("file too large to materialise; stream it with iter_archive()")
        return content.content_range(backup.seed, part.offset, part.length)

    def archive_size(self, stack_uid: str, backup_id: int) -> int:
        with self._lock:
            backup = self._backup(stack_uid, backup_id)
            return backup.size if backup.has_files else 0

    def archive_sha256(self, stack_uid: str, backup_id: int) -> str:
        """Hex SHA-256 of all parts concatenated in suffix order, computed by streaming (cached)."""
        with self._lock:
            backup = self._backup(stack_uid, backup_id)
        size = backup.size if backup.has_files else 0
        key = (backup.seed, size)
        if key not in self._digests:
            self._digests[key] = content.sha256_hex(backup.seed, size)
        return self._digests[key]

    def iter_archive(self, stack_uid: str, backup_id: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The whole archive in ``chunk``-sized pieces (the last one shorter)."""
        with self._lock:
            backup = self._backup(stack_uid, backup_id)
        size = backup.size if backup.has_files else 0
        pending = bytearray()
        for piece in content.iter_content(backup.seed, 0, size):
            pending += piece
            while len(pending) >= chunk:
                yield bytes(pending[:chunk])
                del pending[:chunk]
        if pending:
            yield bytes(pending)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order of their answers (a copy)."""
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

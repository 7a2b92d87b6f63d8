"""A Cloud 66 backup served by the package's emulator, as the copy engine's tests and others use it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests

from airflow_provider_c66.testing import Cloud66Emulator, RecordedRequest
from airflow_provider_c66.transfers.copy import CopyObserver, CopySettings, Source
from tests.helpers import read

MiB = 1 << 20
STACK = "stack-1"
TOKEN = "t"
KEY = "backups/stack-1/app_db.tar"  # where the engine's tests copy an archive to
FAST = CopySettings(  # small parts, few threads, quick retries: many parts from small archives, fast
    part_size=5 * MiB,
    max_concurrency=3,
    retries=4,
    backoff_base=0.01,
    backoff_max=0.05,
    connect_timeout=2,
    read_timeout=5,
    progress_interval=0.05,
)


def read_object(client: Any, bucket: str, key: str = KEY) -> bytes:
    """The bytes of ``key`` (the engine tests' archive by default)."""
    return read(client, bucket, key)


@dataclass
class Archive:
    """One emulated backup and the URL providers the engine gets for it (fetching over the API)."""

    emu: Cloud66Emulator
    backup_id: int
    issued: list[str] = field(default_factory=list)

    @property
    def file_ids(self) -> list[str]:
        return self.emu.file_ids(STACK, self.backup_id)

    def sources(self) -> list[Source]:
        names = self.emu.file_names(STACK, self.backup_id)
        return [Source(fid, name, self.provider(fid)) for fid, name in zip(self.file_ids, names, strict=True)]

    def provider(self, file_id: str, backup_id: int | None = None) -> Callable[[], str]:
        def fetch() -> str:
            bid = self.backup_id if backup_id is None else backup_id
            url = f"{self.emu.base_url}/stacks/{STACK}/backups/{bid}/files/{file_id}.json"
            answer = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
            answer.raise_for_status()
            signed = str(answer.json()["response"]["public_url"]).replace("%25", "%")
            self.issued.append(signed)
            return signed

        return fetch

    def content(self) -> bytes:
        return b"".join(self.emu.iter_archive(STACK, self.backup_id))

    def sha256(self) -> str:
        return self.emu.archive_sha256(STACK, self.backup_id)

    def file_requests(self) -> list[RecordedRequest]:
        return [r for r in self.emu.requests if r.kind == "file"]

    def data_requests(self) -> list[RecordedRequest]:
        """File GETs other than the size probes (``bytes=0-0``)."""
        return [r for r in self.file_requests() if r.headers.get("Range") != "bytes=0-0"]

    def url_fetches(self, file_id: str) -> int:
        suffix = f"/files/{file_id}.json"
        return sum(1 for r in self.emu.requests if r.kind == "api" and r.path.endswith(suffix))

    def signatures(self) -> set[str]:
        values = {parse_qs(urlsplit(url).query)["Signature"][0] for url in self.issued}
        return values | {unquote(v) for v in values} | {v.replace("%", "%25") for v in values}


@pytest.fixture
def archive_factory() -> Iterator[Callable[..., Archive]]:
    with ExitStack() as stack:

        def make(size: int, **settings: Any) -> Archive:
            settings.setdefault("split_threshold", 64 * MiB)
            emu = stack.enter_context(Cloud66Emulator(token=TOKEN, **settings))
            emu.add_stack(STACK)
            return Archive(emu, emu.add_backup(STACK, size=size))

        yield make


class PartWatch(CopyObserver):
    """A test's view of a copy through the engine's public observer interface.

    Counts parts started (downloads begun), parts held in memory (started, not yet released) and its
    peak, bytes sent to S3, the order of events; runs an action when the n-th part starts: after every
    size probe (and, for a multipart copy, after CreateMultipartUpload), the place for a fault meant
    for the data path.
    """

    def __init__(self) -> None:
        self.at_start: dict[int, Callable[[], None]] = {}
        self.started = self.held = self.peak = self.sent = self.reused = 0
        self.events: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def on_start(self, n: int, action: Callable[[], None]) -> None:
        self.at_start[n] = action

    def part_started(self, number: int, size: int) -> None:
        with self._lock:
            self.started += 1
            self.held += 1
            self.peak = max(self.peak, self.held)
            self.events.append(("started", number))
            action = self.at_start.pop(self.started, None)
        if action is not None:
            action()

    def part_read(self, number: int) -> None:
        with self._lock:
            self.events.append(("read", number))

    def part_uploaded(self, number: int, size: int, reused: bool) -> None:
        with self._lock:
            self.events.append(("uploaded", number))
            if reused:
                self.reused += size
            else:
                self.sent += size

    def part_released(self, number: int) -> None:
        with self._lock:
            self.held -= 1
            self.events.append(("released", number))


@pytest.fixture
def watch() -> PartWatch:
    return PartWatch()

"""The Cloud 66 emulator for the deployment test, in its own process, with a state file and a request log.

    python deploy/emulator_server.py --state STATE.json --requests REQUESTS.json

Serves 5 stacks x 4 database types = 20 (stack, db_type) pairs. Each pair starts with one successful
backup three days old, which the archiving DAG's sensors must pass over, so they defer. On SIGUSR1 a
fresh successful backup is added to every pair (small sizes; every fifth one split into parts) and
``released`` is written to the state file with each backup's id, size, files and SHA-256. On SIGTERM
or SIGINT every request received is written to the request log (no tokens, no URL signatures) and the
emulator stops. The state file is replaced atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow_provider_c66.testing import Cloud66Emulator

TOKEN = "deployment-test-token"  # noqa: S105 - a fake credential for a local fake server
STACKS = [f"deploy-stack-{n}" for n in range(1, 6)]
DB_TYPES = ["mysql", "postgresql", "redis", "mongodb"]
KiB, MiB = 1024, 1024 * 1024
SPLIT_THRESHOLD = 1 * MiB  # backups larger than this are served as parts of SPLIT_SIZE (tar-aa, tar-ab, ...)
SPLIT_SIZE = 512 * KiB


def pairs() -> list[tuple[str, str]]:
    return [(stack, db_type) for stack in STACKS for db_type in DB_TYPES]


def fresh_size(index: int) -> int:
    """Small and all different; every fifth pair gets 2 MiB and a bit, served as 5 parts."""
    return 2 * MiB + 12345 + index if index % 5 == 0 else 40_000 + index * 7919


def write_json(path: Path, document: Any) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=1))
    os.replace(partial, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--requests", type=Path, required=True)
    args = parser.parse_args()

    release, done = threading.Event(), threading.Event()
    signal.signal(signal.SIGUSR1, lambda signum, frame: release.set())
    signal.signal(signal.SIGTERM, lambda signum, frame: done.set())
    signal.signal(signal.SIGINT, lambda signum, frame: done.set())

    emu = Cloud66Emulator(TOKEN, split_threshold=SPLIT_THRESHOLD, split_size=SPLIT_SIZE)
    emu.start()
    try:
        old = datetime.now(UTC) - timedelta(days=3)
        for stack in STACKS:
            emu.add_stack(stack, databases=[(db_type, f"{db_type}_db") for db_type in DB_TYPES])
            for db_type in DB_TYPES:
                emu.add_backup(
                    stack, db_type=db_type, database_name=f"{db_type}_db", size=4096, backup_date=old
                )
        state: dict[str, Any] = {
            "base_url": emu.base_url,
            "token": TOKEN,
            "targets": [{"stack_id": stack, "db_type": db_type} for stack, db_type in pairs()],
            "released": None,
            "released_at": None,
        }
        write_json(args.state, state)
        while not done.is_set():
            if release.is_set() and state["released"] is None:
                state["released_at"] = time.time()
                state["released"] = [
                    add_fresh_backup(emu, index, *pair) for index, pair in enumerate(pairs())
                ]
                write_json(args.state, state)
            time.sleep(0.1)
    finally:
        log = [
            {
                "time": r.time,
                "kind": r.kind,
                "method": r.method,
                "path": r.path,
                "query": {k: v for k, v in r.query.items() if k not in ("Signature", "AWSAccessKeyId")},
                "status": r.status,
                "user_agent": r.headers.get("User-Agent", ""),
            }
            for r in emu.requests
        ]
        emu.stop()
        write_json(args.requests, log)
    return 0


def add_fresh_backup(emu: Cloud66Emulator, index: int, stack: str, db_type: str) -> dict[str, Any]:
    backup_id = emu.add_backup(
        stack,
        db_type=db_type,
        database_name=f"{db_type}_db",
        size=fresh_size(index),
        backup_date=datetime.now(UTC),
    )
    return {
        "stack_id": stack,
        "db_type": db_type,
        "backup_id": backup_id,
        "size": emu.archive_size(stack, backup_id),
        "files": emu.file_names(stack, backup_id),
        "sha256": emu.archive_sha256(stack, backup_id),
    }


if __name__ == "__main__":
    sys.exit(main())

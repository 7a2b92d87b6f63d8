"""The Cloud 66 emulator for the deployment test, in its own process, with a state file and a request log.

    python deploy/emulator_server.py --state STATE.json --requests REQUESTS.json
        [--stacks 5] [--types-per-stack 4] [--hourly-budget 3000] [--budget-window 3600]

Serves N stacks x K database types (by default 5 x 4 = 20 (stack, db_type) pairs). Each pair starts
with one successful backup three days old, which the archiving DAG's sensors must pass over, so they
defer. On SIGUSR1 a fresh successful backup is added to every pair (small sizes; every fifth one split
into parts) and ``released`` is written to the state file with each backup's id, size, files, file
paths and SHA-256. The rate budget (requests per token per window, ``503 throttled`` past it) can be
scaled down with ``--hourly-budget`` and ``--budget-window``. On SIGTERM or SIGINT the request log is
written and the emulator stops: every request received (no tokens, no URL signatures; a token's
fingerprint and the file requests' ``Range``), and for every authenticated API request the budget
window the emulator counted it in. The state file is replaced atomically, so a reader never sees
half of it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow_provider_c66.testing import Cloud66Emulator

TOKEN = "deployment-test-token"  # noqa: S105 - a fake credential for a local fake server
DB_TYPES = ["mysql", "postgresql", "redis", "mongodb"]
KiB, MiB = 1024, 1024 * 1024
SPLIT_THRESHOLD = 1 * MiB  # backups larger than this are served as parts of SPLIT_SIZE (tar-aa, tar-ab, ...)
SPLIT_SIZE = 512 * KiB


def stack_ids(stacks: int) -> list[str]:
    return [f"deploy-stack-{n}" for n in range(1, stacks + 1)]


def pairs(stacks: int, types_per_stack: int) -> list[tuple[str, str]]:
    return [(stack, db_type) for stack in stack_ids(stacks) for db_type in DB_TYPES[:types_per_stack]]


def fresh_size(index: int) -> int:
    """Small and all different; every fifth pair gets 2 MiB and a bit, served as 5 parts; the others
    40 kB to 190 kB (the sizes repeat every 20 pairs, each still differing by its index)."""
    return 2 * MiB + 12345 + index if index % 5 == 0 else 40_000 + (index % 20) * 7919 + index // 20


def fingerprint(token: str) -> str:
    """A token's short fingerprint: requests are counted per token without the log holding one."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def budget_windows(emu: Cloud66Emulator) -> list[dict[str, Any]]:
    """For every API request the emulator's budget counted, the window it was counted in (the
    window's start, as the emulator keeps it: ``RecordedRequest.budget_window``), so that the served
    requests of each window can be counted from the log."""
    return [
        {
            "time": r.time,
            "token": fingerprint(r.headers.get("Authorization", "").partition(" ")[2].strip()),
            "path": r.path,
            "status": r.status,
            "window_start": r.budget_window,
        }
        for r in emu.requests
        if r.kind == "api" and r.budget_window is not None
    ]


def write_json(path: Path, document: Any) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=1))
    os.replace(partial, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--stacks", type=int, default=5)
    parser.add_argument("--types-per-stack", type=int, default=4, choices=range(1, len(DB_TYPES) + 1))
    parser.add_argument("--hourly-budget", type=int, default=3000, help="API requests per token per window")
    parser.add_argument("--budget-window", type=float, default=3600.0, help="the budget's window, seconds")
    args = parser.parse_args()
    stacks, targets = stack_ids(args.stacks), pairs(args.stacks, args.types_per_stack)

    release, done = threading.Event(), threading.Event()
    signal.signal(signal.SIGUSR1, lambda signum, frame: release.set())
    signal.signal(signal.SIGTERM, lambda signum, frame: done.set())
    signal.signal(signal.SIGINT, lambda signum, frame: done.set())

    emu = Cloud66Emulator(
        TOKEN,
        split_threshold=SPLIT_THRESHOLD,
        split_size=SPLIT_SIZE,
        hourly_budget=args.hourly_budget,
        budget_window=args.budget_window,
    )
    emu.start()
    try:
        old = datetime.now(UTC) - timedelta(days=3)
        db_types = DB_TYPES[: args.types_per_stack]
        for stack in stacks:
            emu.add_stack(stack, databases=[(db_type, f"{db_type}_db") for db_type in db_types])
            for db_type in db_types:
                emu.add_backup(
                    stack, db_type=db_type, database_name=f"{db_type}_db", size=4096, backup_date=old
                )
        state: dict[str, Any] = {
            "base_url": emu.base_url,
            "token": TOKEN,
            "targets": [{"stack_id": stack, "db_type": db_type} for stack, db_type in targets],
            "hourly_budget": args.hourly_budget,
            "budget_window": args.budget_window,
            "token_fingerprint": fingerprint(TOKEN),
            "released": None,
            "released_at": None,
        }
        write_json(args.state, state)
        while not done.is_set():
            if release.is_set() and state["released"] is None:
                state["released_at"] = time.time()
                state["released"] = [
                    add_fresh_backup(emu, index, *pair) for index, pair in enumerate(targets)
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
                "token": fingerprint(r.headers.get("Authorization", "").partition(" ")[2].strip()),
                "range": r.headers.get("Range"),
            }
            for r in emu.requests
        ]
        windows = budget_windows(emu)
        emu.stop()
        write_json(args.requests, {"requests": log, "api_windows": windows})
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
        # Each file's path on the signed-URL server and its size: the downloads are counted per backup.
        "file_paths": {
            unquote(urlsplit(emu.signed_url(stack, backup_id, file_id)).path): emu.file_size(
                stack, backup_id, file_id
            )
            for file_id in emu.file_ids(stack, backup_id)
        },
        "sha256": emu.archive_sha256(stack, backup_id),
    }


if __name__ == "__main__":
    sys.exit(main())

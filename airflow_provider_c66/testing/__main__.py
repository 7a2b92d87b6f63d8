"""Command line for the emulator: ``serve`` one for manual or cross-process use, or ``smoke``-test it.

    python -m airflow_provider_c66.testing serve --port 0 --token T --stack S --backup-size 700000000
    python -m airflow_provider_c66.testing smoke

Only the standard library is used (http.client), so the smoke test checks the emulator and nothing else.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_c66.testing.emulator import Cloud66Emulator

_Response = tuple[int, dict[str, str], bytes]


def _http(
    method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> _Response:
    """One request on a fresh connection; never raises on HTTP error statuses."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def _emulator_from(args: argparse.Namespace) -> Cloud66Emulator:
    return Cloud66Emulator(
        args.token,
        hourly_budget=args.budget,
        budget_window=args.budget_window,
        url_ttl=args.url_ttl,
        split_threshold=args.split_threshold,
        split_size=args.split_size,
        backup_delay=args.backup_delay,
        backup_outcome=args.backup_outcome,
        bandwidth_per_connection=args.bandwidth,
        host=args.host,
        port=args.port,
    )


def serve(args: argparse.Namespace) -> int:
    """Run an emulator until Ctrl-C or SIGTERM; the first line printed is the API base URL."""
    emu = _emulator_from(args)
    emu.start()
    try:
        if args.public_token:
            emu.add_token(args.public_token, ("public",))
        for uid in args.stack or ["stack-1"]:
            emu.add_stack(uid)
            for size in args.backup_size or []:
                emu.add_backup(uid, size=size)
        print(emu.base_url, flush=True)
        for uid in args.stack or ["stack-1"]:
            for record in emu.backups(uid):
                files = emu.file_ids(uid, record["id"])
                print(f"  stack {uid}: backup {record['id']}, {record['backup_size']} bytes, files {files}")
        print("Serving; press Ctrl-C to stop.", flush=True)
        done = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not done.wait(0.5):
            pass
    finally:
        emu.stop()
    return 0


class _Smoke:
    """Runs named checks, printing one line each, and remembers whether all passed."""

    def __init__(self) -> None:
        self.failures = 0

    def check(self, name: str, step: Callable[[], str | None]) -> None:
        try:
            detail = step()
        except Exception as exc:
            self.failures += 1
            print(f"FAIL {name}: {type(exc).__name__}: {exc}")
        else:
            print(f"ok   {name}" + (f" ({detail})" if detail else ""))


def smoke(args: argparse.Namespace) -> int:
    """Exercise list/get/files/signed URLs/Range/POST end to end and verify every byte."""
    uid = "smoke-stack"
    mib = 2**20
    size = 3 * mib + 12345
    with Cloud66Emulator("smoke-token", split_threshold=2 * mib, split_size=mib, backup_delay=0.2) as emu:
        emu.add_stack(uid, name="Smoke", databases=[("mysql", "app_db"), ("redis", "cache")])
        emu.add_backup(uid, size=4096, db_type="redis", database_name="cache")
        backup_id = emu.add_backup(uid, size=size)
        auth = {"Authorization": "Bearer smoke-token", "Accept": "application/json"}
        api = emu.base_url
        run = _Smoke()
        state: dict[str, Any] = {}

        def get_json(path: str) -> Any:
            status, headers, body = _http("GET", api + path, auth)
            if status != 200:
                raise AssertionError(f"GET {path} answered {status}")
            if "x-ratelimit-remaining" not in headers:
                raise AssertionError("no X-RateLimit-Remaining header")
            return json.loads(body)

        def ping() -> str:
            return f"ok={get_json('/ping/auth.json')['response']['ok']}"

        def stack() -> str:
            return f"name={get_json(f'/stacks/{uid}.json')['response']['name']}"

        def listing() -> str:
            page = get_json(f"/stacks/{uid}/backups.json")
            ids = [r["id"] for r in page["response"]]
            assert backup_id in ids, f"backup {backup_id} not listed: {ids}"
            assert page["pagination"]["next"] is None
            one = get_json(f"/stacks/{uid}/backups/{backup_id}.json")["response"]
            assert one["backup_size"] == size, one
            return f"{len(ids)} backups, newest {ids[0]}"

        def files() -> str:
            listed = [f["id"] for f in get_json(f"/stacks/{uid}/backups/{backup_id}/files.json")["response"]]
            state["files"] = sorted(listed)
            assert state["files"] == emu.file_ids(uid, backup_id), listed
            return f"listed {listed}, sorted {state['files']}"

        def downloads() -> str:
            digest = hashlib.sha256()
            for file_id in state["files"]:
                quirky = get_json(f"/stacks/{uid}/backups/{backup_id}/files/{file_id}.json")["response"][
                    "public_url"
                ]
                assert "%25" in quirky, "public_url lacks the %25 double encoding"
                assert _http("GET", quirky)[0] == 403, "the raw (double-encoded) URL should be refused"
                url = quirky.replace("%25", "%")
                assert _http("HEAD", url)[0] == 403, "HEAD on a GET-signed URL should be 403"
                status, headers, first = _http("GET", url, {"Range": "bytes=0-0"})
                assert status == 206, f"ranged GET answered {status}"
                total = int(headers["content-range"].rsplit("/", 1)[1])
                assert total == emu.file_size(uid, backup_id, file_id), headers["content-range"]
                status, headers, body = _http("GET", url)
                assert status == 200 and len(body) == total == int(headers["content-length"]), status
                assert body == emu.file_bytes(uid, backup_id, file_id), f"{file_id}: bytes differ"
                assert first == body[:1]
                status, _, tail = _http("GET", url, {"Range": f"bytes={total - 10}-"})
                assert status == 206 and tail == body[-10:], "tail range differs"
                digest.update(body)
            assert digest.hexdigest() == emu.archive_sha256(uid, backup_id), "archive sha256 differs"
            return f"{len(state['files'])} parts, sha256 {digest.hexdigest()[:16]}..."

        def create() -> str:
            before = {r["id"] for r in emu.backups(uid)}
            payload = json.dumps({"db_type": "mysql", "frequency": "0 */1 * * *", "keep_count": 10}).encode()
            headers = {**auth, "Content-Type": "application/json"}
            status, _, body = _http("POST", f"{api}/stacks/{uid}/backups.json", headers, payload)
            assert status == 200, f"POST answered {status}: {body!r}"
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                new = [
                    r for r in get_json(f"/stacks/{uid}/backups.json")["response"] if r["id"] not in before
                ]
                if new:
                    return f"backup {new[0]['id']} appeared, status {new[0]['backup_status']}"
                time.sleep(0.1)
            raise AssertionError("no new backup appeared")

        for name, step in [
            ("ping", ping),
            ("stack", stack),
            ("list and get backups", listing),
            ("files list", files),
            ("signed URLs, Range, bytes", downloads),
            ("POST backup task", create),
        ]:
            run.check(name, step)
        print(f"{len(emu.requests)} requests served; " + ("SMOKE OK" if not run.failures else "SMOKE FAILED"))
    return 1 if run.failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_provider_c66.testing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    srv = commands.add_parser("serve", help="run an emulator until Ctrl-C")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=0, help="0 picks a free port")
    srv.add_argument("--token", default="test-token", help="bearer token with public and admin scopes")
    srv.add_argument("--public-token", help="an extra token with the public scope only")
    srv.add_argument("--stack", action="append", help="stack uid (repeatable; default stack-1)")
    srv.add_argument("--backup-size", type=int, action="append", help="add a backup of N bytes (repeatable)")
    srv.add_argument("--split-threshold", type=int, default=512 * 2**20)
    srv.add_argument("--split-size", type=int, default=256 * 2**20)
    srv.add_argument("--url-ttl", type=float, default=300.0)
    srv.add_argument("--budget", type=int, default=3000, help="requests per token per window")
    srv.add_argument("--budget-window", type=float, default=3600.0)
    srv.add_argument("--backup-delay", type=float, default=0.5)
    srv.add_argument("--backup-outcome", choices=["ok", "failed"], default="ok")
    srv.add_argument("--bandwidth", type=float, default=None, help="bytes/s per download connection")
    srv.set_defaults(func=serve)
    commands.add_parser("smoke", help="start an emulator and check it end to end").set_defaults(func=smoke)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

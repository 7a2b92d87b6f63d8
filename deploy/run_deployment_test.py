"""Run the flagship DAG in a real Airflow deployment and check what it did (``make test-deployment``).

Starts, on 127.0.0.1 only and in a temporary directory: a throwaway PostgreSQL cluster (installed
from Debian's packages if missing), the Cloud 66 emulator (deploy/emulator_server.py), a moto S3
server, and Airflow's API server (execution API), scheduler (LocalExecutor, parallelism 4),
triggerer and DAG processor. Triggers ``cloud66_archive_to_s3`` over 20 (stack, db_type) pairs,
waits until all its sensors are deferred to the triggerer at once, only then makes the fresh backups
appear, and waits for the run. Then asserts: the run succeeded; every archive is in the bucket,
byte-exact, with its manifest, and no backup was downloaded twice; every sensor was deferred to the
triggerer and resumed from a trigger event; the Cloud 66 API requests stayed within the rate budget.
Prints a report, stops every process it started (also on failure or Ctrl-C) and removes the
temporary directory (``--keep`` keeps it). Exit status 0 only when every check passed.

``--executor celery`` (``make test-deployment-celery``) runs the same on the CeleryExecutor: Redis
(installed from Debian's packages if missing) as the broker, the result backend in the same
PostgreSQL, and two ``airflow celery worker`` processes with hostnames of their own; ``--stacks``,
``--types-per-stack``, ``--budget`` and ``--budget-window`` scale the targets up and the emulator's
rate budget down, so that throttling must happen. It also asserts that tasks ran on both workers,
that no window of the budget served more than the budget, and that the emulator did throttle; it
reports the peak RSS of each worker's process tree and the task starts.
"""

# ruff: noqa: S106, S603, S607 - this script runs fixed local commands and queries its own database

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import itertools
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
DAG_FILE = ROOT / "example_dags" / "cloud66_archive_to_s3.py"
DAG_ID = "cloud66_archive_to_s3"
# Scheduled on the archive operator's asset alias: the scheduler runs it as archives land.
VERIFY_DAG_FILE = ROOT / "example_dags" / "cloud66_verify_new_archives.py"
VERIFY_DAG_ID = "cloud66_verify_new_archives"
VERIFY_TIMEOUT = 240.0  # seconds from the end of the archive run to the last verification
SENSOR, COPY = "archive.wait_for_backup", "archive.copy_to_s3"
TRIGGER_CLASS = "airflow_provider_c66.triggers.backups.Cloud66BackupTrigger"
POKE_INTERVAL = 2.0  # seconds; CLOUD66_ARCHIVE_POKE_INTERVAL for every Airflow process
PRODUCTION_POKE_INTERVAL = 300.0  # the DAG's default
HOURLY_BUDGET = 3000  # Cloud 66 API requests per token per hour
SCHEDULER_GRACE = 60.0  # seconds to wait for the scheduler to log deferrals once all are claimed
BUCKET = "deployment-test-lake"
AIRFLOW = str(Path(sys.executable).parent / "airflow")
# A Celery worker's task runner reports this as the task instance's hostname (task_instance.hostname).
HOSTNAME_MODULE = "c66_deploy_worker_hostname"

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """What to deploy and how much to run through it (the command line's options)."""

    executor: str = "local"
    stacks: int = 5
    types_per_stack: int = 4
    budget: int = HOURLY_BUDGET  # the emulator's API requests per token per window
    budget_window: float = 3600.0  # seconds
    workers: int = 2
    worker_concurrency: int = 4
    verify_dag: bool = True
    run_timeout: float = 480.0  # seconds from trigger to the end of the run

    @property
    def pairs(self) -> int:
        return self.stacks * self.types_per_stack

    @property
    def celery(self) -> bool:
        return self.executor == "celery"

    @property
    def throttling(self) -> bool:
        """A budget scaled down to a window shorter than Cloud 66's hour must be met: throttling must happen."""
        return self.budget_window < 3600.0

    @property
    def worker_names(self) -> list[str]:
        return [f"worker-{n}" for n in range(1, self.workers + 1)] if self.celery else []


class Failure(Exception):
    """A check or a step failed; the message says which and why."""


class NotYet(Exception):
    """A probe's condition does not hold yet; the message says what it saw (printed on a timeout)."""


# --- processes -----------------------------------------------------------------------------------


class Processes:
    """Every process this script starts, each in its own process group, stopped in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str], **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,
        )
        log.close()
        self.running.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.running:
            if proc.poll() is not None:
                raise Failure(f"{name} exited early with status {proc.returncode}; see its log below")

    def stop(self, *names: str) -> None:
        """Stop the named processes (all when none is named): a signal to the group, SIGKILL after 30 s.

        PostgreSQL goes last (fast shutdown on SIGINT), once nothing needs it any more.
        """
        chosen = [(n, p) for n, p in reversed(self.running) if not names or n in names]
        for batch in ([c for c in chosen if c[0] != "postgres"], [c for c in chosen if c[0] == "postgres"]):
            for name, proc in batch:
                _signal_group(proc, signal.SIGINT if name == "postgres" else signal.SIGTERM)
            for name, proc in batch:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    print(f"  {name} did not stop in 30 s; killing it")
                _signal_group(proc, signal.SIGKILL)  # also any child left behind in its group
                proc.wait()
                self.running.remove((name, proc))


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, procs: Processes) -> T:
    """Call ``probe`` every second until it returns something other than None or False."""
    deadline = time.monotonic() + timeout
    error: Exception | None
    while True:
        procs.check_alive()
        try:
            result = probe()
        except Failure:
            raise
        except Exception as exc:  # not ready yet (NotYet says what the probe saw)
            result, error = None, exc
        else:
            error = None
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise Failure(
                f"timed out after {timeout:.0f} s waiting for {what}" + (f": {error}" if error else "")
            )
        time.sleep(1)


def run(argv: list[str], env: dict[str, str], log: Path, timeout: float = 600, **kwargs: Any) -> None:
    with open(log, "ab") as out:
        result = subprocess.run(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, **kwargs
        )
    if result.returncode:
        raise Failure(f"{' '.join(argv[:3])} exited with status {result.returncode}; see {log.name} below")


# --- PostgreSQL ----------------------------------------------------------------------------------


def apt_install(package: str) -> None:
    """Install a package from Debian's packages (as root), without letting it start a service."""
    if os.geteuid() != 0:
        raise Failure(f"{package} is not installed; run as root or: apt-get install -y {package}")
    print(f"Installing {package} from Debian's packages ...", flush=True)
    # policy-rc.d refuses service starts: the package must not start a system-wide server.
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    finally:
        if created:
            policy.unlink()


def postgres_bin_dir() -> Path:
    """Debian's PostgreSQL binaries, installing the package if they are missing."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        apt_install("postgresql")
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
        if not found:
            raise Failure("apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb exists")
    return Path(found[-1]).parent


def start_postgres(work: Path, procs: Processes) -> str:
    """A throwaway cluster on 127.0.0.1 (TCP only), run as ``postgres`` when we are root; returns its DSN."""
    import psycopg2

    bin_dir = postgres_bin_dir()
    data = work / "pgdata"
    data.mkdir()
    as_user: dict[str, Any] = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(data, "postgres", "postgres")
        as_user = {"user": "postgres", "group": "postgres", "extra_groups": []}
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync"]
    run(initdb, env, procs.log_dir / "initdb.log", timeout=300, cwd=str(data), **as_user)
    port = free_port()
    settings = (
        "unix_socket_directories= max_connections=200 fsync=off synchronous_commit=off full_page_writes=off"
    )
    options = [arg for setting in settings.split() for arg in ("-c", setting)]
    server = [str(bin_dir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), *options]
    procs.start("postgres", server, env, cwd=str(data), **as_user)
    admin = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    conn = wait_for("PostgreSQL", lambda: psycopg2.connect(admin, connect_timeout=5), 120, procs)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE ROLE airflow LOGIN PASSWORD 'airflow'")
        cur.execute("CREATE DATABASE airflow OWNER airflow")
    conn.close()
    print(f"PostgreSQL {bin_dir.parent.name} on 127.0.0.1:{port}", flush=True)
    return f"postgresql+psycopg2://airflow:airflow@127.0.0.1:{port}/airflow"


def start_redis(work: Path, procs: Processes) -> str:
    """Debian's redis-server (installed if missing) on 127.0.0.1, no persistence; returns its URL."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        apt_install("redis-server")
    data = work / "redis"
    data.mkdir()
    port = free_port()
    server = [
        binary, "--bind", "127.0.0.1", "--port", str(port), "--protected-mode", "yes", "--save", "",
        "--appendonly", "no", "--dir", str(data), "--daemonize", "no", "--logfile", "",
    ]  # fmt: skip
    procs.start("redis", server, dict(os.environ))

    def pong() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    wait_for("Redis", pong, 60, procs)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    print(f"Redis on 127.0.0.1:{port} ({version.split()[2] if version else '?'})", flush=True)
    return f"redis://127.0.0.1:{port}/0"


class TreeMemory(threading.Thread):
    """Samples, every second, the memory of each named process and all its descendants (from /proc).

    RSS counts a page shared by a forked child in each process that maps it, so the tree's summed
    RSS overstates what it takes; PSS (``smaps_rollup``) shares such pages out and is also kept.
    The tree's CPU time is its live processes' own and their reaped children's (``stat`` fields
    14-17): the task processes, once their pool process has reaped them.
    """

    def __init__(self, roots: dict[str, int], interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.roots = roots
        self.interval = interval
        self.peak_rss: dict[str, int] = dict.fromkeys(roots, 0)
        self.peak_pss: dict[str, int] = dict.fromkeys(roots, 0)
        self.peak_procs: dict[str, int] = dict.fromkeys(roots, 0)
        self.cpu_seconds: dict[str, float] = dict.fromkeys(roots, 0.0)
        self.samples = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(self.interval):
            children: dict[int, list[int]] = defaultdict(list)
            ticks: dict[int, int] = {}
            for stat in glob.glob("/proc/[0-9]*/stat"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
                    pid = int(stat.split("/")[2])
                    children[int(fields[1])].append(pid)
                    ticks[pid] = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            for name, root in self.roots.items():
                tree, todo = [], [root]
                while todo:
                    pid = todo.pop()
                    tree.append(pid)
                    todo.extend(children.get(pid, []))
                rss = pss = 0
                cpu = sum(ticks.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")
                self.cpu_seconds[name] = max(self.cpu_seconds[name], cpu)
                for pid in tree:
                    rss += _kib(f"/proc/{pid}/status", "VmRSS:")
                    pss += _kib(f"/proc/{pid}/smaps_rollup", "Pss:")
                self.peak_rss[name] = max(self.peak_rss[name], rss)
                self.peak_pss[name] = max(self.peak_pss[name], pss)
                self.peak_procs[name] = max(self.peak_procs[name], len(tree))
            self.samples += 1

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


def _kib(path: str, field: str) -> int:
    """One ``field: N kB`` line of a /proc file, in KiB (0 when the process or the line is gone)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    return 0


class MetadataDB:
    """Read-only queries on the Airflow metadata database, one short connection each."""

    def __init__(self, sqlalchemy_url: str) -> None:
        self.dsn = sqlalchemy_url.replace("postgresql+psycopg2://", "postgresql://")

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg2

        conn = psycopg2.connect(self.dsn, connect_timeout=10)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()

    def dag_run(self, run_id: str) -> tuple[str, Any, Any] | None:
        found = self.rows(
            "SELECT state, start_date, end_date FROM dag_run WHERE dag_id=%s AND run_id=%s", DAG_ID, run_id
        )
        return (found[0][0], found[0][1], found[0][2]) if found else None

    def task_states(self, run_id: str) -> Counter[tuple[str, str | None]]:
        rows = self.rows(
            "SELECT task_id, state FROM task_instance WHERE dag_id=%s AND run_id=%s", DAG_ID, run_id
        )
        return Counter((task, state) for task, state in rows)

    def retried(self, run_id: str) -> dict[str, int]:
        rows = self.rows(
            "SELECT task_id, map_index, try_number FROM task_instance "
            "WHERE dag_id=%s AND run_id=%s AND try_number > 1",
            DAG_ID,
            run_id,
        )
        return {f"{task}[{index}]": tries for task, index, tries in rows}

    def targets(self, run_id: str) -> list[dict[str, Any]] | None:
        """What the ``targets`` task returned (the groups the task group ``archive`` is mapped over)."""
        found = self.rows(
            "SELECT value FROM xcom WHERE dag_id=%s AND run_id=%s AND task_id='targets' AND key='return_value'",
            DAG_ID,
            run_id,
        )
        if not found:
            return None
        value = found[0][0]
        return list(json.loads(value) if isinstance(value, (str, bytes)) else value)

    def hostnames(self, run_id: str) -> Counter[str | None]:
        rows = self.rows(
            "SELECT hostname, count(*) FROM task_instance WHERE dag_id=%s AND run_id=%s "
            "AND state IS DISTINCT FROM 'skipped' GROUP BY hostname",
            DAG_ID,
            run_id,
        )
        return Counter({host: int(count) for host, count in rows})

    def sensors(self, run_id: str) -> list[tuple[int, str | None, str | None, int | None]]:
        """(map_index, state, trigger classpath, triggerer job id) of every mapped sensor."""
        return [
            (int(r[0]), r[1], r[2], r[3])
            for r in self.rows(
                "SELECT ti.map_index, ti.state, t.classpath, t.triggerer_id FROM task_instance ti "
                "LEFT JOIN trigger t ON t.id = ti.trigger_id "
                "WHERE ti.dag_id=%s AND ti.run_id=%s AND ti.task_id=%s AND ti.map_index >= 0 ORDER BY ti.map_index",
                DAG_ID,
                run_id,
                SENSOR,
            )
        ]


# --- the run ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, data)")
    parser.add_argument("--executor", choices=["local", "celery"], default="local")
    parser.add_argument("--stacks", type=int, default=5, help="stacks the emulator serves (default 5)")
    parser.add_argument(
        "--types-per-stack", type=int, default=4, choices=range(1, 5), help="database types per stack (4)"
    )
    parser.add_argument("--budget", type=int, default=HOURLY_BUDGET, help="API requests per token per window")
    parser.add_argument(
        "--budget-window",
        type=float,
        default=3600.0,
        help="the budget's window in seconds; shorter than 3600: throttling must happen",
    )
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (--executor celery)")
    parser.add_argument("--worker-concurrency", type=int, default=4, help="task slots per Celery worker")
    parser.add_argument(
        "--no-verify-dag", action="store_true", help=f"do not run {VERIFY_DAG_ID} on the archives"
    )
    parser.add_argument("--run-timeout", type=float, default=480.0, help="seconds from trigger to run end")
    args = parser.parse_args()
    if args.executor == "celery" and args.workers < 2:
        parser.error("--executor celery needs at least 2 workers: the test checks tasks ran on each")
    settings = Settings(
        executor=args.executor,
        stacks=args.stacks,
        types_per_stack=args.types_per_stack,
        budget=args.budget,
        budget_window=args.budget_window,
        workers=args.workers if args.executor == "celery" else 0,
        worker_concurrency=args.worker_concurrency,
        verify_dag=not args.no_verify_dag,
        run_timeout=args.run_timeout,
    )
    # A SIGTERM (CI's timeout, make interrupted) unwinds through the finally below like Ctrl-C.
    signal.signal(signal.SIGTERM, on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="c66-deploy-"))
    work.chmod(0o755)  # the postgres user must reach its data directory inside
    (work / "logs").mkdir()
    procs = Processes(work / "logs")
    started = time.monotonic()
    problems: list[str] = ["interrupted"]
    try:
        try:
            problems = deploy_and_check(work, procs, settings)
        except Failure as exc:
            problems = [str(exc)]
        finally:
            print("\nStopping every process started ...", flush=True)
            procs.stop()
            if problems and problems != ["interrupted"]:
                print_log_tails(work)
        print(f"\nTotal time {time.monotonic() - started:.0f} s")
        for problem in problems:
            print(f"FAIL: {problem}")
        if not problems:
            n = settings.pairs
            print(
                f"DEPLOYMENT TEST OK ({settings.executor} executor): {n} archives byte-exact, every sensor "
                f"deferred, requests within budget"
                + (", throttled and waited for the budget's resets" if settings.throttling else "")
                + (f", tasks on all {settings.workers} Celery workers" if settings.celery else "")
                + (f", {n} archives verified by the asset-triggered DAG." if settings.verify_dag else ".")
            )
    finally:
        if args.keep:
            print(f"Kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


def on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the clean-up finish
    sys.exit(128 + signum)


def deploy_and_check(work: Path, procs: Processes, settings: Settings) -> list[str]:
    import boto3

    timings: dict[str, float] = {}
    mark = time.monotonic()

    def lap(name: str) -> None:
        nonlocal mark
        timings[name] = time.monotonic() - mark
        mark = time.monotonic()

    sql_url = start_postgres(work, procs)
    db = MetadataDB(sql_url)
    broker_url = start_redis(work, procs) if settings.celery else None
    lap("PostgreSQL up" + (", Redis up" if settings.celery else ""))

    # The Cloud 66 emulator and the S3 server
    state_file, requests_file = work / "emulator-state.json", work / "emulator-requests.json"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    base_env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    launcher = [
        str(ROOT / "deploy" / "emulator_server.py"),
        "--state",
        str(state_file),
        "--requests",
        str(requests_file),
        "--stacks",
        str(settings.stacks),
        "--types-per-stack",
        str(settings.types_per_stack),
        "--hourly-budget",
        str(settings.budget),
        "--budget-window",
        str(settings.budget_window),
    ]
    emulator = procs.start("emulator", [sys.executable, *launcher], base_env)
    state = wait_for("the emulator's state file", lambda: read_json(state_file), 60, procs)
    s3_port = free_port()
    procs.start(
        "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)], base_env
    )
    s3_endpoint = f"http://127.0.0.1:{s3_port}"
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="deploy",
        aws_secret_access_key="deploy",
    )
    wait_for("the S3 server", lambda: s3.create_bucket(Bucket=BUCKET), 60, procs)
    print(
        f"Cloud 66 emulator at {state['base_url']} ({settings.stacks} stacks x {settings.types_per_stack} "
        f"database types, budget {settings.budget} requests per {settings.budget_window:g} s), "
        f"S3 at {s3_endpoint}, bucket {BUCKET}",
        flush=True,
    )
    lap("emulator and S3 up")

    # Airflow: one environment for every process
    home, dags = work / "airflow-home", work / "dags"
    home.mkdir()
    dags.mkdir()
    shutil.copy(DAG_FILE, dags / DAG_FILE.name)
    if settings.verify_dag:
        shutil.copy(VERIFY_DAG_FILE, dags / VERIFY_DAG_FILE.name)
    api_port = free_port()
    env = {
        **base_env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_url,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__CORE__FERNET_KEY": fernet_key(),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW_CONN_CLOUD66_DEFAULT": json.dumps(
            {"conn_type": "cloud66", "host": state["base_url"], "password": state["token"]}
        ),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {
                "conn_type": "aws",
                "login": "deploy",
                "password": "deploy",
                "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
            }
        ),
        "AIRFLOW_VAR_CLOUD66_ARCHIVE_TARGETS": json.dumps(state["targets"]),
        "CLOUD66_ARCHIVE_POKE_INTERVAL": str(POKE_INTERVAL),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    if settings.celery:
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                # Every worker slot can be busy at once; deferred sensors hold none.
                "AIRFLOW__CORE__PARALLELISM": str(settings.workers * settings.worker_concurrency),
                "AIRFLOW__CELERY__BROKER_URL": str(broker_url),
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + sql_url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(settings.worker_concurrency),
            }
        )
    logs = procs.log_dir
    run([AIRFLOW, "db", "migrate"], env, logs / "db-migrate.log")
    lap("airflow db migrate")

    procs.start(
        "api-server",
        [AIRFLOW, "api-server", "--apps", "execution", "-H", "127.0.0.1", "-p", str(api_port), "-w", "1"],
        env,
    )
    wait_for("the API server", lambda: http_ok(f"http://127.0.0.1:{api_port}/execution/health"), 180, procs)
    # No log servers: they would listen on every interface, on fixed ports; the logs are local files.
    procs.start("scheduler", [AIRFLOW, "scheduler", "--skip-serve-logs"], env)
    procs.start("triggerer", [AIRFLOW, "triggerer", "--skip-serve-logs"], env)
    procs.start("dag-processor", [AIRFLOW, "dag-processor"], env)
    memory = start_workers(work, procs, env, settings) if settings.celery else None
    next_run = wait_for(
        f"the DAG processor to parse {DAG_ID}",
        lambda: first(
            db.rows("SELECT next_dagrun FROM dag WHERE dag_id=%s AND next_dagrun IS NOT NULL", DAG_ID)
        ),
        240,
        procs,
    )
    if settings.verify_dag:
        wait_for(
            f"the DAG processor to parse {VERIFY_DAG_ID}",
            lambda: first(db.rows("SELECT dag_id FROM dag WHERE dag_id=%s", VERIFY_DAG_ID)),
            120,
            procs,
        )
        run([AIRFLOW, "dags", "unpause", VERIFY_DAG_ID], env, logs / "cli.log", timeout=180)
    if settings.celery:
        wait_for(
            f"{settings.workers} Celery workers ready",
            lambda: all("ready." in (logs / f"{name}.log").read_text() for name in settings.worker_names),
            180,
            procs,
        )
    lap("Airflow up, DAGs parsed")

    # Trigger for the next scheduled logical date, so that unpausing creates no scheduled run beside ours.
    run_id = f"deployment_test__{int(time.time())}"
    conf = json.dumps({"s3_bucket": BUCKET})
    trigger = [AIRFLOW, "dags", "trigger", DAG_ID, "-r", run_id, "-l", next_run[0].isoformat(), "-c", conf]
    run(trigger, env, logs / "cli.log", timeout=180)
    run([AIRFLOW, "dags", "unpause", DAG_ID], env, logs / "cli.log", timeout=180)
    triggered = time.monotonic()
    print(f"Triggered {run_id}; waiting for every sensor to be deferred ...", flush=True)

    claimed_since: list[float] = []  # when all sensors were first seen deferred and claimed
    groups: list[list[tuple[str, str]]] = []  # the pairs of each mapped task group, by map index

    def all_deferred() -> list[tuple[int, str | None, str | None, int | None]]:
        run_state = db.dag_run(run_id)
        if run_state and run_state[0] in ("success", "failed"):
            raise Failure(f"the DAG run ended {run_state[0]} before the backups were released")
        if not groups:
            returned = db.targets(run_id)
            if returned is None:
                raise NotYet("the targets task has not returned yet")
            groups.extend(target_groups(returned, state["targets"]))
        sensors = db.sensors(run_id)
        done = [s for s in sensors if s[1] in ("success", "failed", "upstream_failed", "skipped")]
        if done:
            raise Failure(f"sensor(s) {[s[0] for s in done]} ended before any fresh backup existed: {done}")
        claimed = [s for s in sensors if s[1] == "deferred" and s[2] == TRIGGER_CLASS and s[3] is not None]
        states = dict(Counter(str(s[1]) for s in sensors))
        if len(claimed) < len(groups):
            raise NotYet(f"{len(claimed)} of {len(groups)} sensors deferred and claimed; states {states}")
        if not claimed_since:
            claimed_since.append(time.monotonic())
        seen = scheduler_saw_deferred(logs / "scheduler.log", run_id)
        missing = sorted({s[0] for s in sensors} - seen)
        if missing and time.monotonic() - claimed_since[0] < SCHEDULER_GRACE:
            raise NotYet(
                f"all {len(groups)} claimed; the scheduler has not yet logged the deferral of {missing}"
            )
        if missing:
            # The scheduler processes executor events every loop (about a second): after the grace the
            # events are long processed, and only their log lines are missing. Go on, and say so.
            print(
                f"NOTE: the scheduler log showed no deferral line for map index(es) {missing} "
                f"{SCHEDULER_GRACE:.0f} s after all were claimed; going on",
                flush=True,
            )
        return sensors

    deferred = wait_for("every sensor deferred and claimed by the triggerer", all_deferred, 300, procs)
    triggerer_jobs = {s[3] for s in deferred}
    lap(f"{len(groups)} sensors deferred")

    # Only now do the fresh backups exist: the sensors can only finish through their triggers.
    emulator.send_signal(signal.SIGUSR1)
    state = wait_for("the emulator to add the fresh backups", lambda: released(state_file), 60, procs)
    print(
        f"All {len(groups)} sensors ({settings.pairs} pairs) deferred (triggerer job "
        f"{sorted(triggerer_jobs, key=str)}); fresh backups released.",
        flush=True,
    )

    def finished() -> str | None:
        run_state = db.dag_run(run_id)
        return run_state[0] if run_state and run_state[0] in ("success", "failed") else None

    final_state = wait_for(
        "the DAG run to finish",
        finished,
        max(60.0, settings.run_timeout - (time.monotonic() - triggered)),
        procs,
    )
    lap("backups released -> run finished")

    def all_verified() -> dict[str, Any]:
        """Every archive verified by asset-triggered runs of the verify DAG, each run over."""
        runs = db.rows("SELECT run_type, state FROM dag_run WHERE dag_id=%s", VERIFY_DAG_ID)
        queued = db.rows("SELECT count(*) FROM asset_dag_run_queue WHERE target_dag_id=%s", VERIFY_DAG_ID)
        verify = Counter(
            str(row[0])
            for row in db.rows(
                "SELECT state FROM task_instance WHERE dag_id=%s AND task_id='verify'", VERIFY_DAG_ID
            )
        )
        seen = (
            f"runs {Counter(map(tuple, runs))}, verify tasks {dict(verify)}, {queued[0][0]} event(s) queued"
        )
        if queued[0][0] or any(state not in ("success", "failed") for _, state in runs):
            raise NotYet(seen)
        if any(state == "failed" for _, state in runs) or set(verify) - {"success"}:
            raise Failure(f"the verify DAG did not verify every archive: {seen}")
        if verify["success"] < settings.pairs:
            raise NotYet(seen)
        return {"runs": Counter(map(tuple, runs)), "verified": verify["success"]}

    verified = None
    if settings.verify_dag:
        verified = wait_for(f"{VERIFY_DAG_ID} to verify every archive", all_verified, VERIFY_TIMEOUT, procs)
        lap("run finished -> every archive verified")

    # Quiesce: nothing may send requests or write objects while we count and read them.
    run([AIRFLOW, "dags", "pause", DAG_ID], env, logs / "cli.log", timeout=180)
    if settings.verify_dag:
        run([AIRFLOW, "dags", "pause", VERIFY_DAG_ID], env, logs / "cli.log", timeout=180)
    procs.stop("scheduler", "triggerer", "dag-processor", "api-server", *settings.worker_names, "emulator")
    if memory is not None:
        memory.stop()
    recorded = read_json(requests_file) or {}
    requests, windows = recorded.get("requests", []), recorded.get("api_windows", [])

    problems: list[str] = []
    run_state = db.dag_run(run_id)
    assert run_state is not None
    if final_state != "success":
        problems.append(f"the DAG run ended {final_state}")
    states = db.task_states(run_id)
    expected_states = Counter(
        {
            (SENSOR, "success"): len(groups),
            (COPY, "success"): len(groups),
            ("targets", "success"): 1,
            ("summary", "success"): 1,
            # The weekly prune is off by default (params.retention is null): it decides, then is skipped.
            ("prune_today", "success"): 1,
            ("prune", "skipped"): 1,
        }
    )
    if states != expected_states:
        problems.append(f"task states {dict(states)}, expected {dict(expected_states)}")
    problems += check_archives(s3, state["released"])
    downloads = check_downloads(requests, state["released"])
    problems += downloads["problems"]
    fired = trigger_events(home, logs / "triggerer.log", run_id)
    problems += check_deferral(deferred, fired, db.retried(run_id), len(groups))
    budget = request_budget(requests, windows, state, groups, settings)
    problems += budget.pop("problems")
    workers: dict[str, Any] = {}
    if settings.celery:
        workers = worker_report(logs, db.hostnames(run_id), settings)
        problems += workers.pop("problems")

    if verified is not None and (
        verified["verified"] != settings.pairs or set(verified["runs"]) != {("asset_triggered", "success")}
    ):
        problems.append(
            f"verify DAG: {verified}, expected {settings.pairs} archives verified by asset-triggered runs"
        )

    print_report(
        timings, run_id, run_state, states, deferred, fired, budget, downloads, state, groups, settings
    )
    if settings.celery and memory is not None:
        print_workers(workers, memory, settings)
    if verified is not None:
        print(
            f"Verify DAG ({VERIFY_DAG_ID}, scheduled on the asset alias): {verified['verified']} archives "
            f"verified in {sum(verified['runs'].values())} asset-triggered run(s), from the events' extras alone"
        )
    return problems


def start_workers(work: Path, procs: Processes, env: dict[str, str], settings: Settings) -> TreeMemory:
    """The Celery workers, each named by ``--celery-hostname`` and reporting that name as the task
    instances' hostname (``[core] hostname_callable``); their process trees are sampled for memory."""
    pylib = work / "pylib"
    pylib.mkdir()
    (pylib / f"{HOSTNAME_MODULE}.py").write_text(
        '"""The deployment test\'s worker name, as the task instance\'s hostname."""\n\n'
        "import os\n\n\ndef hostname() -> str:\n"
        '    return os.environ["C66_DEPLOY_WORKER"]\n'
    )
    roots = {}
    for name in settings.worker_names:
        worker_env = {
            **env,
            "C66_DEPLOY_WORKER": name,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{HOSTNAME_MODULE}.hostname",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(pylib), env.get("PYTHONPATH")])),
        }
        argv = [
            AIRFLOW, "celery", "worker", "--celery-hostname", f"{name}@%h",
            "--concurrency", str(settings.worker_concurrency), "--skip-serve-logs",
        ]  # fmt: skip
        roots[name] = procs.start(name, argv, worker_env).pid
    memory = TreeMemory(roots)
    memory.start()
    return memory


def target_groups(
    returned: list[dict[str, Any]], targets: list[dict[str, str]]
) -> list[list[tuple[str, str]]]:
    """The (stack, db_type) pairs of each group the ``targets`` task returned, by map index: one pair
    each (``{"stack_id", "db_type"}``), or a stack's pairs (``{"stack_id", "db_types": [...]}``).
    Together they must be the configured pairs, each once."""
    groups = []
    for item in returned:
        types = item.get("db_types") if "db_types" in item else [item.get("db_type")]
        groups.append([(str(item.get("stack_id")), str(db_type)) for db_type in types or []])
    flat = Counter(pair for group in groups for pair in group)
    wanted = Counter((t["stack_id"], t["db_type"]) for t in targets)
    if flat != wanted:
        raise Failure(
            f"the targets task returned {len(returned)} group(s) covering {sum(flat.values())} pair(s), "
            f"not the {len(wanted)} configured pairs each once: {returned[:5]} ..."
        )
    return groups


def scheduler_saw_deferred(log: Path, run_id: str) -> set[int]:
    """Map indexes of the sensors whose defer-exit executor event the scheduler has processed.

    Releasing the backups before that would hit an Airflow race (apache/airflow#66374, #67287,
    #72716): a trigger that fires while the worker's "success" for the deferral is still unprocessed
    gets the resumed task failed as "state changed externally" and retried after retry_delay.
    """
    pattern = re.compile(
        rf"TaskInstance Finished: dag_id={DAG_ID}, task_id={re.escape(SENSOR)}, "
        rf"run_id={re.escape(run_id)}, map_index=(\d+),.* state=deferred,"
    )
    return {int(m.group(1)) for m in pattern.finditer(log.read_text(errors="replace"))}


# --- checks ----------------------------------------------------------------------------------------


def check_archives(s3: Any, released: list[dict[str, Any]]) -> list[str]:
    """Every fresh backup archived once, byte-exact against the emulator's source, with its manifest
    and its catalogue record."""
    problems: list[str] = []
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for o in page.get("Contents", [])
    ]
    manifests = {}
    for key in keys:
        if key.endswith("/manifest.json"):
            doc = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            manifests[(doc["stack_id"], doc["backup"]["id"])] = (key, doc)
    expected = {(b["stack_id"], b["backup_id"]): b for b in released}
    if set(manifests) != set(expected):
        problems.append(f"manifests for {sorted(manifests)}, expected one for each of {sorted(expected)}")
    archived = set()
    for pair, backup in expected.items():
        if pair not in manifests:
            continue
        key, doc = manifests[pair]
        if [s["name"] for s in doc["sources"]] != backup["files"]:
            problems.append(
                f"{key}: sources {[s['name'] for s in doc['sources']]}, expected {backup['files']}"
            )
        for entry in doc["objects"]:
            archived.add(entry["key"])
            body = s3.get_object(Bucket=BUCKET, Key=entry["key"])["Body"].read()
            digest = hashlib.sha256(body).hexdigest()
            if (len(body), digest) != (backup["size"], backup["sha256"]):
                problems.append(
                    f"{entry['key']}: {len(body)} bytes sha256 {digest[:12]}, expected "
                    f"{backup['size']} bytes sha256 {backup['sha256'][:12]} (emulator source)"
                )
            if (entry["size"], entry["sha256"]) != (len(body), digest):
                problems.append(f"{entry['key']}: differs from its manifest entry")
    # Each archive's one catalogue record, agreeing with its manifest.
    from airflow_provider_c66.models import Backup
    from airflow_provider_c66.transfers import archive

    catalogued = set()
    for key, doc in manifests.values():
        record_key = archive.catalog_key(
            archive.DEFAULT_CATALOG_PREFIX, doc["stack_id"], Backup.from_dict(doc["backup"])
        )
        catalogued.add(record_key)
        if record_key not in keys:
            problems.append(f"{key}: no catalogue record {record_key}")
            continue
        record = json.loads(s3.get_object(Bucket=BUCKET, Key=record_key)["Body"].read())
        if (record["manifest_key"], record["total_size"]) != (key, doc["total_size"]):
            problems.append(f"{record_key}: disagrees with {key}")
    stray = set(keys) - archived - {key for key, _ in manifests.values()} - catalogued
    if stray:
        problems.append(f"unexpected objects in the bucket: {sorted(stray)}")
    uploads = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    if uploads:
        problems.append(f"{len(uploads)} multipart upload(s) left open")
    return problems


def trigger_events(home: Path, triggerer_log: Path, run_id: str) -> dict[int, int]:
    """Per sensor map index, how many success events its trigger logged ("Trigger fired event").

    The triggerer writes each trigger's log beside the task's own (``attempt=N.log.trigger.<job>.log``);
    now and then Airflow routes a line to the triggerer's own log instead (seen once in this test, a
    trigger that fired within a second of starting), so both are counted: each event is in one of them.
    """
    fired: Counter[int] = Counter()
    success = re.compile(r"""\\?'status\\?': \\?'success\\?'""")
    task_dir = home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={SENSOR}"
    for path in task_dir.glob("map_index=*/*.log.trigger.*.log"):
        index = int(path.parent.name.removeprefix("map_index="))
        for line in path.read_text(errors="replace").splitlines():
            if "Trigger fired event" in line and success.search(line):
                fired[index] += 1
    for line in triggerer_log.read_text(errors="replace").splitlines():
        if "Trigger fired event" in line and f"run_id={run_id}" in line and f"task_id={SENSOR}" in line:
            found = re.search(r"\bmap_index=(\d+)", line)
            if found and success.search(line):
                fired[int(found.group(1))] += 1
    return dict(fired)


def check_deferral(
    deferred: list[tuple[int, Any, Any, Any]], fired: dict[int, int], tries: dict[str, int], groups: int
) -> list[str]:
    """All sensors were deferred at once; each trigger fired one success event; nothing was retried."""
    problems = []
    if sorted(s[0] for s in deferred) != list(range(groups)):
        problems.append(f"deferred sensors' map indexes {sorted(s[0] for s in deferred)}")
    if fired != dict.fromkeys(range(groups), 1):
        problems.append(
            f"trigger success events per sensor map index {fired}, expected one for each of {groups}"
        )
    if tries:
        problems.append(f"task instances retried (try_number > 1): {tries}")
    return problems


def check_downloads(requests: list[dict[str, Any]], released: list[dict[str, Any]]) -> dict[str, Any]:
    """No backup was downloaded twice: per file, the ranges fetched (its one-byte size probes aside)
    never overlap, and per backup they add up to no more than its size. A resumed download may
    fetch what it lacks, never again what it had."""
    owner: dict[str, tuple[str, int]] = {}
    size_of: dict[str, int] = {}
    for backup in released:
        label = f"{backup['stack_id']}/{backup['db_type']} backup {backup['backup_id']}"
        size_of[label] = backup["size"]
        for path, size in backup["file_paths"].items():
            owner[path] = (label, size)
    spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
    fetched: Counter[str] = Counter()
    probes = 0
    problems = []
    for r in requests:
        if r["kind"] != "file" or r["method"] != "GET" or r["status"] not in (200, 206):
            continue  # an error answer is reported with the request budget
        path = unquote(r["path"])
        if path not in owner:
            problems.append(f"a download of {path}, which is no fresh backup's file")
            continue
        label, size = owner[path]
        if r.get("range") == "bytes=0-0" and r["status"] == 206:
            probes += 1  # the copy's size probe and size check: one byte each
            continue
        found = re.fullmatch(r"bytes=(\d+)-(\d*)", r.get("range") or "")
        if r["status"] == 200 or not found:
            span = (0, size - 1)
        else:
            span = (int(found.group(1)), min(int(found.group(2) or size - 1), size - 1))
        spans[path].append(span)
        fetched[label] += span[1] - span[0] + 1
    for path, ranges in spans.items():
        ranges.sort()
        for before, after in itertools.pairwise(ranges):
            if after[0] <= before[1]:
                problems.append(
                    f"{owner[path][0]}: bytes {after[0]}-{min(before[1], after[1])} of {path.rsplit('/', 1)[1]} "
                    "downloaded twice"
                )
    for label, count in fetched.items():
        if count > size_of[label]:
            problems.append(f"{label}: {count} bytes downloaded, more than its {size_of[label]}")
    return {
        "problems": problems,
        "bytes": sum(fetched.values()),
        "ranges": sum(map(len, spans.values())),
        "probes": probes,
    }


def request_budget(
    requests: list[dict[str, Any]],
    windows: list[dict[str, Any]],
    state: dict[str, Any],
    groups: list[list[tuple[str, str]]],
    settings: Settings,
) -> dict[str, Any]:
    """Count the API requests by kind and compare them with the rate budget and the expected bound.

    The budget: for every window the emulator counted (a token's window opens with the first
    request after the previous one closed), its served requests (every answer but ``503
    throttled``) are no more than the budget. With a scaled-down budget the emulator must also
    have throttled; with Cloud 66's own, nothing may be throttled or answered with an error.

    Expected, per sensor (a pair, or a stack's pairs): its one check before deferring; the trigger's
    polls, one every poke interval from then until the backups appear, plus the one that finds them
    (and one for timing slack); then per backup the copy: get the backup, list its files, one signed
    URL per file, and list its files again right before the archive completes (a backup still being
    written is never archived). Waits for the budget's reset only lower the count; this bound is
    checked when nothing was throttled (a copy run again after a reset asks some things again).
    """
    api = [r for r in requests if r["kind"] == "api"]
    files = [r for r in requests if r["kind"] == "file"]
    served = [r for r in api if r["status"] != 503]
    throttled = [r for r in api if r["status"] == 503]
    kinds: Counter[str] = Counter()
    throttled_kinds: Counter[str] = Counter()
    for r in api:
        segments = r["path"].removesuffix(".json").split("/")  # ['', 'api', '3', 'stacks', S, 'backups', ...]
        kind = {6: "list backups", 7: "get backup", 8: "list files", 9: "signed URL"}.get(
            len(segments), "other"
        )
        (throttled_kinds if r["status"] == 503 else kinds)[kind] += 1
    released_at = state["released_at"]
    bound, minimum = 0, 0
    for group in groups:
        stack, types = group[0][0], {db_type for _, db_type in group}
        lists = [
            r["time"]
            for r in served
            if r["path"].endswith(f"/stacks/{stack}/backups.json")
            and _covers(r["query"].get("db_type"), types)
        ]
        waited = released_at - min(lists) if lists else 0.0
        bound += 1 + math.floor(waited / POKE_INTERVAL) + 2
        minimum += 1 + 1
    for backup in state["released"]:
        bound += 3 + len(backup["files"])
        minimum += 2 + len(backup["files"])  # no get: the sensor can hand the copy the whole record
    errors = [r for r in requests if r["status"] >= 400 and not (r["kind"] == "api" and r["status"] == 503)]
    span = (max(r["time"] for r in api) - min(r["time"] for r in api)) if api else 0.0
    file_count = sum(len(b["files"]) for b in state["released"])
    problems = []

    # Every request the emulator counted, by the window it counted it in.
    per_window: dict[tuple[str, float], Counter[str]] = defaultdict(Counter)
    late = []
    for answer in windows:
        outcome = "throttled" if answer["status"] == 503 else "served"
        per_window[(answer["token"], answer["window_start"])][outcome] += 1
        if outcome == "served" and answer["time"] > answer["window_start"] + settings.budget_window + 1.0:
            late.append(answer)
    over = {key: count["served"] for key, count in per_window.items() if count["served"] > settings.budget}
    if over:
        problems.append(f"the emulator served more than its budget of {settings.budget} in window(s): {over}")
    if late:
        problems.append(f"{len(late)} request(s) served in a window that had already closed: {late[:3]}")
    starts: dict[str, list[float]] = defaultdict(list)
    for token, start in per_window:
        starts[token].append(start)
    for token, opened in starts.items():
        opened.sort()
        close = [(a, b) for a, b in itertools.pairwise(opened) if b - a < settings.budget_window - 1e-3]
        if close:
            problems.append(
                f"token {token}: windows opened less than {settings.budget_window:g} s apart: {close}"
            )
    noted = sum(count["served"] for count in per_window.values())
    if noted != len(served) or sum(c["throttled"] for c in per_window.values()) != len(throttled):
        problems.append(
            f"the emulator's window notes count {noted} served requests, its request log {len(served)}"
        )
    spent = sum(1 for count in per_window.values() if count["served"] >= settings.budget)

    if errors:
        problems.append(f"{len(errors)} request(s) answered with an error status other than 503 throttled")
    if settings.throttling:
        if not throttled:
            problems.append(
                f"the emulator never throttled: the budget of {settings.budget} per {settings.budget_window:g} s "
                "was never met, so this run proves nothing about waiting for its reset"
            )
    else:
        if len(served) > bound:
            problems.append(f"{len(served)} API requests, more than the expected bound {bound}")
        if throttled:
            problems.append(f"{len(throttled)} request(s) throttled")
    return {
        "problems": problems,
        "api": len(api),
        "served": len(served),
        "throttled": len(throttled),
        "kinds": dict(kinds),
        "throttled_kinds": dict(throttled_kinds),
        "file_gets": len(files),
        "bound": bound,
        "minimum": minimum,
        "span": span,
        "windows": len(per_window),
        "spent_windows": spent,
        "busiest_window": max((c["served"] for c in per_window.values()), default=0),
        # At the DAG's default poke interval: list requests an hour while all sensors wait, and per run
        # the requests that archiving costs (get the backup, list its files, one signed URL per file).
        "waiting_hourly": math.ceil(len(groups) * 3600 / PRODUCTION_POKE_INTERVAL),
        "archiving": 2 * len(state["released"]) + file_count,
        "errors": len(errors),
    }


def _covers(query: str | None, types: set[str]) -> bool:
    """Whether a list request's ``db_type`` filter asks for any of these database types."""
    return query in (None, "", "all") or bool(set(str(query).split(",")) & types)


def worker_report(logs: Path, hostnames: Counter[str | None], settings: Settings) -> dict[str, Any]:
    """Task starts per Celery worker (each workload it executed: a try, a resumption after a deferral,
    a run after a reschedule), and the check that the DAG's task instances ran on every worker."""
    workload = re.compile(r"Executing workload in Celery: .*?dag_id='([^']+)'.*?")
    task = re.compile(r"\btask_id='([^']+)'")
    starts: dict[str, Counter[str]] = {}
    for name in settings.worker_names:
        counted: Counter[str] = Counter()
        for line in (logs / f"{name}.log").read_text(errors="replace").splitlines():
            if "Executing workload in Celery" in line:
                found = task.search(line)
                dag = workload.search(line)
                counted[f"{dag.group(1) if dag else '?'}:{found.group(1) if found else '?'}"] += 1
        starts[name] = counted
    problems = []
    idle = [name for name, counted in starts.items() if not counted]
    if idle:
        problems.append(f"Celery worker(s) {idle} executed no task")
    missing = [name for name in settings.worker_names if not hostnames.get(name)]
    if missing:
        problems.append(f"no task instance of the run has hostname {missing}: hostnames {dict(hostnames)}")
    strangers = {host: n for host, n in hostnames.items() if host not in settings.worker_names}
    if strangers:
        problems.append(f"task instances ran elsewhere than on the Celery workers: {strangers}")
    return {"problems": problems, "starts": starts, "hostnames": dict(hostnames)}


# --- helpers ---------------------------------------------------------------------------------------


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def released(path: Path) -> dict[str, Any] | None:
    state = read_json(path)
    return state if state and state["released"] else None


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - a loopback URL we built
        return bool(resp.status == 200)


def first(rows: list[tuple[Any, ...]]) -> tuple[Any, ...] | None:
    return rows[0] if rows else None


def fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def print_report(
    timings: dict[str, float],
    run_id: str,
    run_state: tuple[str, Any, Any],
    states: Counter[tuple[str, str | None]],
    deferred: list[tuple[int, Any, Any, Any]],
    fired: dict[int, int],
    budget: dict[str, Any],
    downloads: dict[str, Any],
    state: dict[str, Any],
    groups: list[list[tuple[str, str]]],
    settings: Settings,
) -> None:
    print(f"\n=== Deployment test report ({settings.executor} executor) ===")
    for name, seconds in timings.items():
        print(f"  {name:<36} {seconds:6.1f} s")
    status, start, end = run_state
    duration = f"{(end - start).total_seconds():.0f} s" if start and end else "?"
    print(
        f"DAG run {run_id}: {status} in {duration} (wall time), {settings.pairs} pairs "
        f"({settings.stacks} stacks x {settings.types_per_stack} database types) in {len(groups)} mapped groups"
    )
    for (task, task_state), count in sorted(states.items(), key=lambda item: str(item[0])):
        print(f"  {task:<26} {task_state!s:<10} x{count}")
    sizes = [b["size"] for b in state["released"]]
    split = sum(1 for b in state["released"] if len(b["files"]) > 1)
    print(
        f"Archives: {len(sizes)} ({sum(sizes):,} bytes, {split} split into parts), sha256 checked against the emulator"
    )
    print(
        f"Downloads: {downloads['bytes']:,} bytes in {downloads['ranges']} ranges, plus {downloads['probes']} "
        "one-byte size probes; no byte of a backup fetched twice"
        if not downloads["problems"]
        else f"Downloads: {downloads['bytes']:,} bytes in {downloads['ranges']} ranges; see the failures below"
    )
    print(
        f"Deferral: {sum(1 for s in deferred if s[1] == 'deferred')} of {len(groups)} sensors deferred at once, "
        f"each with a {TRIGGER_CLASS.rsplit('.', 1)[1]} claimed by triggerer job {sorted({s[3] for s in deferred})}; "
        f"{sum(fired.values())} trigger success events in the triggerer's logs, for {len(fired)} sensors"
    )
    budget_text = (
        f"budget {settings.budget} per {settings.budget_window:g} s"
        if settings.throttling
        else f"hourly budget {settings.budget}"
    )
    print(
        f"Cloud 66 API requests: {budget['served']} served in {budget['span']:.0f} s ({budget['kinds']}), "
        f"{budget['served'] / max(1, settings.pairs):.2f} per archive; {budget['throttled']} answered "
        f"503 throttled ({budget['throttled_kinds']}); {budget_text}"
    )
    print(
        f"  budget windows: {budget['windows']}, {budget['spent_windows']} of them spent; at most "
        f"{budget['busiest_window']} requests served in one (never more than {settings.budget})"
    )
    if not settings.throttling:
        print(f"  expected between {budget['minimum']} and {budget['bound']}")
    print(
        f"  file downloads (signed URLs, not API): {budget['file_gets']}; error answers: {budget['errors']}"
    )
    print(
        f"  at the DAG's default poke interval ({PRODUCTION_POKE_INTERVAL:.0f} s): {budget['waiting_hourly']} "
        f"requests an hour while the {len(groups)} sensors wait, plus {budget['archiving']} to archive them"
    )


def print_workers(workers: dict[str, Any], memory: TreeMemory, settings: Settings) -> None:
    starts: dict[str, Counter[str]] = workers["starts"]
    total: Counter[str] = sum(starts.values(), Counter())
    print(
        f"Celery: {settings.workers} workers x concurrency {settings.worker_concurrency}; "
        f"{sum(total.values())} task starts ({dict(sorted(total.items()))})"
    )
    for name in settings.worker_names:
        print(
            f"  {name}: {sum(starts[name].values())} task starts, "
            f"{workers['hostnames'].get(name, 0)} task instances of the run; peak memory of its process tree "
            f"RSS {memory.peak_rss[name] / 1024:.0f} MiB (summed), PSS {memory.peak_pss[name] / 1024:.0f} MiB, "
            f"at most {memory.peak_procs[name]} processes ({memory.samples} samples, 1 s apart); "
            f"CPU {memory.cpu_seconds[name]:.0f} s, "
            f"{memory.cpu_seconds[name] / max(1, sum(starts[name].values())):.2f} s per task start"
        )


def print_log_tails(work: Path, lines: int = 40) -> None:
    for path in sorted((work / "logs").glob("*.log")):
        text = path.read_text(errors="replace").splitlines()
        print(f"\n--- {path.name} (last {min(lines, len(text))} lines) ---")
        print("\n".join(text[-lines:]))


if __name__ == "__main__":
    sys.exit(main())

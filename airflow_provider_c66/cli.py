"""The command line for one-off work outside any DAG: ``list``, ``archive`` and ``verify``.

    c66-backups list STACK [--db-type mysql] [--limit 20] [--json]
    c66-backups archive STACK (--backup-id ID | --latest DB_TYPE) s3://BUCKET[/PREFIX]
    c66-backups verify s3://BUCKET/PREFIX/OF/AN/ARCHIVE/

(also ``python -m airflow_provider_c66``). It runs the same operators a DAG runs, with the same
guarantees (nothing partial is ever left in S3, a re-run of a complete archive copies nothing), and
reads the same Airflow connections (``--cloud66-conn-id``, ``--aws-conn-id``), or explicit
settings: ``CLOUD66_ACCESS_TOKEN`` (never a flag: flags show in ``ps`` and shell history) with
``--api-url``, and ``--endpoint-url``/``--region`` with boto3's usual credentials.

Results go to standard output; progress (a bar on a terminal, a line every few seconds otherwise)
and errors go to standard error. Exit status: 0 done, 1 failed (the message says why), 2 bad input
(nothing was sent), 130 interrupted (an upload in progress is aborted first).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from datetime import timedelta
from types import FrameType
from typing import Any, TextIO

from airflow_provider_c66.exceptions import Cloud66InputError
from airflow_provider_c66.models import DB_TYPES
from airflow_provider_c66.transfers.copy.model import CopyResult
from airflow_provider_c66.transfers.copy.observers import CopyObserver

PROG = "c66-backups"
TOKEN_ENV = "CLOUD66_ACCESS_TOKEN"  # noqa: S105 - where the token is read from, not a token
CLI_CLOUD66_CONN = "c66_cli_cloud66"
CLI_AWS_CONN = "c66_cli_aws"
MiB = 1024 * 1024
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
LATEST_MAX_PAGES = 5  # how far back --latest looks for a backup that succeeded


# The operators name their arguments; the command line names its own options for them.
OPTION_OF = {
    "stack_id": "STACK",
    "backup_id": "--backup-id",
    "s3_bucket": "destination",
    "s3_key_prefix": "destination",
    "storage_class": "--storage-class",
    "server_side_encryption": "--sse",
    "sse_kms_key_id": "--kms-key-id",
    "part_size": "--part-size-mib",
    "max_concurrency": "--max-concurrency",
    "catalog_prefix": "--catalog-prefix",
}


class CommandError(Exception):
    """A failure the command reports in one line and exits 1 for."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO" if args.verbose else "WARNING")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    if not args.verbose:
        # Libraries' deprecation notices are for their developers, not for this command's users.
        # Airflow adds its own filters when imported, so it is imported first.
        import airflow  # noqa: F401

        warnings.simplefilter("ignore")
    # Results go to standard output and nothing else does: whatever Airflow or a library prints or
    # logs there while the command runs goes to standard error.
    args.out = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            connections(args)
            result: int = args.run(args)
        return result
    except Cloud66InputError as exc:
        print(f"{PROG}: error: {OPTION_OF.get(exc.field, exc.field)}: {exc.problem}", file=sys.stderr)
        return EXIT_USAGE
    except Interrupted as exc:
        print(f"{PROG}: interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # reported in one line; -v shows the traceback
        if args.verbose:
            logging.exception("%s failed", args.command)
        print(f"{PROG}: {args.command} failed: {exc or type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    # The connection options go with each command, so they read naturally after it.
    common = argparse.ArgumentParser(add_help=False)
    options = common.add_argument_group("connections")
    options.add_argument(
        "--cloud66-conn-id", default="cloud66_default", help="Airflow connection (cloud66_default)"
    )
    options.add_argument("--api-url", help=f"Cloud 66 API URL, with the token in ${TOKEN_ENV} (not a flag)")
    options.add_argument(
        "--aws-conn-id", default="aws_default", help="Airflow connection for S3 (aws_default)"
    )
    options.add_argument(
        "--endpoint-url", help="S3 endpoint of an S3-compatible store (credentials: boto3's)"
    )
    options.add_argument("--region", help="S3 region (credentials: boto3's)")
    common.add_argument("-v", "--verbose", action="store_true", help="log what the operators log")
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Cloud 66 database backups: list them, archive one to S3, verify an archive.",
        epilog=f"Explicit Cloud 66 settings: set {TOKEN_ENV} (and --api-url for another API host). "
        "Exit status: 0 done, 1 failed, 2 bad input, 130 interrupted.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", parents=[common], help="backups of a stack, newest first")
    listing.add_argument("stack_id", metavar="STACK")
    listing.add_argument("--db-type", choices=DB_TYPES)
    listing.add_argument("--limit", type=int, default=20, help="at most this many (20)")
    listing.add_argument("--json", action="store_true", help="one JSON record per line, as the API writes it")
    listing.set_defaults(run=run_list)

    copy = commands.add_parser(
        "archive", parents=[common], help="copy one backup into S3, verified, with its manifest"
    )
    copy.add_argument("stack_id", metavar="STACK")
    which = copy.add_mutually_exclusive_group(required=True)
    which.add_argument("--backup-id", help="this backup")
    which.add_argument(
        "--latest", choices=DB_TYPES, metavar="DB_TYPE", help="the newest good backup of a type"
    )
    copy.add_argument("--database", help="with --latest: only backups of this database")
    copy.add_argument(
        "destination",
        metavar="s3://BUCKET[/PREFIX]",
        help="the archive goes under PREFIX/<stack>/<db type>/<database>/<YYYY>/<MM>/<DD>/<backup id>/ "
        "(PREFIX defaults to cloud66; a PREFIX with {placeholders} is used as the whole key prefix)",
    )
    copy.add_argument("--split", action="store_true", help="one object per backup file instead of one joined")
    copy.add_argument("--replace", action="store_true", help="overwrite objects this package did not write")
    copy.add_argument("--storage-class", help="e.g. STANDARD_IA, GLACIER_IR, DEEP_ARCHIVE")
    copy.add_argument("--sse", help="server-side encryption: AES256 or aws:kms")
    copy.add_argument("--kms-key-id", help="the KMS key, with --sse aws:kms")
    copy.add_argument("--part-size-mib", type=int, default=8, help="MiB per multipart part (8)")
    copy.add_argument("--max-concurrency", type=int, default=4, help="parts in flight (4)")
    copy.add_argument("--catalog-prefix", default="cloud66/_catalog/", help="where the catalogue record goes")
    copy.add_argument("--no-catalog", action="store_true", help="write no catalogue record")
    copy.add_argument(
        "--progress-interval", type=float, default=5.0, help="seconds between plain progress lines"
    )
    copy.set_defaults(run=run_archive)

    check = commands.add_parser(
        "verify", parents=[common], help="read an archive back and check it against its manifest"
    )
    check.add_argument(
        "archive", metavar="s3://BUCKET/PREFIX/", help="the archive's prefix, manifest or an object"
    )
    check.set_defaults(run=run_verify)
    return parser


def connections(args: argparse.Namespace) -> None:
    """Explicit settings become connections of this process only, so every path reads them alike;
    a named connection found only in Airflow's metadata database is made visible the same way."""
    token = os.environ.get(TOKEN_ENV)
    if args.api_url and not token:
        raise Cloud66InputError("--api-url", f"needs the API token in the {TOKEN_ENV} environment variable")
    if token:
        fields = {
            "conn_type": "cloud66",
            "password": token,
            **({"host": args.api_url} if args.api_url else {}),
        }
        os.environ[f"AIRFLOW_CONN_{CLI_CLOUD66_CONN.upper()}"] = json.dumps(fields)
        args.cloud66_conn_id = CLI_CLOUD66_CONN
    if args.endpoint_url or args.region:
        extra = {"endpoint_url": args.endpoint_url, "region_name": args.region}
        fields = {"conn_type": "aws", "extra": {k: v for k, v in extra.items() if v}}
        os.environ[f"AIRFLOW_CONN_{CLI_AWS_CONN.upper()}"] = json.dumps(fields)
        args.aws_conn_id = CLI_AWS_CONN
    for conn_id in {args.cloud66_conn_id, args.aws_conn_id} - {CLI_CLOUD66_CONN, CLI_AWS_CONN}:
        from_metadata_db(conn_id)


def from_metadata_db(conn_id: str) -> None:
    """Outside a task, Airflow 3's hooks see environment variables and secrets backends but not the
    metadata database, where the UI and ``airflow connections add`` keep connections: a connection
    found only there is handed to this process as an ``AIRFLOW_CONN_*`` variable."""
    from airflow.providers.common.compat.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except Exception:  # not visible outside a task: look in the metadata database
        try:
            from airflow.models.connection import Connection

            found = Connection.get_connection_from_secrets(conn_id)
        except Exception:  # not there either: the command's own lookup says so, in its terms
            return
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = found.as_json()


# --- list ---------------------------------------------------------------------------------------
def run_list(args: argparse.Namespace) -> int:
    from airflow_provider_c66 import validation
    from airflow_provider_c66.hooks.cloud66 import Cloud66Hook

    stack = validation.stack_id(args.stack_id)
    limit = validation.positive_int(args.limit, "--limit", maximum=10_000)
    hook = Cloud66Hook(args.cloud66_conn_id)
    backups = hook.latest_backups(
        stack, db_type=args.db_type, read_on=lambda got: len(got) < limit, max_pages=10_000
    )[:limit]
    if args.json:
        for backup in backups:
            print(json.dumps(backup.to_dict(), sort_keys=True), file=args.out)
        return EXIT_OK
    rows = [
        (
            str(b.id),
            b.backup_date.strftime("%Y-%m-%d %H:%M:%S"),
            b.db_type,
            b.database_name,
            b.status.name.lower(),
            f"{b.backup_size / MiB:.1f} MiB",
        )
        for b in backups
    ]
    print_table(args.out, ("id", "date (UTC)", "db type", "database", "status", "size"), rows, right={0, 5})
    if not backups:
        kind = f" of type {args.db_type}" if args.db_type else ""
        print(f"No backups of stack {stack!r}{kind}.", file=args.out)
    return EXIT_OK


# --- archive ------------------------------------------------------------------------------------
def run_archive(args: argparse.Namespace) -> int:
    from airflow_provider_c66 import validation
    from airflow_provider_c66.transfers import archive

    stack = validation.stack_id(args.stack_id)
    bucket, prefix = split_s3_uri(args.destination, "destination")
    key_prefix = archive_prefix(prefix)
    archive.check_prefix_template(key_prefix, "destination")
    if args.database is not None and args.latest is None:
        raise Cloud66InputError("--database", "goes with --latest")
    catalog = None if args.no_catalog else args.catalog_prefix
    operator = _archive_operator(
        stack_id=stack,
        backup_id=args.backup_id if args.latest is None else 1,  # --latest: a valid id until one is chosen
        s3_bucket=bucket,
        s3_key_prefix=key_prefix,
        aws_conn_id=args.aws_conn_id,
        cloud66_conn_id=args.cloud66_conn_id,
        join_parts=not args.split,
        replace=args.replace,
        storage_class=args.storage_class,
        server_side_encryption=args.sse,
        sse_kms_key_id=args.kms_key_id,
        part_size=validation.positive_int(args.part_size_mib, "--part-size-mib", maximum=5 * 1024) * MiB,
        max_concurrency=args.max_concurrency,
        catalog_prefix=catalog,
        progress=Progress(sys.stderr, interval=args.progress_interval),
    )
    operator._validated()  # every argument checked before the first request
    if args.latest is not None:
        operator.backup_id = latest_backup(args, stack).id
    with StopOnSignals(operator):
        uris: list[str] = execute(operator)
    for uri in uris:
        print(uri, file=args.out)
    return EXIT_OK


def archive_prefix(prefix: str) -> str:
    """The operator's key prefix template for what the user typed after the bucket."""
    from airflow_provider_c66.transfers import archive

    if "{" in prefix:
        return prefix if prefix.endswith("/") else prefix + "/"
    root = prefix.strip("/") or "cloud66"
    return root + "/" + archive.DEFAULT_KEY_PREFIX.removeprefix("cloud66/")


def latest_backup(args: argparse.Namespace, stack: str) -> Any:
    """The newest backup of the type (and database) that succeeded; says so when a newer one failed."""
    from airflow_provider_c66 import validation
    from airflow_provider_c66.hooks.cloud66 import Cloud66Hook

    database = None if args.database is None else validation.non_empty_str(args.database, "--database")

    def wanted(backup: Any) -> bool:
        return database is None or backup.database_name == database

    def good(got: list[Any]) -> bool:
        return not any(b.succeeded and wanted(b) for b in got)

    hook = Cloud66Hook(args.cloud66_conn_id)
    backups = [
        b
        for b in hook.latest_backups(stack, db_type=args.latest, read_on=good, max_pages=LATEST_MAX_PAGES)
        if wanted(b)
    ]
    chosen = next((b for b in backups if b.succeeded), None)
    what = f"{args.latest} backup" + (f" of database {database!r}" if database else "")
    if chosen is None:
        raise CommandError(f"stack {stack!r} has no {what} that succeeded among its newest ones")
    for newer in backups[: backups.index(chosen)]:
        print(
            f"Skipping backup {newer.id} ({newer.backup_date:%Y-%m-%d %H:%M} UTC): "
            f"{newer.status.name.lower()}{': ' + newer.result if newer.result else ''}",
            file=sys.stderr,
        )
    print(
        f"Archiving {what} {chosen.id} of {stack} ({chosen.database_name}, "
        f"{chosen.backup_date:%Y-%m-%d %H:%M} UTC)",
        file=sys.stderr,
    )
    return chosen


def _archive_operator(*, progress: CopyObserver, **kwargs: Any) -> Any:
    """The DAG's own archive operator, outside any DAG: no asset events, progress drawn here."""
    from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator

    class CommandLineArchive(Cloud66BackupToS3Operator):  # type: ignore[misc]
        def copy_observers(self) -> list[CopyObserver]:
            return [progress]

    return CommandLineArchive(task_id="c66_backups_archive", asset_alias=None, retries=0, **kwargs)


# --- verify -------------------------------------------------------------------------------------
def run_verify(args: argparse.Namespace) -> int:
    from airflow_provider_c66.transfers.verify_archive import Cloud66ArchiveVerifyOperator, locate

    locate(args.archive, "archive")
    operator = Cloud66ArchiveVerifyOperator(
        task_id="c66_backups_verify", archive=args.archive, aws_conn_id=args.aws_conn_id
    )
    result = execute(operator)
    for uri, digest in result["sha256"].items():
        print(f"ok  {uri}  sha256 {digest}", file=args.out)
    print(
        f"Verified {result['objects']} object(s), {result['bytes']:,} bytes, against {result['manifest']}",
        file=args.out,
    )
    return EXIT_OK


# --- helpers ------------------------------------------------------------------------------------
def execute(operator: Any) -> Any:
    """An operator's ``execute`` called as Airflow's task runner calls it (with the safeguard's token,
    which otherwise warns that it runs outside a task), with an empty context: no asset events, no
    task state store, so a failed copy aborts its upload."""
    try:
        from airflow.sdk.bases.operator import ExecutorSafeguard
    except ImportError:  # a release without the safeguard
        return operator.execute({})
    token = {f"{type(operator).__name__}__sentinel": ExecutorSafeguard.sentinel_value}
    return operator.execute({}, **token)


def split_s3_uri(value: str, field: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket[/prefix]``; the prefix may be empty."""
    from airflow_provider_c66 import validation

    if not value.startswith("s3://"):
        raise Cloud66InputError(field, f"must be s3://BUCKET[/PREFIX], got {value!r:.80}")
    bucket, _, prefix = value[len("s3://") :].partition("/")
    validation.bucket_name(bucket, field)
    if prefix.startswith("/") or any(part in (".", "..") for part in prefix.split("/")):
        raise Cloud66InputError(field, f"must not hold empty, '.' or '..' path segments, got {value!r:.80}")
    return bucket, prefix


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped the command; what was in flight was cleaned up."""


class StopOnSignals:
    """SIGINT and SIGTERM stop the operator as Airflow's ``on_kill`` would: the copy aborts its upload."""

    def __init__(self, operator: Any) -> None:
        self.operator = operator
        self.signalled: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, number: int, frame: FrameType | None) -> None:
        self.signalled = signal.Signals(number).name
        self.operator.on_kill()

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        if self.signalled is not None and kind is not None:
            raise Interrupted(
                f"{self.signalled}; the upload in progress was aborted, nothing partial is left in S3"
            ) from value


class Progress(CopyObserver):
    """What a copy has done, drawn as a bar on a terminal and as plain lines every ``interval``
    seconds otherwise (a log, a pipe, CI)."""

    BAR = 24

    def __init__(self, stream: TextIO, *, interval: float = 5.0, clock: Any = time.monotonic) -> None:
        self.stream, self.interval, self.clock = stream, interval, clock
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.name, self.total, self.done = "", 0, 0
        self.started = self._drawn = 0.0
        self._lock = threading.Lock()

    def copy_started(self, target: str, size: int, part_sizes: Sequence[int]) -> None:
        with self._lock:
            self.name, self.total, self.done = target.rsplit("/", 1)[-1], size, 0
            self.started = self._drawn = self.clock()
            if self.tty:
                self._draw(self.started)

    def bytes_read(self, count: int) -> None:
        with self._lock:
            self.done += count
            now = self.clock()
            if now - self._drawn >= (0.2 if self.tty else self.interval):
                self._drawn = now
                self._draw(now)

    def copy_finished(self, result: CopyResult, seconds: float) -> None:
        with self._lock:
            rate = result.size / MiB / max(seconds, 1e-9)
            if self.tty:
                self.done = self.total
                self._draw(self.started + seconds)
                self.stream.write("\n")
            self.stream.write(
                f"{self.name}: {result.size / MiB:.1f} MiB in {seconds:.1f} s ({rate:.1f} MiB/s), "
                f"sha256 {result.sha256}\n"
            )
            self.stream.flush()

    def line(self, now: float) -> str:
        """bytes done of total, percent, MiB/s and ETA; done is capped at the total (a retried range
        is read twice)."""
        done = min(self.done, self.total)
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        eta = str(timedelta(seconds=round((self.total - done) / rate))) if rate > 0 else "--:--:--"
        percent = 100 * done / self.total if self.total else 100.0
        figures = f"{done / MiB:.1f}/{self.total / MiB:.1f} MiB  {rate / MiB:.1f} MiB/s  ETA {eta}"
        if not self.tty:
            return f"{self.name}: {percent:.0f}%  {figures}"
        filled = round(self.BAR * percent / 100)
        return f"{self.name}  [{'#' * filled}{'.' * (self.BAR - filled)}] {percent:3.0f}%  {figures}"

    def _draw(self, now: float) -> None:
        self.stream.write(("\r" + self.line(now) + "\x1b[K") if self.tty else self.line(now) + "\n")
        self.stream.flush()


def print_table(
    out: TextIO, header: Sequence[str], rows: Sequence[Sequence[str]], *, right: set[int]
) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    for cells in (header, *rows):
        print(
            "  ".join(
                cell.rjust(width) if index in right else cell.ljust(width)
                for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
            ).rstrip(),
            file=out,
        )


if __name__ == "__main__":
    sys.exit(main())

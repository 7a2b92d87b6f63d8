"""Hostile and bad input: refused before any request, with a message naming the argument.

One table (``BAD``) is the home of every refused argument: every operator, the sensor, the transfer
operators, the trigger (whose constructor refuses) and the hook's methods. Each row ends in a
``Cloud66InputError`` naming its field, with no request to Cloud 66, no call to S3 and nothing in
the bucket; a row with a ``message`` also checks the error's wording. The operators and the sensor
that can wait in the triggerer run some rows twice, the second time with ``deferrable=True``. A few
rows render Jinja that comes out empty, ``"None"`` or a bad value the way Airflow does: through the
operator's ``render_template_fields`` with a context, or through a real ``dag.test()`` run.

Pure parsers with their own unit tests (``airflow_provider_c66.validation``, the retention policy,
the key layout, the targets) stay with those tests, and so do a connection's settings (no token, a
bad API URL) and refusals that must ask S3 first; this table drives the arguments of the entry points.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_c66.exceptions import Cloud66InputError
from airflow_provider_c66.hooks.cloud66 import Cloud66Hook
from airflow_provider_c66.operators.backups import Cloud66CreateBackupOperator, Cloud66ImportBackupOperator
from airflow_provider_c66.sensors.backups import Cloud66BackupSensor
from airflow_provider_c66.testing.emulator import Cloud66Emulator
from airflow_provider_c66.testing.pytest_plugin import connection_json
from airflow_provider_c66.transfers import archive
from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator
from airflow_provider_c66.transfers.prune_archives import Cloud66ArchivePruneOperator
from airflow_provider_c66.transfers.s3_to_cloud66 import S3ToCloud66ImportOperator
from airflow_provider_c66.triggers.backups import Cloud66BackupTrigger
from tests.s3_fixtures import catalogue_key

RUN = datetime(2026, 5, 1, tzinfo=UTC)
SIGNED_URL = "https://backups.example.com/dumps/app_db.tar?X-Amz-Signature=0123abcd"
BUCKET = "{bucket}"  # replaced by the test's bucket

OPERATORS: dict[str, tuple[type, dict[str, Any]]] = {
    "create": (Cloud66CreateBackupOperator, {"stack_id": "stack-1", "wait_for_completion": True}),
    "import": (
        Cloud66ImportBackupOperator,
        {"stack_id": "stack-1", "group": 1, "db_type": "mysql", "remote_url": SIGNED_URL},
    ),
    "sensor": (Cloud66BackupSensor, {"stack_id": "stack-1", "db_type": "mysql"}),
    "transfer": (Cloud66BackupToS3Operator, {"stack_id": "stack-1", "backup_id": 1, "s3_bucket": BUCKET}),
    "restore": (
        S3ToCloud66ImportOperator,
        {"s3_bucket": BUCKET, "s3_key": "k.tar", "stack_id": "stack-1", "group": 1, "db_type": "mysql"},
    ),
    "prune": (Cloud66ArchivePruneOperator, {"s3_bucket": BUCKET, "keep_daily": 7}),
}
TRIGGER: dict[str, Any] = {  # the trigger's arguments; its constructor refuses
    "stack_id": "stack-1",
    "marks": {"*": {"newer_than": None, "after_id": None}},
    "end_time": RUN.timestamp() + 3600,
}
NAMES = {
    "create": "Cloud66CreateBackupOperator",
    "import": "Cloud66ImportBackupOperator",
    "sensor": "Cloud66BackupSensor",
    "transfer": "Cloud66BackupToS3Operator",
    "restore": "S3ToCloud66ImportOperator",
    "prune": "Cloud66ArchivePruneOperator",
    "trigger": "Cloud66BackupTrigger",
}


@dataclass(frozen=True)
class Bad:
    """One bad input: what receives it, the arguments, the field the error must name.

    ``render``: None (plain arguments), "context" (``render_template_fields`` with a context) or
    "dag" (a real ``dag.test()`` run). ``params`` are the run's params for the templates.
    ``message``: None, or text the error's message must contain (beyond naming the field).
    """

    case_id: str
    target: str  # an operator key of OPERATORS, "trigger", or "hook.<method>"
    kwargs: dict[str, Any]
    field: str
    what: str
    args: tuple[Any, ...] = ()
    render: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    message: str | None = None

    @property
    def fault(self) -> str:
        where = NAMES.get(self.target) or f"Cloud66Hook.{self.target.split('.', 1)[1]}()"
        how = {
            None: "",
            "context": " (Jinja rendered with a context)",
            "dag": " (Jinja rendered in dag.test())",
        }
        what = re.sub(r"'([^']+)'", r"`\1`", self.what)  # literal values as code in the table
        return f"{where} `{self.field}`: {what}{how[self.render]}"


def bad(case_id: str, target: str, field: str, what: str, **kwargs: Any) -> Any:
    """A row; ``args``, ``render``, ``params`` and ``message`` go to :class:`Bad`, the rest are kwargs."""
    args = kwargs.pop("args", ())
    render = kwargs.pop("render", None)
    params = kwargs.pop("params", {})
    message = kwargs.pop("message", None)
    case = Bad(case_id, target, kwargs, field, what, args, render, params, message)
    mark = pytest.mark.reliability(area="bad input", fault=case.fault, outcome="refused before any request")
    return pytest.param(case, id=case_id, marks=mark)


def both_modes(case_id: str, target: str, field: str, what: str, **kwargs: Any) -> list[Any]:
    """The row as given, and again with ``deferrable=True`` (id ``<case_id>-deferrable``)."""
    return [
        bad(case_id, target, field, what, **kwargs),
        bad(f"{case_id}-deferrable", target, field, what, deferrable=True, **kwargs),
    ]


BAD = [
    # Cloud66CreateBackupOperator
    bad("create-stack-int", "create", "stack_id", "wrong type (int)", stack_id=123),
    bad("create-stack-empty", "create", "stack_id", "empty string", stack_id=""),
    bad("create-stack-traversal", "create", "stack_id", "path traversal '../other'", stack_id="../other"),
    *both_modes("create-stack-slash", "create", "stack_id", "a slash 'x/y'", stack_id="x/y"),
    *both_modes("create-db-unknown", "create", "db_type", "unknown db type 'oracle'", db_type="oracle"),
    bad("create-db-list", "create", "db_type", "a list with an unknown type", db_type=["mysql", "sqlite"]),
    *both_modes(
        "create-db-list-all", "create", "db_type", "a list mixing 'all' with a type", db_type=["all", "mysql"]
    ),
    bad("create-db-empty", "create", "db_type", "empty string", db_type=""),
    bad("create-cron-6", "create", "frequency", "6-field cron '0 0 * * * *'", frequency="0 0 * * * *"),
    bad("create-cron-macro", "create", "frequency", "cron macro '@daily'", frequency="@daily"),
    bad("create-cron-step0", "create", "frequency", "cron step 0 '*/0 * * * *'", frequency="*/0 * * * *"),
    *both_modes(
        "create-cron-words", "create", "frequency", "not a cron ('every hour')", frequency="every hour"
    ),
    *both_modes(
        "create-cron-minute-61",
        "create",
        "frequency",
        "minute out of range '61 * * * *'",
        frequency="61 * * * *",
    ),
    bad("create-keep-huge", "create", "keep_count", "huge (10**9)", keep_count=10**9),
    bad("create-keep-2e63", "create", "keep_count", "huge (2**63)", keep_count=2**63),
    bad("create-keep-negative", "create", "keep_count", "negative", keep_count=-1),
    bad("create-keep-bool", "create", "keep_count", "wrong type (bool)", keep_count=True),
    *both_modes("create-keep-zero", "create", "keep_count", "zero", keep_count=0),
    *both_modes("create-gzip", "create", "gzip", "not a boolean ('maybe')", gzip="maybe"),
    bad(
        "create-tables-type", "create", "excluded_tables", "wrong type in the list", excluded_tables=["a", 5]
    ),
    bad("create-tables-ctrl", "create", "excluded_tables", "control character", excluded_tables="a\nb"),
    bad("create-tables-number", "create", "excluded_tables", "not a list or text (5)", excluded_tables=5),
    *both_modes(
        "create-tables-space", "create", "excluded_tables", "a space in a table name", excluded_tables=["a b"]
    ),
    bad("create-replica", "create", "run_on_replica_server", "not a boolean (2)", run_on_replica_server=2),
    *both_modes(
        "create-replica-text",
        "create",
        "run_on_replica_server",
        "not a boolean ('perhaps')",
        run_on_replica_server="perhaps",
    ),
    bad("create-poll-zero", "create", "poll_interval", "zero", poll_interval=0),
    *both_modes("create-poll-zero-text", "create", "poll_interval", "zero as text ('0')", poll_interval="0"),
    *both_modes("create-timeout-text", "create", "timeout", "not a number ('soon')", timeout="soon"),
    bad("create-wait-text", "create", "wait_for_completion", "not a boolean", wait_for_completion="often"),
    *both_modes(
        "create-wait-yes",
        "create",
        "wait_for_completion",
        "a yes/no word ('yes'), not a boolean",
        wait_for_completion="yes",
    ),
    bad(
        "create-cron-jinja-empty",
        "create",
        "frequency",
        "renders to an empty string",
        frequency="{{ params.cron }}",
        params={"cron": ""},
        render="context",
    ),
    bad(
        "create-keep-jinja-empty",
        "create",
        "keep_count",
        "renders to an empty string",
        keep_count="{{ params.keep }}",
        params={"keep": ""},
        render="dag",
    ),
    # Cloud66ImportBackupOperator
    bad(
        "import-url-10", "import", "remote_url", "private address 10.x", remote_url="https://10.1.2.3/db.tar"
    ),
    bad(
        "import-url-192",
        "import",
        "remote_url",
        "private address 192.168.x",
        remote_url="https://192.168.0.10/db.tar",
    ),
    bad(
        "import-url-169",
        "import",
        "remote_url",
        "link-local metadata address 169.254.169.254",
        remote_url="https://169.254.169.254/latest/meta-data/",
    ),
    bad(
        "import-url-ula",
        "import",
        "remote_url",
        "private IPv6 fd00::1",
        remote_url="https://[fd00::1]/db.tar",
    ),
    bad(
        "import-url-http",
        "import",
        "remote_url",
        "plain http",
        remote_url="http://backups.example.com/db.tar",
    ),
    bad(
        "import-url-ftp", "import", "remote_url", "ftp scheme", remote_url="ftp://backups.example.com/db.tar"
    ),
    bad("import-url-file", "import", "remote_url", "file scheme", remote_url="file:///etc/passwd"),
    bad("import-url-empty", "import", "remote_url", "empty string", remote_url=""),
    bad("import-url-none", "import", "remote_url", "wrong type (None)", remote_url=None),
    bad("import-group-text", "import", "group", "not an integer ('abc')", group="abc"),
    bad("import-group-zero", "import", "group", "zero", group=0),
    bad("import-db-all", "import", "db_type", "'all' (an import is one type)", db_type="all"),
    bad("import-timeout-negative", "import", "timeout", "negative", timeout=-5),
    bad(
        "import-url-jinja-empty",
        "import",
        "remote_url",
        "renders to an empty string",
        remote_url="{{ params.url }}",
        params={"url": ""},
        render="context",
    ),
    bad(
        "import-db-jinja-empty",
        "import",
        "db_type",
        "renders to an empty string (a missing dag_run.conf key)",
        db_type="{{ dag_run.conf.get('db_type', '') }}",
        render="context",
    ),
    bad(
        "import-url-jinja-http",
        "import",
        "remote_url",
        "renders to a plain-http URL",
        remote_url="{{ params.url }}",
        params={"url": "http://attacker.example/db.tar"},
        render="dag",
    ),
    # Cloud66BackupSensor
    bad("sensor-stack-none", "sensor", "stack_id", "wrong type (None)", stack_id=None),
    *both_modes(
        "sensor-stack-space-slash", "sensor", "stack_id", "a space and a slash", stack_id="no such/stack"
    ),
    *both_modes("sensor-db-unknown", "sensor", "db_type", "unknown db type 'postgres'", db_type="postgres"),
    bad("sensor-group-negative", "sensor", "group", "negative", group=-1),
    *both_modes("sensor-group-zero-text", "sensor", "group", "zero as text ('0')", group="0"),
    bad("sensor-database-empty", "sensor", "database_name", "empty string", database_name=""),
    *both_modes("sensor-database-blank", "sensor", "database_name", "only a space", database_name=" "),
    *both_modes(
        "sensor-newer-text", "sensor", "newer_than", "not a timestamp ('yesterday')", newer_than="yesterday"
    ),
    *both_modes(
        "sensor-newer-and-after",
        "sensor",
        "newer_than",
        "set together with after_backup_id",
        newer_than="2026-01-01T00:00:00Z",
        after_backup_id=4,
    ),
    bad(
        "sensor-newer-overflow",
        "sensor",
        "newer_than",
        "out-of-range timestamp '0001-01-01T00:00:00+01:00'",
        newer_than="0001-01-01T00:00:00+01:00",
    ),
    bad(
        "sensor-after-traversal", "sensor", "after_backup_id", "path traversal '../7'", after_backup_id="../7"
    ),
    *both_modes(
        "sensor-after-negative-text",
        "sensor",
        "after_backup_id",
        "negative as text ('-3')",
        after_backup_id="-3",
    ),
    *both_modes(
        "sensor-fail-flag", "sensor", "fail_on_failed_backup", "not a boolean", fail_on_failed_backup="maybe"
    ),
    bad(
        "sensor-stack-jinja-empty",
        "sensor",
        "stack_id",
        "renders to an empty string",
        stack_id="{{ params.stack }}",
        params={"stack": ""},
        render="context",
    ),
    bad(
        "sensor-db-jinja-empty",
        "sensor",
        "db_type",
        "renders to an empty string (a missing dag_run.conf key)",
        db_type="{{ dag_run.conf.get('db_type', '') }}",
        render="dag",
    ),
    bad(
        "sensor-db-jinja-unknown",
        "sensor",
        "db_type",
        "renders to an unknown db type 'oracle'",
        db_type="{{ params.kind }}",
        params={"kind": "oracle"},
        render="dag",
    ),
    bad(
        "sensor-db-type-list",
        "sensor",
        "db_type",
        "a list with a type the API does not know",
        db_type=["mysql", "oracle"],
        message="must be one or more of mysql",
    ),
    bad(
        "sensor-db-type-list-all",
        "sensor",
        "db_type",
        "a list with 'all'",
        db_type=["mysql", "all"],
        message="must be one or more of mysql",
    ),
    bad(
        "sensor-db-type-list-empty",
        "sensor",
        "db_type",
        "an empty list",
        db_type=[],
        message="must be one or more of mysql",
    ),
    # Cloud66BackupToS3Operator
    bad("transfer-backup-none", "transfer", "backup_id", "wrong type (None)", backup_id=None),
    bad("transfer-backup-text", "transfer", "backup_id", "not an integer ('12abc')", backup_id="12abc"),
    bad("transfer-backup-dict", "transfer", "backup_id", "a record with a negative id", backup_id={"id": -4}),
    bad("transfer-backup-list", "transfer", "backup_id", "a list holding a non-id", backup_id=[1, "x"]),
    bad(
        "transfer-backup-empty-list",
        "transfer",
        "backup_id",
        "an empty list",
        backup_id=[],
        message="is an empty list",
    ),
    bad(
        "transfer-backup-list-twice",
        "transfer",
        "backup_id",
        "a list naming one backup twice",
        backup_id=[3, {"id": 3}],
        message="names a backup twice",
    ),
    bad("transfer-backup-zero", "transfer", "backup_id", "zero", backup_id=0),
    bad("transfer-backup-dict-zero", "transfer", "backup_id", "a record with id zero", backup_id={"id": 0}),
    bad(
        "transfer-backup-dict-no-id",
        "transfer",
        "backup_id",
        "a record without an id",
        backup_id={"backup": 3},
    ),
    bad("transfer-stack-empty", "transfer", "stack_id", "empty string", stack_id=""),
    bad("transfer-bucket-empty", "transfer", "s3_bucket", "empty string", s3_bucket=""),
    bad(
        "transfer-bucket-traversal",
        "transfer",
        "s3_bucket",
        "path traversal '../bucket'",
        s3_bucket="../bucket",
    ),
    bad(
        "transfer-bucket-upper",
        "transfer",
        "s3_bucket",
        "not a bucket name ('My_Bucket')",
        s3_bucket="My_Bucket",
    ),
    bad(
        "transfer-prefix-up",
        "transfer",
        "s3_key_prefix",
        "path traversal '../escape/'",
        s3_key_prefix="../escape/",
    ),
    bad(
        "transfer-prefix-inner-up",
        "transfer",
        "s3_key_prefix",
        "path traversal 'archive/../../other/'",
        s3_key_prefix="archive/../../other/",
    ),
    bad(
        "transfer-prefix-absolute", "transfer", "s3_key_prefix", "absolute key '/abs/'", s3_key_prefix="/abs/"
    ),
    bad("transfer-prefix-dot", "transfer", "s3_key_prefix", "'.' segment", s3_key_prefix="a/./b/"),
    bad(
        "transfer-prefix-empty-seg",
        "transfer",
        "s3_key_prefix",
        "empty segment 'a//b/'",
        s3_key_prefix="a//b/",
    ),
    bad(
        "transfer-prefix-nul",
        "transfer",
        "s3_key_prefix",
        "control character (NUL)",
        s3_key_prefix="a/\x00/b/",
    ),
    bad(
        "transfer-prefix-backslash",
        "transfer",
        "s3_key_prefix",
        "backslashes 'a\\..\\b'",
        s3_key_prefix="a\\..\\b/",
    ),
    bad(
        "transfer-prefix-placeholder",
        "transfer",
        "s3_key_prefix",
        "unknown placeholder '{password}'",
        s3_key_prefix="{stack_id}/{password}/",
    ),
    bad("transfer-prefix-int", "transfer", "s3_key_prefix", "wrong type (int)", s3_key_prefix=42),
    bad("transfer-retry-budget-zero", "transfer", "retry_budget", "zero seconds", retry_budget=0),
    bad("transfer-retry-budget-huge", "transfer", "retry_budget", "over an hour", retry_budget=7200),
    bad(
        "transfer-prefix-no-backup-id",
        "transfer",
        "s3_key_prefix",
        "no {backup_id}: two backups would share keys",
        s3_key_prefix="lake/{stack_id}/{YYYY}/",
    ),
    bad(
        "transfer-lock-mode",
        "transfer",
        "object_lock_mode",
        "unknown mode 'FOREVER'",
        object_lock_mode="FOREVER",
        object_lock_retain_days=1,
    ),
    bad(
        "transfer-lock-no-mode",
        "transfer",
        "object_lock_mode",
        "a retention without a mode",
        object_lock_retain_days=30,
    ),
    bad(
        "transfer-lock-no-retention",
        "transfer",
        "object_lock_retain_days",
        "a mode without a retention",
        object_lock_mode="COMPLIANCE",
    ),
    bad(
        "transfer-lock-both",
        "transfer",
        "object_lock_retain_days",
        "both retain_days and retain_until",
        object_lock_mode="GOVERNANCE",
        object_lock_retain_days=1,
        object_lock_retain_until="2099-01-01T00:00:00Z",
    ),
    bad(
        "transfer-lock-days-zero",
        "transfer",
        "object_lock_retain_days",
        "zero days",
        object_lock_mode="GOVERNANCE",
        object_lock_retain_days=0,
    ),
    bad(
        "transfer-lock-until-past",
        "transfer",
        "object_lock_retain_until",
        "a date in the past",
        object_lock_mode="GOVERNANCE",
        object_lock_retain_until="2020-01-01T00:00:00Z",
    ),
    bad(
        "transfer-lock-until-naive",
        "transfer",
        "object_lock_retain_until",
        "a naive datetime",
        object_lock_mode="GOVERNANCE",
        object_lock_retain_until=datetime(2099, 1, 1),
    ),
    bad(
        "transfer-lock-hold",
        "transfer",
        "object_lock_legal_hold",
        "not a boolean ('yes')",
        object_lock_legal_hold="yes",
    ),
    bad("transfer-part-text", "transfer", "part_size", "not an integer ('big')", part_size="big"),
    bad("transfer-part-huge", "transfer", "part_size", "over 5 GiB", part_size=6 * 1024**3),
    bad("transfer-part-small", "transfer", "part_size", "under 5 MiB (1024)", part_size=1024),
    bad("transfer-concurrency", "transfer", "max_concurrency", "huge (1000)", max_concurrency=1000),
    bad("transfer-concurrency-zero", "transfer", "max_concurrency", "zero", max_concurrency=0),
    bad("transfer-storage", "transfer", "storage_class", "unknown ('COLDEST')", storage_class="COLDEST"),
    bad(
        "transfer-sse-unknown",
        "transfer",
        "server_side_encryption",
        "unknown ('rot13')",
        server_side_encryption="rot13",
    ),
    bad(
        "transfer-kms-without-sse",
        "transfer",
        "sse_kms_key_id",
        "a KMS key without server_side_encryption='aws:kms'",
        sse_kms_key_id="k",
    ),
    bad("transfer-tags-text", "transfer", "tags", "wrong type (a string)", tags="team=data"),
    bad("transfer-tags-value-int", "transfer", "tags", "a value that is not text", tags={"a": 1}),
    bad(
        "transfer-catalog-placeholder",
        "transfer",
        "catalog_prefix",
        "a placeholder 'cloud66/{stack_id}/'",
        catalog_prefix="cloud66/{stack_id}/",
        message="takes no placeholders",
    ),
    bad(
        "transfer-catalog-absolute",
        "transfer",
        "catalog_prefix",
        "absolute key '/abs/'",
        catalog_prefix="/abs/",
        message="must be a relative key",
    ),
    bad(
        "transfer-catalog-up",
        "transfer",
        "catalog_prefix",
        "path traversal 'a/../b/'",
        catalog_prefix="a/../b/",
        message="must not contain empty, '.' or '..' segments",
    ),
    bad(
        "transfer-catalog-empty",
        "transfer",
        "catalog_prefix",
        "empty string",
        catalog_prefix="",
        message="must be a non-empty key prefix such as 'cloud66/' or None",
    ),
    bad(
        "transfer-catalog-int",
        "transfer",
        "catalog_prefix",
        "wrong type (int)",
        catalog_prefix=5,
        message="must be a non-empty key prefix such as 'cloud66/' or None",
    ),
    bad(
        "transfer-backup-jinja-none",
        "transfer",
        "backup_id",
        "renders to 'None' (an XCom that is not there)",
        backup_id="{{ ti.xcom_pull(task_ids='no_such_task') }}",
        render="dag",
    ),
    bad(
        "transfer-prefix-jinja-empty",
        "transfer",
        "s3_key_prefix",
        "renders to an empty string",
        s3_key_prefix="{{ params.prefix }}",
        params={"prefix": ""},
        render="context",
    ),
    bad(
        "transfer-bucket-jinja-empty",
        "transfer",
        "s3_bucket",
        "renders to an empty string",
        s3_bucket="{{ params.bucket }}",
        params={"bucket": ""},
        render="context",
    ),
    # S3ToCloud66ImportOperator
    bad(
        "restore-key-traversal",
        "restore",
        "s3_key",
        "path traversal '../../etc/passwd'",
        s3_key="../../etc/passwd",
    ),
    bad("restore-key-inner-up", "restore", "s3_key", "path traversal inside 'a/../k'", s3_key="a/../k"),
    bad("restore-key-absolute", "restore", "s3_key", "absolute key '/abs/db.tar'", s3_key="/abs/db.tar"),
    bad("restore-key-empty", "restore", "s3_key", "empty string", s3_key=""),
    bad("restore-key-uri", "restore", "s3_key", "an s3:// URI", s3_key="s3://bucket/db.tar"),
    bad("restore-key-ctrl", "restore", "s3_key", "control characters", s3_key="db.tar\r\n"),
    bad("restore-expiry-huge", "restore", "expires_in", "over 7 days", expires_in=10**8),
    bad("restore-expiry-short", "restore", "expires_in", "under 5 minutes (10 s)", expires_in=10),
    bad("restore-stack-space", "restore", "stack_id", "a space in the id", stack_id="stack 1"),
    bad("restore-group-zero", "restore", "group", "zero", group=0),
    bad("restore-db-all", "restore", "db_type", "'all' (an import is one type)", db_type="all"),
    bad(
        "restore-key-jinja-empty",
        "restore",
        "s3_key",
        "renders to an empty string",
        s3_key="{{ params.key }}",
        params={"key": ""},
        render="context",
    ),
    # Cloud66ArchivePruneOperator
    bad("prune-keep-none", "prune", "keep_*", "no keep_* set (it would delete every archive)", keep_daily=0),
    bad("prune-keep-negative", "prune", "keep_weekly", "negative", keep_weekly=-1),
    bad("prune-keep-float", "prune", "keep_monthly", "not an integer (2.5)", keep_monthly=2.5),
    bad("prune-keep-text", "prune", "keep_last", "not an integer ('all')", keep_last="all"),
    bad("prune-keep-bool", "prune", "keep_yearly", "wrong type (bool)", keep_yearly=True),
    bad("prune-keep-huge", "prune", "keep_daily", "huge (2**63)", keep_daily=2**63),
    bad("prune-bucket-upper", "prune", "s3_bucket", "not a bucket name ('My_Bucket')", s3_bucket="My_Bucket"),
    bad("prune-bucket-empty", "prune", "s3_bucket", "empty string", s3_bucket=""),
    bad("prune-prefix-up", "prune", "s3_prefix", "path traversal '../other/'", s3_prefix="../other/"),
    bad("prune-prefix-absolute", "prune", "s3_prefix", "absolute key '/cloud66/'", s3_prefix="/cloud66/"),
    bad(
        "prune-prefix-placeholder",
        "prune",
        "s3_prefix",
        "a placeholder 'cloud66/{stack_id}/'",
        s3_prefix="cloud66/{stack_id}/",
    ),
    bad("prune-prefix-empty", "prune", "s3_prefix", "empty string", s3_prefix=""),
    bad("prune-prefix-nul", "prune", "s3_prefix", "control character (NUL)", s3_prefix="cloud66/\x00/"),
    bad(
        "prune-catalog-up",
        "prune",
        "catalog_prefix",
        "path traversal 'cloud66/../_catalog/'",
        catalog_prefix="cloud66/../_catalog/",
    ),
    bad("prune-catalog-empty", "prune", "catalog_prefix", "empty string", catalog_prefix=""),
    bad(
        "prune-catalog-placeholder",
        "prune",
        "catalog_prefix",
        "a placeholder '{stack_id}/'",
        catalog_prefix="{stack_id}/",
    ),
    bad("prune-dry-run", "prune", "dry_run", "not a boolean ('maybe')", dry_run="maybe"),
    bad("prune-max-zero", "prune", "max_archives", "zero", max_archives=0),
    bad(
        "prune-keep-jinja-empty",
        "prune",
        "keep_daily",
        "renders to an empty string",
        keep_daily="{{ params.keep }}",
        params={"keep": ""},
        render="context",
    ),
    bad(
        "prune-keep-jinja-negative",
        "prune",
        "keep_daily",
        "renders to '-3'",
        keep_daily="{{ params.keep }}",
        params={"keep": -3},
        render="dag",
    ),
    # Cloud66Hook methods
    bad("hook-list-stack-list", "hook.list_backups", "stack_id", "wrong type (list)", args=(["stack-1"],)),
    bad("hook-list-stack-empty", "hook.list_backups", "stack_id", "empty string", args=("",)),
    bad(
        "hook-list-db",
        "hook.list_backups",
        "db_type",
        "unknown db type 'sqlite'",
        args=("stack-1",),
        db_type="sqlite",
    ),
    bad(
        "hook-list-group-text",
        "hook.list_backups",
        "group",
        "not an integer ('x')",
        args=("stack-1",),
        group="x",
    ),
    bad(
        "hook-latest-group",
        "hook.latest_backups",
        "group",
        "not an integer",
        args=("stack-1",),
        group="first",
    ),
    bad(
        "hook-get-id-sql",
        "hook.get_backup",
        "backup_id",
        "injection '1 OR 1=1'",
        args=("stack-1", "1 OR 1=1"),
    ),
    bad("hook-get-id-zero", "hook.get_backup", "backup_id", "zero", args=("stack-1", 0)),
    bad(
        "hook-get-stack-traversal", "hook.get_backup", "stack_id", "path traversal", args=("stack-1/../x", 1)
    ),
    bad(
        "hook-create-cron-6",
        "hook.create_backup_task",
        "frequency",
        "6-field cron '0 0 1 1 * 2026'",
        args=("stack-1",),
        frequency="0 0 1 1 * 2026",
    ),
    bad(
        "hook-create-keep-huge",
        "hook.create_backup_task",
        "keep_count",
        "huge (50,000)",
        args=("stack-1",),
        keep_count=50_000,
    ),
    bad(
        "hook-create-keep-zero",
        "hook.create_backup_task",
        "keep_count",
        "zero",
        args=("stack-1",),
        keep_count=0,
    ),
    bad(
        "hook-create-db",
        "hook.create_backup_task",
        "db_type",
        "unknown db type 'sqlite'",
        args=("stack-1",),
        db_type="sqlite",
    ),
    bad(
        "hook-create-gzip",
        "hook.create_backup_task",
        "gzip",
        "not a boolean ('yes')",
        args=("stack-1",),
        gzip="yes",
    ),
    bad(
        "hook-create-tables-space",
        "hook.create_backup_task",
        "excluded_tables",
        "a space in a table name",
        args=("stack-1",),
        excluded_tables=["a b"],
    ),
    bad(
        "hook-import-172",
        "hook.import_backup",
        "remote_url",
        "private address 172.16.x",
        args=("stack-1",),
        group=1,
        db_type="mysql",
        remote_url="https://172.16.0.4/db.tar",
    ),
    bad(
        "hook-import-cgnat",
        "hook.import_backup",
        "remote_url",
        "shared address 100.64.x",
        args=("stack-1",),
        group=1,
        db_type="mysql",
        remote_url="https://100.64.0.1/db.tar",
    ),
    bad(
        "hook-import-http",
        "hook.import_backup",
        "remote_url",
        "plain http",
        args=("stack-1",),
        group=1,
        db_type="mysql",
        remote_url="http://example.com/x",
    ),
    bad(
        "hook-import-group-zero",
        "hook.import_backup",
        "group",
        "zero",
        args=("stack-1",),
        group=0,
        db_type="mysql",
        remote_url="https://e.com/x",
    ),
    bad(
        "hook-import-db-all",
        "hook.import_backup",
        "db_type",
        "'all' (an import is one type)",
        args=("stack-1",),
        group=1,
        db_type="all",
        remote_url="https://e.com/x",
    ),
    bad("hook-files-zero", "hook.list_backup_files", "backup_id", "zero", args=("stack-1", 0)),
    bad("hook-files-negative", "hook.list_backup_files", "backup_id", "negative", args=("stack-1", -1)),
    bad(
        "hook-url-traversal",
        "hook.get_backup_file_url",
        "file_id",
        "path traversal",
        args=("stack-1", 1, "../../x"),
    ),
    bad(
        "hook-url-absolute",
        "hook.get_backup_file_url",
        "file_id",
        "absolute path",
        args=("stack-1", 1, "/etc/passwd"),
    ),
    bad("hook-url-empty", "hook.get_backup_file_url", "file_id", "empty string", args=("stack-1", 1, "")),
    bad("hook-stack-none", "hook.get_stack", "stack_id", "wrong type (None)", args=(None,)),
    bad("hook-stack-empty", "hook.get_stack", "stack_id", "empty string", args=("",)),
    # Cloud66BackupTrigger (its constructor refuses)
    bad("trigger-marks-empty", "trigger", "marks", "no watermark (an empty mapping)", marks={}),
    bad("trigger-stack-traversal", "trigger", "stack_id", "path traversal '../etc'", stack_id="../etc"),
    bad("trigger-poll-zero", "trigger", "poll_interval", "zero", poll_interval=0),
]


@pytest.fixture
def s3_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every S3 (any AWS) API call made in this process by any botocore client."""
    from botocore.client import BaseClient

    calls: list[str] = []
    original = BaseClient._make_api_call

    def recording(self: Any, operation_name: str, api_params: Any) -> Any:
        calls.append(operation_name)
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", recording)
    return calls


def _fill(value: Any, bucket: str) -> Any:
    return bucket if value == BUCKET else value


def _operator_kwargs(case: Bad, bucket: str) -> dict[str, Any]:
    _, defaults = OPERATORS[case.target]
    kwargs = {key: _fill(value, bucket) for key, value in {**defaults, **case.kwargs}.items()}
    if case.target == "transfer":
        kwargs.setdefault("asset_alias", None)
    return kwargs


def _refuse(case: Bad, bucket: str, run_dag: Any) -> Cloud66InputError:
    """Run the case the way it says; return the Cloud66InputError it must end in."""
    if case.target.startswith("hook."):
        with pytest.raises(Cloud66InputError) as info:
            getattr(Cloud66Hook(), case.target.split(".", 1)[1])(*case.args, **case.kwargs)
        return info.value
    if case.target == "trigger":
        with pytest.raises(Cloud66InputError) as info:
            Cloud66BackupTrigger(**{**TRIGGER, **case.kwargs})
        return info.value
    if case.render == "dag":
        from airflow.sdk import DAG

        errors: list[BaseException] = []
        cls, _ = OPERATORS[case.target]

        def execute(self: Any, context: Any) -> Any:
            try:
                return cls.execute(self, context)
            except Exception as exc:
                errors.append(exc)
                raise

        recording = type(cls.__name__, (cls,), {"execute": execute})
        with DAG(f"bad_input_{case.case_id}", schedule=None, params=case.params) as dag:
            recording(task_id="bad_input", **_operator_kwargs(case, bucket))
        dagrun = run_dag(dag, logical_date=RUN)
        assert dagrun.state == "failed"
        (error,) = errors
        assert isinstance(error, Cloud66InputError), repr(error)
        return error
    cls, _ = OPERATORS[case.target]
    op = cls(task_id="bad_input", **_operator_kwargs(case, bucket))
    context: dict[str, Any] = {"data_interval_start": RUN, "logical_date": RUN}
    if case.render == "context":
        context.update(params=case.params, dag_run=SimpleNamespace(conf={}, run_after=RUN))
        op.render_template_fields(context)
    with pytest.raises(Cloud66InputError) as info:
        op.execute(context)
    return info.value


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_before_any_request(
    case, cloud66_emulator, s3_client, s3_bucket, aws_connection, s3_calls, run_dag
):
    s3_calls.clear()  # the bucket's own creation
    error = _refuse(case, s3_bucket, run_dag)

    assert error.field == case.field
    assert str(error).startswith(f"{case.field}: "), str(error)
    if case.message is not None:
        assert case.message in str(error), str(error)
    assert cloud66_emulator.requests == [], "no request reached Cloud 66"
    assert s3_calls == [], "no call reached S3"
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_the_table_has_at_least_40_bad_inputs_across_every_entry_point():
    cases = [param.values[0] for param in BAD]
    assert len(cases) >= 40
    targets = {case.target for case in cases}
    assert set(OPERATORS) | {"trigger"} <= targets
    methods = {t.split(".", 1)[1] for t in targets if t.startswith("hook.")}
    assert methods >= {
        "list_backups",
        "latest_backups",
        "get_backup",
        "create_backup_task",
        "import_backup",
        "list_backup_files",
        "get_backup_file_url",
        "get_stack",
    }
    assert {case.render for case in cases} == {None, "context", "dag"}


# --- names from the API ---------------------------------------------------------------------------
class HostileNames(Cloud66Emulator):
    """The emulator, but the file list gives hostile names (the files themselves download as usual)."""

    names: dict[str, str] = {}

    def route_api(
        self, method: str, segments: list[str], params: dict[str, Any], scopes: tuple[str, ...]
    ) -> Any:
        answer = super().route_api(method, segments, params, scopes)
        if method == "GET" and len(segments) == 5 and segments[-1] == "files":
            for item in answer["response"]:
                item["name"] = self.names.get(item["id"], item["name"])
        return answer


HOSTILE = {
    "tar-aa": "../../../etc/passwd.tar-aa",
    "tar-ab": "..\\..\\windows\\system.tar-ab",
    "tar-ac": "db\x00\n\r\x7f\x1b[31m.tar-ac",
    "tar-ad": "/absolute/db.tar-ad",
    "tar-ae": "..",
}


@pytest.mark.reliability(
    area="bad input",
    fault="backup file names from the API with `/`, `..`, backslashes, an absolute path or control "
    "characters, and a db_type and database name with `../` and NUL (in the prefix)",
    outcome="kept under the prefix",
)
@pytest.mark.parametrize("join_parts", [True, False], ids=["joined", "one-object-per-file"])
def test_hostile_names_from_the_api_never_escape_the_prefix(
    join_parts, s3_client, s3_bucket, aws_connection, monkeypatch
):
    with HostileNames(split_threshold=100, split_size=100) as emu:
        emu.names = HOSTILE
        emu.add_stack("stack-1")
        monkeypatch.setenv("AIRFLOW_CONN_CLOUD66_DEFAULT", connection_json(emu))
        bid = emu.add_backup(
            "stack-1",
            size=450,
            database_name="../\x00evil/..",
            backup_date=RUN - timedelta(days=1),
            extra_fields={"db_type": "../../x"},
        )
        assert emu.file_ids("stack-1", bid) == list(HOSTILE)
        operator = Cloud66BackupToS3Operator(
            task_id="archive",
            stack_id="stack-1",
            backup_id=bid,
            s3_bucket=s3_bucket,
            s3_key_prefix="safe/{db_type}/{database_name}/{backup_id}/",
            join_parts=join_parts,
            asset_alias=None,
        )
        uris = operator.execute({})

        db_type, database = archive.safe_segment("../../x"), archive.safe_segment("../\x00evil/..")
        prefix = f"safe/{db_type}/{database}/{bid}/"
        listed = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"])
        catalogued = [k for k in listed if k.startswith("cloud66/_catalog/")]
        assert catalogued == [catalogue_key(emu, bid)], (
            "its catalogue record, and only that, outside the prefix"
        )
        assert catalogued[0].startswith(f"cloud66/_catalog/stack-1/{db_type}/{database}/")
        assert ".." not in catalogued[0].split("/") and not re.search(r"[\x00-\x1f\x7f]", catalogued[0])
        stored = [k for k in listed if k not in catalogued]
        assert len(stored) == (2 if join_parts else len(HOSTILE) + 1)
        assert sorted(u.split("/", 3)[3] for u in uris) == [
            k for k in stored if k != prefix + "manifest.json"
        ]
        for key in stored:
            assert key.startswith(prefix), key
            name = key[len(prefix) :]
            assert name and "/" not in name and "\\" not in name and name not in (".", ".."), key
            assert not re.search(r"[\x00-\x1f\x7f]", key), key
            assert ".." not in key.split("/"), key
        if join_parts:
            (key,) = [k for k in stored if not k.endswith("manifest.json")]
            data = s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
            assert data == b"".join(emu.iter_archive("stack-1", bid))
        else:
            for file_id, uri in zip(HOSTILE, uris, strict=True):
                data = s3_client.get_object(Bucket=s3_bucket, Key=uri.split("/", 3)[3])["Body"].read()
                assert data == emu.file_bytes("stack-1", bid, file_id)

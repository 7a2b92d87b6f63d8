"""Operators that create a Cloud 66 backup task or import an external backup, and can wait for it."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    BaseOperator,
    Context,
    ResumableJobMixin,
    conf,
)

from airflow_provider_c66 import assets, budget, validation, watermark
from airflow_provider_c66.exceptions import Cloud66OutcomeUnknownError
from airflow_provider_c66.hooks.cloud66 import BackupTask, Cloud66Hook
from airflow_provider_c66.models import Backup
from airflow_provider_c66.redaction import mask_credential, mask_for_rendered_fields, redact_url
from airflow_provider_c66.triggers.backups import Cloud66BackupTrigger, read_event
from airflow_provider_c66.watermark import BackupWait, Verdict

DEFAULT_TIMEOUT = 24 * 60 * 60.0
"""How long a wait lasts by default: a new task's first scheduled run may be up to its cron period away."""

WAIT_FIELDS = ("wait_for_completion", "poll_interval", "timeout", "settle_seconds", "cloud66_conn_id")
"""The templated arguments every POSTing operator shares: how it waits, and the connection."""


@dataclass(frozen=True)
class PostedJob:
    """What a POST left behind, kept in the task state store (``cloud66_backup_post``) so a retry
    resumes instead of POSTing again: the API's message, and the watermark to wait past (None when
    the task does not wait)."""

    message: str
    wait: BackupWait | None = None

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "wait": self.wait.to_json() if self.wait else None}

    @classmethod
    def from_json(cls, raw: Any) -> PostedJob:
        if not isinstance(raw, dict) or "message" not in raw:
            raise AirflowException(f"Unreadable Cloud 66 task state {raw!r:.200}")
        wait = raw.get("wait")
        return cls(message=str(raw["message"]), wait=BackupWait.from_json(wait) if wait else None)


@dataclass(frozen=True)
class _Finished:
    """The task's result once the wait is over (it may be None, so it is boxed)."""

    value: Any


@contextmanager
def post_once() -> Iterator[None]:
    """A POST whose outcome is unknown ends the task without retries: nothing records that it may have
    been carried out, so a retry would POST again (a second backup task, a second import)."""
    try:
        yield
    except Cloud66OutcomeUnknownError as exc:
        raise AirflowFailException(
            f"{exc}. This task fails without retries, since a retry would POST again."
        ) from exc


class _BackupPostOperator(ResumableJobMixin, BaseOperator):  # type: ignore[misc]
    """POST to ``/stacks/{id}/backups`` once, then optionally wait for a backup newer than a watermark.

    Cloud 66 answers the POST with no backup id, so before it the operator records a watermark (the
    newest backup, date and id, per awaited database type) and afterwards waits for newer backups.
    The watermark and the API's message are the "job" that Airflow's task state store keeps (key
    ``cloud66_backup_post``) so that a retry resumes the wait instead of POSTing again.
    """

    external_id_key = "cloud66_backup_post"

    def __init__(
        self,
        *,
        stack_id: str,
        wait_for_completion: bool = False,
        poll_interval: float = watermark.DEFAULT_POLL_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        settle_seconds: float = 0,
        cloud66_conn_id: str = Cloud66Hook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stack_id = stack_id
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.settle_seconds = settle_seconds
        self.cloud66_conn_id = cloud66_conn_id
        self.deferrable = deferrable
        self._verdict: Verdict | None = None
        self._finished: _Finished | None = None

    # --- what subclasses say ----------------------------------------------------------------------
    def validate(self) -> None:
        """Check every rendered argument; raise Cloud66InputError before any request."""
        self.stack_id = validation.stack_id(self.stack_id)
        self.wait_for_completion = validation.flag(self.wait_for_completion, "wait_for_completion")
        self.poll_interval = validation.seconds(self.poll_interval, "poll_interval")
        self.timeout = validation.seconds(self.timeout, "timeout")
        self.settle_seconds = validation.seconds(self.settle_seconds, "settle_seconds", allow_zero=True)

    def take_watermark(self) -> BackupWait:
        raise NotImplementedError

    def post(self) -> str:
        raise NotImplementedError

    def result_of(self, backups: Sequence[Backup]) -> Any:
        raise NotImplementedError

    @cached_property
    def hook(self) -> Cloud66Hook:
        return Cloud66Hook(self.cloud66_conn_id, retry_policy=watermark.polling_policy(self.poll_interval))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the stack this task changed (a backup task created, a backup imported)."""
        return assets.stack_lineage(self.hook.settings.base_url, validation.stack_id(self.stack_id))

    # --- Airflow entry points ---------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        self.validate()
        if self.retries and not getattr(self, "durable", False):
            self.log.warning(
                "This task has retries but no durable state (Airflow < 3.3, or durable=False): a retry "
                "POSTs to Cloud 66 again and so creates a second backup task."
            )
        while True:
            try:
                return self.execute_resumable(context)
            except Exception as exc:
                # Only the watermark's read or the POST itself can meet a spent budget here (a wait's
                # polls count it as "not yet"): a throttled POST was refused, so nothing was done yet.
                if self.deferrable:
                    budget.defer_until_reset(self, exc, "execute_after_reset", self.log)
                budget.wait_for_reset(exc, context, self.log)

    def execute_after_reset(self, context: Context, event: Any = None) -> Any:
        """Resume after Cloud 66's hourly budget has reset: start again (nothing was POSTed)."""
        return self.execute(context)

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        """Resume after the trigger: the new backup(s) on success, else a clear error."""
        result = read_event(event)
        if result.status == "success":
            self.log.info("%s", result.message)
            return self.result_of(result.backups)
        if result.status == "failed":
            raise AirflowFailException(result.message)
        raise AirflowException(result.message)

    # --- ResumableJobMixin: the "job" is a PostedJob, as JSON -------------------------------------
    def submit_job(self, context: Context) -> dict[str, Any]:
        wait = self.take_watermark() if self.wait_for_completion else None
        if wait is not None:
            self.log.info("Watermark before the POST: %s", wait.describe())
        with post_once():
            message = self.post()
        self.log.info("Cloud 66 answered: %s", message)
        return PostedJob(message, wait).to_json()

    def get_job_status(self, external_id: Any, context: Context) -> str:
        self.log.info("Already POSTed in an earlier try; not POSTing again")
        wait = PostedJob.from_json(external_id).wait
        if wait is None:
            return "success"
        self._verdict = watermark.poll(self.hook, wait, self.log)
        return self._verdict.status if self._verdict else "waiting"

    def is_job_active(self, status: str) -> bool:
        # A backup task, once created, is never POSTed again: anything but success resumes the wait.
        return status != "success"

    def is_job_succeeded(self, status: str) -> bool:
        return status == "success"

    def poll_until_complete(self, external_id: Any, context: Context) -> Any:
        self._finished = _Finished(self._await(PostedJob.from_json(external_id)))
        return self._finished.value

    def get_job_result(self, external_id: Any, context: Context) -> Any:
        if self._finished is not None:
            return self._finished.value
        job = PostedJob.from_json(external_id)  # an earlier try POSTed and the backups have arrived since
        if job.wait is None or self._verdict is None:
            return job.message
        return self._finish(job.wait, self._verdict)

    # --- waiting ----------------------------------------------------------------------------------
    def _await(self, job: PostedJob) -> Any:
        wait = job.wait
        if wait is None:
            return job.message
        if self.deferrable:
            Cloud66BackupTrigger.defer_task(
                self,
                wait,
                timeout=self.timeout,
                poll_interval=self.poll_interval,
                cloud66_conn_id=self.cloud66_conn_id,
            )
        deadline = time.monotonic() + self.timeout
        while True:
            verdict = watermark.poll(self.hook, wait, self.log)
            if verdict is not None and verdict.done:
                return self._finish(wait, verdict)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AirflowException(watermark.timeout_message(wait, self.timeout))
            time.sleep(min(budget.next_poll_in(self.hook.budget, self.poll_interval), remaining))

    def _finish(self, wait: BackupWait, verdict: Verdict) -> Any:
        message = watermark.outcome_message(wait, verdict)
        if verdict.status == "failed":
            # A retry cannot change a finished backup's outcome, and must not POST again.
            raise AirflowFailException(message)
        self.log.info("%s", message)
        return self.result_of(verdict.backups)


class Cloud66CreateBackupOperator(_BackupPostOperator):
    """Create a Cloud 66 backup task and optionally wait for the backups it makes.

    Cloud 66 creates a *scheduled* backup task (cron ``frequency``) and answers with no backup id.
    With ``wait_for_completion`` the operator first records a watermark, the newest backup (date,
    id) per requested database type, then after the POST waits until every requested type has a
    newer backup and returns those backups (``Backup.to_dict()`` each, one per type) as its XCom
    value. ``db_type="all"`` means the types the stack already has backups of; on a stack with no
    backup yet the types cannot be known, so the wait ends at the first new backup of any type.
    A requested type the stack has no database of is waited for until the timeout. A backup that
    lands between the watermark and the POST (the stack's own schedule) counts as new.
    A failed backup (status 1) fails the task at once, without retries, with Cloud 66's
    ``backup_result``. Without waiting, the XCom value is the API's message.

    **Retries.** On Airflow 3.3+ the POST's watermark and message are kept in the task state store
    (``ResumableJobMixin``, key ``cloud66_backup_post``) as soon as the POST succeeds: a retry
    resumes the wait and never POSTs again; a task cleared after it succeeded returns the same
    result without a POST (set ``[state_store] clear_on_success`` to make a cleared task POST anew).
    On Airflow < 3.3 (or with ``durable=False``) there is nowhere durable to keep that: **each try
    POSTs again and creates another backup task**, and Cloud 66's API cannot tell whether a task
    already exists (it lists backups, not backup tasks), so the operator cannot check. There, set
    ``retries=0`` on this operator and wait in a downstream :class:`Cloud66BackupSensor` (which may
    retry freely: its default watermark is the start of the run's data interval).
    On every Airflow version, a POST whose outcome is unknown (answered by a 5xx, by no answer after
    it was sent, or by a 2xx that is not Cloud 66's JSON) is never sent again: the task fails at once
    (``AirflowFailException``, no retries) and the message says what to check in Cloud 66.

    :param stack_id: the stack UID.
    :param db_type: ``all``, one type, or a list (or comma-separated string) of mysql, postgresql,
        redis, mongodb.
    :param frequency: the task's 5-field cron schedule, e.g. ``0 */1 * * *``.
    :param keep_count: how many previous backups Cloud 66 keeps.
    :param gzip: compress the backups with gzip.
    :param excluded_tables: tables left out of the backup (a list or comma-separated).
    :param run_on_replica_server: back up from a replica when there is one.
    :param wait_for_completion: wait for the new backups and return them.
    :param poll_interval: seconds between two list requests while waiting (default 150: 100
        concurrent waits stay at 2,400 of Cloud 66's 3,000 requests an hour).
    :param timeout: seconds to wait before failing (default 24 hours).
    :param settle_seconds: count a new backup only once its record has not changed for this long
        (default 0: at once). See :class:`~airflow_provider_c66.sensors.backups.Cloud66BackupSensor`.
    :param cloud66_conn_id: the Cloud 66 connection id (its token needs the ``admin`` scope).
    :param deferrable: wait in the triggerer; default ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = (
        "stack_id",
        "db_type",
        "frequency",
        "keep_count",
        "gzip",
        "excluded_tables",
        "run_on_replica_server",
        *WAIT_FIELDS,
    )
    ui_color = "#2f9fd6"

    def __init__(
        self,
        *,
        stack_id: str,
        db_type: str | Sequence[str] = "all",
        frequency: str | None = None,
        keep_count: int | str | None = None,
        gzip: bool | str | None = None,
        excluded_tables: str | Sequence[str] | None = None,
        run_on_replica_server: bool | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(stack_id=stack_id, **kwargs)
        self.db_type = db_type
        self.frequency = frequency
        self.keep_count = keep_count
        self.gzip = gzip
        self.excluded_tables = excluded_tables
        self.run_on_replica_server = run_on_replica_server

    def _task_args(self) -> BackupTask:
        return {
            "db_type": self.db_type,
            "frequency": self.frequency,
            "keep_count": self.keep_count,
            "gzip": self.gzip,
            "excluded_tables": self.excluded_tables,
            "run_on_replica_server": self.run_on_replica_server,
        }

    def validate(self) -> None:
        super().validate()
        Cloud66Hook.backup_task_body(**self._task_args())

    def take_watermark(self) -> BackupWait:
        types = validation.db_types(self.db_type)
        one_type = types[0] if len(types) == 1 and types != ["all"] else None
        existing = self.hook.latest_backups(
            self.stack_id, db_type=one_type, **watermark.watermark_query(types)
        )
        marks = watermark.watermarks_before(existing, types)
        return BackupWait(self.stack_id, marks, db_type=one_type, settle_seconds=self.settle_seconds)

    def post(self) -> str:
        return self.hook.create_backup_task(self.stack_id, **self._task_args())

    def result_of(self, backups: Sequence[Backup]) -> list[dict[str, Any]]:
        return [b.to_dict() for b in backups]


class Cloud66ImportBackupOperator(_BackupPostOperator):
    """Import an external backup into a Cloud 66 backup group, and optionally wait for it.

    Returns the API's message ("Your external backup queued for upload"); with
    ``wait_for_completion`` it first records a watermark (the newest backup of that type in that
    group), then waits for a newer one and returns it (``Backup.to_dict()``). A failed import fails
    the task at once with Cloud 66's ``backup_result``. Retries behave as for
    :class:`Cloud66CreateBackupOperator`: never a second POST on Airflow 3.3+, one per try below.

    :param stack_id: the stack UID.
    :param group: the backup group the imported backup joins.
    :param db_type: its database type (mysql, postgresql, redis or mongodb).
    :param remote_url: where Cloud 66 downloads the backup from: https (plain http only to a
        loopback host, for local testing). Its query string may be a credential: it is never logged.
    :param wait_for_completion: wait for the imported backup and return it.

    ``poll_interval``, ``timeout``, ``settle_seconds``, ``cloud66_conn_id`` (its token needs the
    ``admin`` scope) and ``deferrable`` mean what they mean for
    :class:`Cloud66CreateBackupOperator`, with the same defaults.
    """

    template_fields: Sequence[str] = (
        "stack_id",
        "group",
        "db_type",
        "remote_url",
        *WAIT_FIELDS,
    )
    ui_color = "#2f9fd6"

    def __init__(
        self, *, stack_id: str, group: int | str, db_type: str, remote_url: str, **kwargs: Any
    ) -> None:
        super().__init__(stack_id=stack_id, **kwargs)
        self.group = group
        self.db_type = db_type
        self.remote_url = remote_url
        self._body: dict[str, Any] = {}

    def _do_render_template_fields(
        self, parent: Any, template_fields: Any, context: Context, jinja_env: Any, seen_oids: set[int]
    ) -> None:
        """Mask a signed URL's query (a credential) before Airflow stores the rendered fields.

        Both ways Airflow renders fields pass here: ``render_template_fields`` of a plain task, and
        the expanded (mapped) task's, which renders onto the unmapped task without calling that method.
        """
        super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)
        if parent is self and isinstance(self.remote_url, str):
            mask_for_rendered_fields(urlsplit(self.remote_url.strip()).query)

    def validate(self) -> None:
        super().validate()
        self._body = Cloud66Hook.import_body(
            group=self.group, db_type=self.db_type, remote_url=self.remote_url
        )
        mask_credential(urlsplit(self._body["remote_url"]).query)  # a signed URL's query is a credential

    def take_watermark(self) -> BackupWait:
        group, db_type = self._body["group"], self._body["db_type"]
        existing = self.hook.latest_backups(
            self.stack_id, db_type=db_type, group=group, **watermark.watermark_query([db_type])
        )
        marks = watermark.watermarks_before(existing, [db_type])
        return BackupWait(
            self.stack_id, marks, db_type=db_type, group=group, settle_seconds=self.settle_seconds
        )

    def post(self) -> str:
        self.log.info("Importing %s into group %s", redact_url(self._body["remote_url"]), self._body["group"])
        return self.hook.import_backup(self.stack_id, **self._body)

    def result_of(self, backups: Sequence[Backup]) -> dict[str, Any]:
        return backups[0].to_dict()

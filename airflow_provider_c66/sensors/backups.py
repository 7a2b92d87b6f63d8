"""Cloud66BackupSensor: wait until a stack has a backup newer than a date or a backup id."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    BaseSensorOperator,
    Context,
    PokeReturnValue,
    conf,
)

from airflow_provider_c66 import budget, validation, watermark
from airflow_provider_c66.exceptions import Cloud66InputError, Cloud66RateLimitError
from airflow_provider_c66.hooks.cloud66 import Cloud66Hook
from airflow_provider_c66.models import Backup, parse_datetime
from airflow_provider_c66.triggers.backups import Cloud66BackupTrigger, read_event
from airflow_provider_c66.watermark import BackupWait, Verdict, Watermark


class Cloud66BackupSensor(BaseSensorOperator):  # type: ignore[misc]
    """Wait until a Cloud 66 stack has a backup newer than a watermark; return that backup.

    The XCom value is the newest matching backup's ``Backup.to_dict()`` (the API's own record
    shape), which a downstream transfer takes as it is. Each poke sends one list request (the first
    page, newest first; more pages only when all of it is newer than the watermark, up to 5). Poke,
    reschedule and deferrable modes are supported; deferrable checks once first and returns at once
    when the backup is already there.

    **Several database types, one request.** With ``db_type`` a list (``["mysql", "redis"]``) the
    wait ends when every listed type has a new backup, and each poll is still one request: the list
    is read unfiltered and judged per type. The XCom value is then a list, one record per type in the
    order given, which :class:`~airflow_provider_c66.transfers.backup_to_s3.Cloud66BackupToS3Operator`
    archives one after the other. A failed backup of any listed type fails the wait at once.

    The default ``poke_interval`` of 150 s keeps 100 concurrent waits at 2,400 requests an hour,
    under Cloud 66's 3,000 per user (:data:`~airflow_provider_c66.watermark.DEFAULT_POLL_INTERVAL`).
    A transient API fault (5xx, throttling, no answer) that outlasts the hook's retries counts as
    "not yet"; a wrong token, a missing scope or an unknown stack fails the task. While Cloud 66's
    hourly budget is spent, no poke is sent before its reset: a deferrable wait hands over to the
    trigger at once and it sleeps until the reset, a reschedule-mode poke is rescheduled to the
    reset, and a poke-mode wait pokes again without spending requests.

    :param stack_id: the stack UID.
    :param db_type: only backups of this database type (mysql, postgresql, redis, mongodb), or a list
        of types, each of which must have a new backup (see above).
    :param database_name: only backups of this database.
    :param group: only backups of this backup group id.
    :param newer_than: only backups dated strictly after this: a datetime or an ISO 8601 string
        (templated; an empty or ``"None"`` rendering means "not given"). Default, unless
        ``after_backup_id`` is given: the start of the run's data interval, else its logical date,
        else when the run was queued to run (``run_after``).
    :param after_backup_id: only backups after this one (instead of ``newer_than``).
    :param fail_on_failed_backup: when the newest matching backup failed, fail at once with
        Cloud 66's ``backup_result``; when False, failed backups are passed over and the wait goes on.
    :param settle_seconds: count a successful backup only once its record has not changed for this
        long (its ``updated_at``, else ``created_at``, else its date). Default 0: at once. Cloud 66
        documents no "in progress" status and does not say whether a backup's row can appear before
        its files are complete; a settle time guards against that at the cost of that much latency
        (and a longer wait when Cloud 66 touches the record later, e.g. after a verify). The transfer
        checks the files again in any case, so this only trades latency for fewer failed copies.
    :param cloud66_conn_id: the Cloud 66 connection id.
    :param deferrable: wait in the triggerer; default ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = (
        "stack_id",
        "db_type",
        "database_name",
        "group",
        "newer_than",
        "after_backup_id",
        "fail_on_failed_backup",
        "settle_seconds",
        "cloud66_conn_id",
    )
    ui_color = "#2f9fd6"

    def __init__(
        self,
        *,
        stack_id: str,
        db_type: str | Sequence[str] | None = None,
        database_name: str | None = None,
        group: int | str | None = None,
        newer_than: datetime | str | None = None,
        after_backup_id: int | str | None = None,
        fail_on_failed_backup: bool = True,
        settle_seconds: float = 0,
        cloud66_conn_id: str = Cloud66Hook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: float = watermark.DEFAULT_POLL_INTERVAL,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.stack_id = stack_id
        self.db_type = db_type
        self.database_name = database_name
        self.group = group
        self.newer_than = newer_than
        self.after_backup_id = after_backup_id
        self.fail_on_failed_backup = fail_on_failed_backup
        self.settle_seconds = settle_seconds
        self.cloud66_conn_id = cloud66_conn_id
        self.deferrable = deferrable
        self._wait: BackupWait | None = None

    @cached_property
    def hook(self) -> Cloud66Hook:
        policy = watermark.polling_policy(self.poke_interval)
        if self.deferrable:  # a spent budget is waited out in the triggerer, not in a worker slot
            policy = replace(policy, max_rate_limit_wait=0.0)
        return Cloud66Hook(self.cloud66_conn_id, retry_policy=policy)

    def build_wait(self, context: Context) -> BackupWait:
        """The rendered arguments, validated (no request is sent before this passed)."""
        newer_than = validation.newer_than(self.newer_than)
        after_id = None if self.after_backup_id in (None, "", "None") else self.after_backup_id
        if newer_than is not None and after_id is not None:
            raise Cloud66InputError("newer_than", "give newer_than or after_backup_id, not both")
        if after_id is not None:
            mark = Watermark(after_id=validation.backup_id(after_id, "after_backup_id"))
        else:
            mark = Watermark(newer_than or _run_start(context))
        types = self._types()
        return BackupWait(
            stack_id=validation.stack_id(self.stack_id),
            # One mark per type: a single list request (not filtered by type) serves them all.
            marks=dict.fromkeys(types, mark) if types else {watermark.ANY_TYPE: mark},
            db_type=None if self.db_type is None or types else validation.db_type(self.db_type),
            group=None if self.group is None else validation.group(self.group),
            database_name=(
                None
                if self.database_name is None
                else validation.non_empty_str(self.database_name, "database_name")
            ),
            fail_on_failed_backup=validation.flag(self.fail_on_failed_backup, "fail_on_failed_backup"),
            settle_seconds=validation.seconds(self.settle_seconds, "settle_seconds", allow_zero=True),
        )

    def _types(self) -> list[str] | None:
        """The database types of a multi-type wait (``db_type`` given as a list), else None."""
        if not isinstance(self.db_type, (list, tuple)):
            return None
        return validation.db_types(self.db_type, allow_all=False)

    def _xcom(self, backups: Sequence[Backup]) -> Any:
        """One record (``db_type`` a type or None), or one per type in the order asked (a list)."""
        types = self._types()
        if types is None:
            return max(backups, key=lambda b: (b.backup_date, b.id)).to_dict()
        by_type = {b.db_type: b for b in backups}
        return [by_type[t].to_dict() for t in types if t in by_type]

    def execute(self, context: Context) -> Any:
        self._wait = wait = self.build_wait(context)
        self.log.info("Waiting for a Cloud 66 backup of %s", wait.describe())
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout as exc:
                raise AirflowSensorTimeout(
                    f"{watermark.timeout_message(wait, self.timeout)} ({exc})"
                ) from exc
        result = self._judge(wait, watermark.poll(self.hook, wait, self.log))
        if result:
            return result.xcom_value
        Cloud66BackupTrigger.defer_task(
            self,
            wait,
            timeout=self.timeout,
            poll_interval=self.poke_interval,
            cloud66_conn_id=self.cloud66_conn_id,
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        wait = self._wait or self.build_wait(context)
        result = self._judge(wait, watermark.poll(self.hook, wait, self.log))
        if result is None and self.reschedule:
            # The budget is spent: no poke before its reset could be sent, so none is scheduled.
            reset = self.hook.budget.spent_until()
            if reset is not None and reset > time.time() + self.poke_interval:
                error = Cloud66RateLimitError(
                    "The Cloud 66 hourly request budget is spent.",
                    reset_at=datetime.fromtimestamp(reset, UTC),
                )
                budget.wait_for_reset(error, context, self.log, sensor=True)
        return result or False

    def _judge(self, wait: BackupWait, verdict: Verdict | None) -> PokeReturnValue | None:
        if verdict is None or not verdict.done:
            return None
        if verdict.status == "failed":  # final: a retry would find the same failed backup
            raise AirflowFailException(watermark.outcome_message(wait, verdict))
        self.log.info("%s", watermark.outcome_message(wait, verdict))
        return PokeReturnValue(is_done=True, xcom_value=self._xcom(verdict.backups))

    def execute_complete(self, context: Context, event: Any = None) -> Any:
        """Resume after the trigger: the backup's record on success, else a clear error."""
        result = read_event(event)
        if result.status == "success" and result.backup is not None:
            self.log.info("%s", result.message)
            return self._xcom(result.backups)
        if result.status == "timeout":
            raise AirflowSensorTimeout(result.message)
        if result.status == "failed":
            raise AirflowFailException(result.message)
        raise AirflowException(result.message)


def _run_start(context: Context) -> datetime:
    """The default watermark: the data interval's start, else the logical date, else ``run_after``."""
    dag_run = context.get("dag_run")
    for value in (
        context.get("data_interval_start"),
        context.get("logical_date"),
        getattr(dag_run, "run_after", None),
        getattr(dag_run, "start_date", None),
    ):
        if value is not None:
            return parse_datetime(value)
    raise Cloud66InputError(
        "newer_than", "has no default (the run has no data interval, logical date or start); set it"
    )

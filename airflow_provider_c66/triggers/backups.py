"""Cloud66BackupTrigger: wait in the triggerer for a backup newer than a watermark, fully async."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from airflow.providers.common.compat.sdk import AirflowException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_c66 import budget, validation, watermark
from airflow_provider_c66.exceptions import Cloud66ApiError, Cloud66RateLimitError, Cloud66ResponseError
from airflow_provider_c66.hooks.cloud66 import Cloud66Hook
from airflow_provider_c66.models import Backup
from airflow_provider_c66.redaction import redact_text
from airflow_provider_c66.watermark import BackupWait, Verdict

EventStatus = Literal["success", "failed", "timeout", "error"]
EVENT_STATUSES: tuple[str, ...] = ("success", "failed", "timeout", "error")
FIRST_POLL_DELAY = 15.0
"""Seconds between the deferring task's own check and the trigger's first poll, at most."""


class Cloud66BackupTrigger(BaseTrigger):  # type: ignore[misc]
    """Poll a stack's backups list from the triggerer until a wait is over.

    Every poll is one list request sent with ``aiohttp`` (the first page, newest first; more pages
    only as :meth:`~airflow_provider_c66.watermark.BackupWait.wants_older` says); the connection
    is looked up the async way. Request building, retries, error mapping and record parsing are the
    hook's, shared with the sync path. A transient fault (5xx, throttling, a dropped connection)
    that outlasts the hook's retries is logged and the next poll tries again: it never ends the
    wait early; while Cloud 66's hourly budget is spent, the next poll waits for its reset (the budget
    is shared by every trigger of the triggerer using the same token, so none of them sends a request
    that would be refused). Only a non-transient error (bad token, missing scope, unknown stack, unreadable
    answer) ends it with an ``error`` event.

    Events are :class:`BackupEvent` payloads: ``{"status": "success" | "failed" | "timeout" |
    "error", "message": str, "backup": dict | None, "backups": [dict, ...]}``; ``backup`` is the
    newest of ``backups`` (``Backup.to_dict()``).

    :param stack_id: the stack UID.
    :param marks: per database type (or ``"*"``) a watermark ``{"newer_than": ISO | None,
        "after_id": int | None}``; see :class:`~airflow_provider_c66.watermark.BackupWait`.
    :param end_time: the deadline, in epoch seconds (it crosses a process boundary).
    :param db_type: only backups of this database type.
    :param group: only backups of this backup group.
    :param database_name: only backups of this database.
    :param fail_on_failed_backup: end with ``failed`` when the newest new backup failed.
    :param settle_seconds: a successful backup counts once its record is this old (see
        :class:`~airflow_provider_c66.watermark.BackupWait`).
    :param poll_interval: seconds between two list requests.
    :param cloud66_conn_id: the Cloud 66 connection id.
    :param started_at: when the wait began, in epoch seconds (for the timeout message).
    :param first_poll_at: no poll before this, in epoch seconds (the deferring task just polled).
    """

    def __init__(
        self,
        *,
        stack_id: str,
        marks: Mapping[str, Mapping[str, Any]],
        end_time: float,
        db_type: str | None = None,
        group: int | None = None,
        database_name: str | None = None,
        fail_on_failed_backup: bool = True,
        settle_seconds: float | None = None,
        poll_interval: float = watermark.DEFAULT_POLL_INTERVAL,
        cloud66_conn_id: str = Cloud66Hook.default_conn_name,
        started_at: float | None = None,
        first_poll_at: float | None = None,
    ) -> None:
        super().__init__()
        self.wait = BackupWait.from_json(
            {
                "stack_id": stack_id,
                "marks": marks,
                "db_type": db_type,
                "group": group,
                "database_name": database_name,
                "fail_on_failed_backup": fail_on_failed_backup,
                "settle_seconds": settle_seconds,
            }
        )
        self.end_time = float(end_time)
        self.poll_interval = validation.seconds(poll_interval, "poll_interval")
        self.cloud66_conn_id = cloud66_conn_id
        self.started_at = time.time() if started_at is None else float(started_at)
        self.first_poll_at = None if first_poll_at is None else float(first_poll_at)

    @classmethod
    def for_wait(
        cls, wait: BackupWait, *, timeout: float, poll_interval: float, cloud66_conn_id: str
    ) -> Cloud66BackupTrigger:
        """The trigger for ``wait``, ending ``timeout`` seconds from now.

        The deferring task has just polled, so the trigger's first poll waits a little (one
        interval, at most ``FIRST_POLL_DELAY``): that leaves the scheduler time to record the
        deferral before an event can arrive (a trigger firing first can fail the try on Airflow
        3.3.2) and spends no request on an answer the task has just had.
        """
        now = time.time()
        return cls(
            **wait.to_json(),
            started_at=now,
            first_poll_at=now + min(poll_interval, FIRST_POLL_DELAY),
            end_time=now + timeout,
            poll_interval=poll_interval,
            cloud66_conn_id=cloud66_conn_id,
        )

    @classmethod
    def defer_task(
        cls, task: Any, wait: BackupWait, *, timeout: float, poll_interval: float, cloud66_conn_id: str
    ) -> None:
        """Defer ``task`` to the trigger for ``wait``; it resumes in ``execute_complete``.

        The trigger ends the wait with a clear ``timeout`` event; Airflow's deferral timeout is only
        a backstop, a little later, for a trigger that never fires.
        """
        trigger = cls.for_wait(
            wait, timeout=timeout, poll_interval=poll_interval, cloud66_conn_id=cloud66_conn_id
        )
        backstop = timedelta(seconds=timeout + max(60.0, 2 * poll_interval))
        task.defer(trigger=trigger, method_name="execute_complete", timeout=backstop)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                **self.wait.to_json(),
                "end_time": self.end_time,
                "poll_interval": self.poll_interval,
                "cloud66_conn_id": self.cloud66_conn_id,
                "started_at": self.started_at,
                "first_poll_at": self.first_poll_at,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import aiohttp

        wait = self.wait
        hook = Cloud66Hook(self.cloud66_conn_id, retry_policy=watermark.polling_policy(self.poll_interval))
        try:
            async with aiohttp.ClientSession() as session:
                if self.first_poll_at is not None:
                    await asyncio.sleep(max(0.0, min(self.first_poll_at, self.end_time) - time.time()))
                while True:
                    verdict = await self._poll(hook, session)
                    if verdict is not None and verdict.done:
                        yield TriggerEvent(BackupEvent.of(wait, verdict).payload())
                        return
                    remaining = self.end_time - time.time()
                    if remaining <= 0:
                        message = watermark.timeout_message(wait, time.time() - self.started_at)
                        yield TriggerEvent(BackupEvent("timeout", message).payload())
                        return
                    await asyncio.sleep(min(budget.next_poll_in(hook.budget, self.poll_interval), remaining))
        except Exception as exc:  # any other failure ends the wait with a clear event
            # Any library's text may quote a URL it was given: the event is stored and logged.
            message = (
                f"Stopped waiting for a Cloud 66 backup of {wait.describe()}: {type(exc).__name__}: "
                f"{redact_text(str(exc))}"
            )
            yield TriggerEvent(BackupEvent("error", message).payload())

    async def _poll(self, hook: Cloud66Hook, session: Any) -> Verdict | None:
        """One list read judged; None after a transient fault (the next poll tries again)."""
        try:
            backups = await hook.alatest_backups(session, self.wait.stack_id, **self.wait.query)
        except Cloud66RateLimitError as exc:
            self.log.info("%s Polling again after the reset.", exc)
            return None
        except Cloud66ApiError as exc:
            if not watermark.is_transient(exc):
                raise
            self.log.warning("Cloud 66 is not answering well (%s); polling again until the deadline", exc)
            return None
        return self.wait.evaluate(backups)


def read_event(event: object) -> BackupEvent:
    """The event a deferred task resumed with, validated; anything else raises a clear AirflowException."""
    try:
        return BackupEvent.from_payload(event)
    except ValueError as exc:
        raise AirflowException(f"The Cloud 66 backup wait resumed with an invalid event: {exc}") from None


@dataclass(frozen=True)
class BackupEvent:
    """A trigger event, built and read in one place so ``execute_complete`` trusts only valid ones.

    :param status: ``success``, ``failed``, ``timeout`` or ``error``.
    :param message: what happened, for a person.
    :param backups: the new backups (success) or the failed ones (failed), newest first.
    """

    status: EventStatus
    message: str
    backups: tuple[Backup, ...] = ()

    @classmethod
    def of(cls, wait: BackupWait, verdict: Verdict) -> BackupEvent:
        status: EventStatus = "failed" if verdict.status == "failed" else "success"
        return cls(status, watermark.outcome_message(wait, verdict), verdict.backups)

    @property
    def backup(self) -> Backup | None:
        """The newest of :attr:`backups`."""
        return max(self.backups, key=lambda b: (b.backup_date, b.id), default=None)

    def payload(self) -> dict[str, Any]:
        newest = self.backup
        return {
            "status": self.status,
            "message": self.message,
            "backup": newest.to_dict() if newest else None,
            "backups": [b.to_dict() for b in self.backups],
        }

    @classmethod
    def from_payload(cls, event: object) -> BackupEvent:
        """Read an event strictly; anything else raises ValueError saying what is wrong."""
        if not isinstance(event, Mapping):
            raise ValueError(
                f"expected a Cloud 66 backup event (a dict), got {type(event).__name__}: {event!r:.200}"
            )
        if set(event) != {"status", "message", "backup", "backups"}:
            raise ValueError(f"unexpected Cloud 66 backup event keys {sorted(event)!r}")
        status, message, raw_backups = event["status"], event["message"], event["backups"]
        if status not in EVENT_STATUSES:
            raise ValueError(f"unknown Cloud 66 backup event status {status!r}")
        if not isinstance(message, str) or not isinstance(raw_backups, list):
            raise ValueError("a Cloud 66 backup event needs a string 'message' and a list 'backups'")
        try:
            backups = tuple(Backup.from_dict(raw) for raw in raw_backups)
            backup = Backup.from_dict(event["backup"]) if event["backup"] is not None else None
        except Cloud66ResponseError as exc:
            raise ValueError(f"a Cloud 66 backup event carries a malformed backup: {exc}") from None
        parsed = cls(status, message, backups)
        if status in ("success", "failed") and not backups:
            raise ValueError(f"a {status!r} Cloud 66 backup event names no backup")
        if status in ("timeout", "error") and backups:
            raise ValueError(f"a {status!r} Cloud 66 backup event should name no backup")
        if backup != parsed.backup:
            raise ValueError("a Cloud 66 backup event's 'backup' is not the newest of its 'backups'")
        if status == "failed" and not all(b.failed for b in backups):
            raise ValueError("a 'failed' Cloud 66 backup event names a backup that did not fail")
        if status == "success" and not all(b.succeeded for b in backups):
            raise ValueError("a 'success' Cloud 66 backup event names a backup that did not succeed")
        return parsed

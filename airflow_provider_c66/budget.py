"""What a task does when Cloud 66's hourly request budget is spent, and what a schedule costs.

Cloud 66 allows about 3,000 API requests per user per hour and answers ``503 throttled`` until the
budget resets. The hook waits for a reset that is near (``max_rate_limit_wait``); past that it raises
:class:`~airflow_provider_c66.exceptions.Cloud66RateLimitError` with the reset time, and the task
hands the wait to Airflow instead of failing into its retries:

- a worker-side task (the transfer, a reschedule-mode poke, a non-deferrable create or import)
  raises ``AirflowRescheduleException`` for the reset: it leaves its worker slot, is run again after
  the reset, and no try is counted (:func:`wait_for_reset`);
- a deferrable create or import defers to a timer until the reset (:func:`defer_until_reset`), and a
  deferrable wait's trigger sleeps until then.

The costs below let a user size poll intervals for N stacks before the budget runs out.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow_provider_c66.api import RateBudget
from airflow_provider_c66.exceptions import Cloud66RateLimitError

HOURLY_BUDGET = 3000
"""Cloud 66's documented budget: API requests per user (token) per hour."""

RESET_SPREAD = 10.0
"""Seconds over which tasks waiting for one reset are spread, so they do not all ask at its first second."""

RESCHEDULE_HONOURED_FROM = (3, 3)
"""The first Airflow release whose scheduler keeps any task's reschedule date; before it, only a
sensor's or a mapped task's (a plain task would run again at once and meet the spent budget)."""


def spent_budget(exc: BaseException | None) -> Cloud66RateLimitError | None:
    """The spent-budget error behind ``exc`` (itself or a cause, e.g. a copy's failed URL fetch)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, Cloud66RateLimitError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def resume_time(error: Cloud66RateLimitError, now: datetime | None = None) -> datetime:
    """When to try again: the reset, plus a random spread, and never in the past."""
    now = now or datetime.now(UTC)
    reset = error.reset_at or now + timedelta(seconds=60)
    return max(reset, now) + timedelta(seconds=random.uniform(1.0, RESET_SPREAD))


def next_poll_in(rate: RateBudget, poll_interval: float, now: float | None = None) -> float:
    """Seconds until a wait's next poll: the poll interval, or, while the budget is known to be spent,
    until a little after its reset (a poll before it would be refused without being sent)."""
    now = time.time() if now is None else now
    reset = rate.spent_until(now)
    if reset is None:
        return poll_interval
    return max(poll_interval, reset - now + random.uniform(1.0, RESET_SPREAD))


def reschedule_honoured(context: Any, *, sensor: bool = False) -> bool:
    """Whether the scheduler will wait for this task's reschedule date (see RESCHEDULE_HONOURED_FROM)."""
    from airflow import __version__ as airflow_version

    if sensor:
        return True
    ti = context.get("ti") if hasattr(context, "get") else None
    map_index = getattr(ti, "map_index", None)
    if isinstance(map_index, int) and map_index >= 0:
        return True
    major_minor = tuple(int(p) for p in airflow_version.split(".")[:2] if p.isdigit())
    return major_minor >= RESCHEDULE_HONOURED_FROM


def wait_for_reset(
    exc: BaseException, context: Any, log: Any, cancel: threading.Event | None = None, *, sensor: bool = False
) -> None:
    """Handle a failure in a worker-side task: re-raise it unless the budget is spent; then reschedule.

    Raises ``AirflowRescheduleException`` at :func:`resume_time`: the task leaves its worker slot and
    runs again after the reset, without counting a try. Where the scheduler would not keep the date
    (a plain task before Airflow 3.3) it waits in place instead, and returns: the caller tries again.
    """
    error = spent_budget(exc)
    if error is None:
        raise exc
    when = resume_time(error)
    if reschedule_honoured(context, sensor=sensor):
        from airflow.exceptions import AirflowRescheduleException  # the Task SDK's own, re-exported

        log.warning("%s Running again at %s (not a retry: no try is counted).", error, _utc(when))
        raise AirflowRescheduleException(when) from exc
    seconds = max(0.0, (when - datetime.now(UTC)).total_seconds())
    log.warning(
        "%s Waiting %.0f s for the reset in this worker (this Airflow keeps no reschedule date "
        "for a plain task), then trying again.",
        error,
        seconds,
    )
    if cancel is not None:
        if cancel.wait(seconds):
            raise exc
    else:
        time.sleep(seconds)


def defer_until_reset(task: Any, exc: BaseException, method_name: str, log: Any) -> None:
    """Defer ``task`` to a timer until the budget resets (re-raise ``exc`` when it is not a spent budget)."""
    error = spent_budget(exc)
    if error is None:
        raise exc
    try:
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger
    except ImportError:  # pragma: no cover - Airflow without the standard provider
        from airflow.triggers.temporal import DateTimeTrigger  # type: ignore[no-redef]

    when = resume_time(error)
    log.warning("%s Deferring until %s (not a retry: no try is counted).", error, _utc(when))
    task.defer(trigger=DateTimeTrigger(moment=when), method_name=method_name)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class ScheduleCost:
    """The API requests a scheduled archive of N stacks costs, per hour of waiting and per run.

    :param stacks: stacks waited for at once (one sensor each).
    :param poll_interval: seconds between two polls of one waiting sensor.
    :param archives: archives copied per run (one per database type of each stack).
    :param files_per_archive: signed URLs per archive (a split backup has several files).
    :param budget: the token's hourly budget.
    """

    stacks: int
    poll_interval: float
    archives: int
    files_per_archive: float = 1.0
    budget: int = HOURLY_BUDGET

    PER_STACK = 1
    """Requests per stack per run besides polling: the sensor's first check, in the worker."""
    PER_ARCHIVE = 2
    """Requests per archive besides its signed URLs: the file list, and the list's last look before
    the archive completes (the backup record comes from the sensor's XCom)."""

    @property
    def waiting_per_hour(self) -> float:
        """Requests an hour while every stack's sensor is still waiting (one list call per poll)."""
        return self.stacks * 3600.0 / self.poll_interval

    @property
    def per_run(self) -> float:
        """Requests one run spends besides polling."""
        return self.stacks * self.PER_STACK + self.archives * (self.PER_ARCHIVE + self.files_per_archive)

    def shortest_poll_interval(self, reserve: float | None = None) -> float:
        """The shortest poll interval at which waiting leaves ``reserve`` requests an hour (default: one
        run's copies) for everything else."""
        spare = self.budget - (self.per_run if reserve is None else reserve)
        return math.inf if spare <= 0 else self.stacks * 3600.0 / spare

    def problem(self) -> str | None:
        """What to change when the schedule cannot fit the budget; None when it fits."""
        if self.per_run > self.budget:
            return (
                f"copying {self.archives} archives of {self.stacks} stacks takes about {self.per_run:.0f} "
                f"API requests, more than the token's {self.budget} an hour: the run will wait for the "
                "budget's reset (it does not fail); split the stacks over several Cloud 66 tokens "
                "(connections) or runs to finish sooner"
            )
        if self.waiting_per_hour + self.per_run > self.budget:
            return (
                f"{self.stacks} stacks polled every {self.poll_interval:.0f} s need "
                f"{self.waiting_per_hour:.0f} requests an hour while they wait, plus about "
                f"{self.per_run:.0f} to copy {self.archives} archives: more than the token's {self.budget} "
                f"an hour. Tasks will wait for the budget's reset instead of failing, but the archive "
                f"is delayed: raise the poll interval to at least "
                f"{math.ceil(self.shortest_poll_interval())} s"
            )
        return None

"""What "a backup newer than a watermark" means: pure functions shared by the sensor, the operators
and the trigger, so all three wait in exactly the same way.

Cloud 66 has no "run a backup now" call and its POST answers with no backup id. The only public way
to learn an outcome is to list a stack's backups and look for one newer than a watermark taken
before: the newest backup (date and id) per database type, or a date, or a backup id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_c66 import validation
from airflow_provider_c66.api import RetryPolicy
from airflow_provider_c66.exceptions import Cloud66ApiError, Cloud66InputError, Cloud66ResponseError
from airflow_provider_c66.models import Backup, format_datetime, parse_datetime

if TYPE_CHECKING:
    from airflow_provider_c66.hooks.cloud66 import Cloud66Hook

ANY_TYPE = "*"
"""The key of a watermark that any database type may pass."""

POLL_PAGES = 5
"""Most list pages one poll reads (30 backups each); more than page 1 only when :meth:`BackupWait.wants_older`."""

DEFAULT_POLL_INTERVAL = 150.0
"""Seconds between two list requests of one wait.

Cloud 66 allows 3,000 requests per user per hour. One wait sends one request per interval, so 100
concurrent waits at 150 s spend 100 * 3600 / 150 = 2,400 requests an hour, leaving 600 for
watermarks, POSTs and downloads. At 120 s they would spend all 3,000.
"""


@dataclass(frozen=True)
class Watermark:
    """The line a backup must cross to count as new.

    :param newer_than: only backups dated strictly after this moment count.
    :param after_id: this backup never counts. With no ``newer_than``, only backups after it count:
        dated after it when it is on the polled page, else with a higher id (Cloud 66 numbers
        backups in creation order).
    """

    newer_than: datetime | None = None
    after_id: int | None = None

    @classmethod
    def of(cls, newest: Backup | None) -> Watermark:
        """The watermark just above ``newest`` (an open one when there was no backup at all)."""
        return cls(newest.backup_date, newest.id) if newest else cls()

    def admits(self, backup: Backup, page: Sequence[Backup]) -> bool:
        if backup.id == self.after_id:
            return False
        line = self.newer_than
        if line is None and self.after_id is not None:
            reference = next((b for b in page if b.id == self.after_id), None)
            if reference is None:
                return backup.id > self.after_id
            line = reference.backup_date
        return line is None or backup.backup_date > line

    def describe(self) -> str:
        parts = [f"dated after {format_datetime(self.newer_than)}"] if self.newer_than else []
        if self.after_id is not None:
            parts.append(f"{'other than' if self.newer_than else 'after'} backup {self.after_id}")
        return " and ".join(parts) or "any"

    def to_json(self) -> dict[str, Any]:
        return {
            "newer_than": format_datetime(self.newer_than) if self.newer_than else None,
            "after_id": self.after_id,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Watermark:
        newer_than = raw.get("newer_than")
        after_id = raw.get("after_id")
        return cls(
            parse_datetime(newer_than) if newer_than is not None else None,
            validation.backup_id(after_id, "after_id") if after_id is not None else None,
        )


def watermarks_before(existing: Iterable[Backup], db_types: Sequence[str]) -> dict[str, Watermark]:
    """Per requested database type, the watermark above its newest existing backup.

    ``["all"]`` means every type the stack has, learned from its existing backups. A stack with no
    backup at all cannot tell its types: then a single open watermark waits for any new backup.
    """
    newest: dict[str, Backup] = {}
    for backup in existing:
        if backup.db_type not in newest or _key(backup) > _key(newest[backup.db_type]):
            newest[backup.db_type] = backup
    types = (sorted(newest) or [ANY_TYPE]) if list(db_types) == ["all"] else list(db_types)
    return {t: Watermark.of(newest.get(t)) for t in types}


def _key(backup: Backup) -> tuple[datetime, int]:
    return (backup.backup_date, backup.id)


def last_change(backup: Backup) -> datetime:
    """When the record last changed as far as it says: ``updated_at``, else ``created_at``, else its date."""
    return max(d for d in (backup.updated_at, backup.created_at, backup.backup_date) if d is not None)


def watermark_query(db_types: Sequence[str]) -> dict[str, Any]:
    """``latest_backups`` arguments for taking a watermark: as far as a poll reads, no further.

    Page 1 (30 backups, newest first) holds the newest backup of every type it shows. Further pages
    are read only while a requested type is still unseen (``all``: while pages are full), and never
    more than :data:`POLL_PAGES`: a backup a poll could not see cannot matter to the watermark either.
    """
    wanted = set(db_types)

    def read_on(backups: list[Backup]) -> bool:
        return "all" in wanted or not wanted <= {b.db_type for b in backups}

    return {"read_on": read_on, "max_pages": POLL_PAGES}


@dataclass(frozen=True)
class Verdict:
    """What one look at the backups list found.

    :param status: ``waiting``, ``success`` (every watermark passed) or ``failed``.
    :param backups: on success the newest new backup per watermark; on failure the failed ones.
    """

    status: Literal["waiting", "success", "failed"]
    backups: tuple[Backup, ...] = ()

    @property
    def done(self) -> bool:
        return self.status != "waiting"


@dataclass(frozen=True)
class BackupWait:
    """What one wait looks for, in JSON-friendly parts so a trigger can carry it.

    :param stack_id: the stack UID.
    :param marks: per database type (or :data:`ANY_TYPE`) the watermark a backup must pass; the
        wait succeeds when every key has a new backup.
    :param db_type: only backups of this type (sent to the API as a filter).
    :param group: only backups of this group (sent to the API as a filter).
    :param database_name: only backups of this database (the API has no such filter).
    :param fail_on_failed_backup: when the newest new backup failed, the verdict is ``failed``;
        when False, failed backups are passed over and the wait goes on.
    :param settle_seconds: a successful backup counts only once its record has not changed for this
        long (its ``updated_at``, else ``created_at``, else its date): Cloud 66 does not say whether
        a backup's row can appear while its files are still being written. A failed backup ends the
        wait at once whatever this says.
    """

    stack_id: str
    marks: Mapping[str, Watermark] = field(default_factory=lambda: {ANY_TYPE: Watermark()})
    db_type: str | None = None
    group: int | None = None
    database_name: str | None = None
    fail_on_failed_backup: bool = True
    settle_seconds: float = 0.0

    @property
    def query(self) -> dict[str, Any]:
        """Keyword arguments for ``Cloud66Hook.latest_backups``/``alatest_backups``."""
        return {
            "db_type": self.db_type,
            "group": self.group,
            "read_on": self.wants_older,
            "max_pages": POLL_PAGES,
        }

    def _wanted(self, backup: Backup, now: datetime) -> bool:
        return (
            backup.status.is_terminal
            and (self.fail_on_failed_backup or backup.succeeded)
            and self.db_type in (None, backup.db_type)
            # The API filters on ``group`` itself and its records carry no group field: a record
            # that names no group is the server's filtered answer, one that names another is not.
            and (self.group is None or backup.group in (None, self.group))
            and self.database_name in (None, backup.database_name)
            and (backup.failed or self.settled(backup, now))
        )

    def settled(self, backup: Backup, now: datetime | None = None) -> bool:
        """Whether ``backup``'s record is at least ``settle_seconds`` old (always, when that is 0)."""
        if self.settle_seconds <= 0:
            return True
        now = now or datetime.now(UTC)
        return last_change(backup) + timedelta(seconds=self.settle_seconds) <= now

    def _found(self, page: Sequence[Backup], now: datetime | None) -> list[tuple[Watermark, Backup | None]]:
        """Per watermark, the newest wanted backup on ``page`` (newest first) that passes it."""
        now = now or datetime.now(UTC)
        candidates = [b for b in page if self._wanted(b, now)]
        return [
            (
                mark,
                next((b for b in candidates if key in (ANY_TYPE, b.db_type) and mark.admits(b, page)), None),
            )
            for key, mark in self.marks.items()
        ]

    def evaluate(self, backups: Sequence[Backup], now: datetime | None = None) -> Verdict:
        """Judge the polled backups: a failure anywhere ends the wait, else it succeeds once all marks pass."""
        found = [backup for _, backup in self._found(sorted(backups, key=_key, reverse=True), now)]
        newest = [b for b in found if b is not None]
        failed = tuple(b for b in newest if b.failed)
        if failed:
            return Verdict("failed", failed)
        return Verdict("success" if len(newest) == len(found) else "waiting", tuple(newest))

    def wants_older(self, backups: Sequence[Backup]) -> bool:
        """Whether the next (older) page of the list could change the verdict on ``backups``.

        A poll reads page 1 only, unless the whole page is newer than a watermark still unmet: then a
        backup that passes it may have been pushed onto a later page by newer ones (of other types,
        other databases or other groups), and the poll reads on, up to ``POLL_PAGES`` pages.
        """
        page = sorted(backups, key=_key, reverse=True)
        found = self._found(page, None)
        if not page or any(b is not None and b.failed for _, b in found):
            return False
        # Pages run newest first: an older page can hold a backup that passes only if the oldest here does.
        return any(b is None and mark.admits(page[-1], page) for mark, b in found)

    def describe(self) -> str:
        """For log lines and errors: the stack, its filters and the watermarks."""
        filters = [f"{name}={value!r}" for name, value in self._filters() if value is not None]
        marks = "; ".join(
            f"{'any type' if key == ANY_TYPE else key}: {mark.describe()}" for key, mark in self.marks.items()
        )
        return (
            f"stack {self.stack_id!r}" + (f" ({', '.join(filters)})" if filters else "") + f", new = {marks}"
        )

    def _filters(self) -> list[tuple[str, Any]]:
        return [
            ("db_type", self.db_type),
            ("group", self.group),
            ("database_name", self.database_name),
            ("settle_seconds", self.settle_seconds or None),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "stack_id": self.stack_id,
            "marks": {key: mark.to_json() for key, mark in self.marks.items()},
            **dict(self._filters()),
            "fail_on_failed_backup": self.fail_on_failed_backup,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> BackupWait:
        marks = raw.get("marks")
        if not isinstance(marks, Mapping) or not marks:
            raise Cloud66InputError("marks", f"must be a non-empty mapping of watermarks, got {marks!r:.80}")
        return cls(
            stack_id=validation.stack_id(raw.get("stack_id")),
            marks={str(key): Watermark.from_json(value) for key, value in marks.items()},
            db_type=_opt(raw.get("db_type"), validation.db_type),
            group=_opt(raw.get("group"), validation.group),
            database_name=_opt(
                raw.get("database_name"), lambda v: validation.non_empty_str(v, "database_name")
            ),
            fail_on_failed_backup=validation.flag(
                raw.get("fail_on_failed_backup", True), "fail_on_failed_backup"
            ),
            settle_seconds=validation.seconds(
                raw.get("settle_seconds") or 0, "settle_seconds", allow_zero=True
            ),
        )


def _opt(value: Any, check: Any) -> Any:
    return None if value is None else check(value)


def outcome_message(wait: BackupWait, verdict: Verdict) -> str:
    """A person's account of a finished verdict: which backups, and for a failure Cloud 66's own words."""
    if verdict.status == "failed":
        return "; ".join(
            f"Cloud 66 backup {b.id} ({b.db_type} {b.database_name!r}) of stack {wait.stack_id!r} failed "
            f"at {format_datetime(b.backup_date)}: {b.result.strip() or '(Cloud 66 gave no backup_result)'}"
            for b in verdict.backups
        )
    found = ", ".join(f"{b.id} ({b.db_type} {b.database_name!r})" for b in verdict.backups)
    return f"Found new backup(s) of stack {wait.stack_id!r}: {found}" if found else "No new backup yet"


def timeout_message(wait: BackupWait, waited: float) -> str:
    return f"Timed out after {waited:.0f} s waiting for a Cloud 66 backup of {wait.describe()}"


def is_transient(exc: BaseException) -> bool:
    """A fault a later poll can outlive: no answer, throttling, 408/429 or 5xx (not 503 not_implemented).

    Wrong tokens, missing scopes, unknown stacks and unreadable answers are not: they end a wait.
    """
    if not isinstance(exc, Cloud66ApiError) or isinstance(exc, Cloud66ResponseError):
        return False
    status = exc.status
    return status is None or status in (408, 429) or (status >= 500 and exc.error_id != "not_implemented")


def poll(hook: Cloud66Hook, wait: BackupWait, log: Any) -> Verdict | None:
    """The sync twin of the trigger's poll: one list request (rarely more), judged; None after a transient fault."""
    try:
        backups = hook.latest_backups(wait.stack_id, **wait.query)
    except Cloud66ApiError as exc:
        if not is_transient(exc):
            raise
        log.warning("Cloud 66 is not answering well (%s); polling again until the deadline", exc)
        return None
    return wait.evaluate(backups)


def polling_policy(poll_interval: float) -> RetryPolicy:
    """Per-call retries for a polling wait: no single backoff longer than one poll interval.

    The polling loop is itself the outer retry, so a call need not back off for long.
    """
    default = RetryPolicy()
    cap = max(0.01, min(default.backoff_max, poll_interval))
    return replace(default, backoff_base=min(default.backoff_base, cap), backoff_max=cap)

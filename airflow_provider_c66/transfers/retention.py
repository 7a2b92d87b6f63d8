"""Grandfather-father-son retention: which archives a prune keeps, and why. Pure: no I/O, no Airflow.

The rules are those of restic's ``forget --keep-*`` (and of most backup tools): archives are grouped
per (stack, db type, database); within a group they are ordered newest first by the backup's own date
(in UTC; on a tie the higher backup id is the newer), and

- ``keep_last`` N keeps the N newest archives;
- ``keep_daily`` N keeps the newest archive of each of the N most recent days that have archives;
- ``keep_weekly``, ``keep_monthly`` and ``keep_yearly`` do the same per ISO week
  (``date.isocalendar()``: 2027-01-01 is in 2026-W53), per calendar month and per calendar year.

A day (week, month, year) without archives is not counted: ``keep_daily=7`` over a lake with gaps
reaches back past seven calendar days, to the seventh day that has an archive. An archive may be kept
by several rules, and each is given as a reason: ``last 3`` (the third newest of its group),
``daily 2026-03-04``, ``weekly 2026-W53``, ``monthly 2026-03``, ``yearly 2026``. An archive kept by no
rule is deleted. Unlike restic since 0.17, the oldest archive of a group is not kept in addition
when a rule finds fewer periods than it may keep: what is kept is exactly what the rules name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from airflow_provider_c66 import validation
from airflow_provider_c66.exceptions import Cloud66InputError

RULES = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
MAX_KEEP = 1_000_000
Group = tuple[str, str, str]  # (stack id, db type, database)


def _count(value: object, field: str) -> int:
    """An integer from 0 to MAX_KEEP (a numeric string is accepted, as templated fields render so)."""
    return validation.integer(value, field, minimum=0, maximum=MAX_KEEP, note=" (0: this rule keeps nothing)")


@dataclass(frozen=True)
class RetentionPolicy:
    """How many archives, days, ISO weeks, months and years to keep (each ≥ 0, at least one ≥ 1).

    Numeric strings are read as integers (templated arguments render to strings). A policy that
    keeps nothing would delete every archive and is refused with :class:`Cloud66InputError`.
    """

    #: the N newest archives of each group
    keep_last: int = 0
    #: the newest archive of each of the N most recent days that have one
    keep_daily: int = 0
    #: the same per ISO week (2027-01-01 is in 2026-W53)
    keep_weekly: int = 0
    #: the same per calendar month
    keep_monthly: int = 0
    #: the same per calendar year
    keep_yearly: int = 0

    def __post_init__(self) -> None:
        for name in RULES:
            object.__setattr__(self, name, _count(getattr(self, name), name))
        if not any(getattr(self, name) for name in RULES):
            raise Cloud66InputError(
                "keep_*",
                f"at least one of {', '.join(RULES)} must be 1 or more: a policy that keeps nothing would "
                "delete every archive, and is refused",
            )

    @classmethod
    def of(cls, **counts: object) -> RetentionPolicy:
        """A policy from loosely typed values (a DAG param, rendered templates); an unknown rule is
        refused, as is a count that is not an integer ≥ 0."""
        unknown = sorted(set(counts) - set(RULES))
        if unknown:
            raise Cloud66InputError(unknown[0], f"is not a retention rule; the rules are {', '.join(RULES)}")
        return cls(**{name: _count(counts.get(name, 0), name) for name in RULES})

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in RULES}

    def describe(self) -> str:
        """The rules in force, e.g. ``keep_daily=7, keep_weekly=4``."""
        return ", ".join(f"{name}={count}" for name, count in self.as_dict().items() if count)


@dataclass(frozen=True)
class ArchiveEntry:
    """One complete archive, as its manifest describes it."""

    stack_id: str
    db_type: str
    database: str
    backup_id: int
    backup_date: datetime  # timezone-aware; kept in UTC
    manifest_key: str
    object_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.backup_date, datetime) or self.backup_date.tzinfo is None:
            raise ValueError(f"backup_date must be a timezone-aware datetime, got {self.backup_date!r:.60}")
        object.__setattr__(self, "backup_date", self.backup_date.astimezone(UTC))
        object.__setattr__(self, "object_keys", tuple(self.object_keys))

    @property
    def group(self) -> Group:
        return (self.stack_id, self.db_type, self.database)


@dataclass(frozen=True)
class Decision:
    """Keep or delete one archive: kept when at least one rule keeps it (``reasons``)."""

    archive: ArchiveEntry
    reasons: tuple[str, ...]

    @property
    def keep(self) -> bool:
        return bool(self.reasons)


@dataclass(frozen=True)
class Plan:
    """The decisions, per group (groups sorted; each group's archives newest first)."""

    policy: RetentionPolicy
    groups: Mapping[Group, tuple[Decision, ...]]

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return tuple(decision for decisions in self.groups.values() for decision in decisions)

    @property
    def kept(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if d.keep)

    @property
    def deleted(self) -> tuple[Decision, ...]:
        return tuple(d for d in self.decisions if not d.keep)


def _day(date: datetime) -> str:
    return f"{date.year:04d}-{date.month:02d}-{date.day:02d}"


def _iso_week(date: datetime) -> str:
    year, week, _ = date.isocalendar()
    return f"{year:04d}-W{week:02d}"


def _month(date: datetime) -> str:
    return f"{date.year:04d}-{date.month:02d}"


def _year(date: datetime) -> str:
    return f"{date.year:04d}"


# (rule, reason label, the period an archive falls in)
_PERIODS: tuple[tuple[str, str, Callable[[datetime], str]], ...] = (
    ("keep_daily", "daily", _day),
    ("keep_weekly", "weekly", _iso_week),
    ("keep_monthly", "monthly", _month),
    ("keep_yearly", "yearly", _year),
)


def plan(archives: Iterable[ArchiveEntry], policy: RetentionPolicy) -> Plan:
    """Decide, for every archive, keep (and why) or delete, per (stack, db type, database) group.

    :raises ValueError: two entries name the same manifest key.
    """
    groups: dict[Group, list[ArchiveEntry]] = {}
    seen: set[str] = set()
    for entry in archives:
        if entry.manifest_key in seen:
            raise ValueError(f"the archive {entry.manifest_key!r} is listed twice")
        seen.add(entry.manifest_key)
        groups.setdefault(entry.group, []).append(entry)
    decided = {
        group: _decide(
            sorted(groups[group], key=lambda e: (e.backup_date, e.backup_id, e.manifest_key), reverse=True),
            policy,
        )
        for group in sorted(groups)
    }
    return Plan(policy=policy, groups=decided)


def _decide(newest_first: list[ArchiveEntry], policy: RetentionPolicy) -> tuple[Decision, ...]:
    """restic's walk: each rule keeps an archive while it has count left and the archive opens a
    period the rule has not kept yet; the newest first, so each period's newest is the one kept."""
    left = policy.as_dict()
    last_period: dict[str, str] = {}
    decisions = []
    for rank, entry in enumerate(newest_first, start=1):
        reasons: list[str] = []
        if left["keep_last"] > 0:
            left["keep_last"] -= 1
            reasons.append(f"last {rank}")
        for rule, label, period_of in _PERIODS:
            period = period_of(entry.backup_date)
            if left[rule] > 0 and last_period.get(rule) != period:
                left[rule] -= 1
                last_period[rule] = period
                reasons.append(f"{label} {period}")
        decisions.append(Decision(archive=entry, reasons=tuple(reasons)))
    return tuple(decisions)

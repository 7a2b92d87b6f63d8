"""Which stacks and database types a scheduled archive covers: listed by hand, or discovered.

A target is a stack and the database types to archive from it. Grouping a stack's types into one
target lets one sensor wait for all of them with one list request per poll, instead of one
request per type (see :class:`~airflow_provider_c66.sensors.backups.Cloud66BackupSensor`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_c66 import validation
from airflow_provider_c66.exceptions import Cloud66InputError

if TYPE_CHECKING:
    from airflow_provider_c66.hooks.cloud66 import Cloud66Hook

DEFAULT_MAX_AGE_DAYS = 7
"""Discovery archives the database types a stack has backed up within this many days."""


@dataclass(frozen=True)
class Target:
    """One stack and the database types to archive from it."""

    stack_id: str
    db_types: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"stack_id": self.stack_id, "db_types": list(self.db_types)}


def from_pairs(items: object, field: str = "targets") -> list[Target]:
    """``[{"stack_id": ..., "db_type": ...}, ...]`` (or ``db_types`` lists) grouped per stack, checked.

    Stacks keep the order they first appear in; a type listed twice for a stack counts once.
    """
    if not isinstance(items, list) or not items:
        raise Cloud66InputError(field, "must be a non-empty list of {'stack_id': ..., 'db_type': ...}")
    grouped: dict[str, list[str]] = {}
    for number, item in enumerate(items):
        where = f"{field}[{number}]"
        if not isinstance(item, Mapping):
            raise Cloud66InputError(where, f"must be an object with stack_id and db_type, got {item!r:.80}")
        stack = validation.stack_id(item.get("stack_id"), f"{where}.stack_id")
        if "db_types" in item:
            types = validation.db_types(item["db_types"], f"{where}.db_types", allow_all=False)
        else:
            types = [validation.db_type(item.get("db_type"), f"{where}.db_type")]
        known = grouped.setdefault(stack, [])
        known.extend(t for t in types if t not in known)
    return [Target(stack, tuple(types)) for stack, types in grouped.items()]


@dataclass(frozen=True)
class Discovery:
    """Archive every stack the token can see that matches, with the types it backs up.

    :param include: glob patterns on the stack's uid or name (``["*"]``: every stack).
    :param exclude: glob patterns on the uid or name; a match is left out even if included.
    :param db_types: only these database types (default: every type).
    :param max_age_days: a type counts when the stack has backed it up within this many days, so a
        database removed long ago is not waited for.
    """

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    db_types: tuple[str, ...] | None = None
    max_age_days: int = DEFAULT_MAX_AGE_DAYS

    @classmethod
    def from_json(cls, raw: object, field: str = "discover") -> Discovery:
        """The ``discover`` setting, checked: unknown keys and wrong types are refused by name."""
        if not isinstance(raw, Mapping):
            raise Cloud66InputError(field, f"must be an object such as {{'include': ['*']}}, got {raw!r:.80}")
        unknown = sorted(set(raw) - {"include", "exclude", "db_types", "max_age_days"})
        if unknown:
            raise Cloud66InputError(
                field, f"has unknown keys {unknown}; allowed: include, exclude, db_types, max_age_days"
            )
        types = raw.get("db_types")
        return cls(
            include=_patterns(raw.get("include", ["*"]), f"{field}.include"),
            exclude=_patterns(raw.get("exclude", []), f"{field}.exclude"),
            db_types=None
            if types is None
            else tuple(validation.db_types(types, f"{field}.db_types", allow_all=False)),
            max_age_days=validation.positive_int(
                raw.get("max_age_days", DEFAULT_MAX_AGE_DAYS), f"{field}.max_age_days", maximum=3650
            ),
        )

    def matches(self, uid: str, name: str) -> bool:
        def hit(patterns: Iterable[str]) -> bool:
            return any(fnmatch.fnmatchcase(uid, p) or fnmatch.fnmatchcase(name, p) for p in patterns)

        return hit(self.include) and not hit(self.exclude)

    def targets(self, hook: Cloud66Hook, log: Any, now: datetime | None = None) -> list[Target]:
        """List the stacks (one request per 30), then read each match's newest backups (one request
        each) to learn the types it backs up. A stack with no recent backup is skipped and logged."""
        since = (now or datetime.now(UTC)) - timedelta(days=self.max_age_days)
        found: list[Target] = []
        for stack in hook.list_stacks():
            if not self.matches(stack.uid, stack.name):
                continue
            recent = [b for b in hook.latest_backups(stack.uid) if b.backup_date > since]
            types = sorted({b.db_type for b in recent if self.db_types is None or b.db_type in self.db_types})
            if not types:
                log.info(
                    "Stack %r (%s) has no backup%s in the last %d days: not archived",
                    stack.uid,
                    stack.name,
                    f" of {', '.join(self.db_types)}" if self.db_types else "",
                    self.max_age_days,
                )
                continue
            found.append(Target(stack.uid, tuple(types)))
        return found


def _patterns(value: object, field: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(p, str) and p.strip() for p in items):
        raise Cloud66InputError(
            field, f"must be a list of glob patterns such as ['prod-*'], got {value!r:.80}"
        )
    return tuple(p.strip() for p in items)

"""The retention planner on its own (no S3, no Airflow): restic's ``forget --keep-*`` rules, exactly.

The lake spans two years of one database's archives, with the calendar's awkward corners: two
archives on one day, two with the same date (the higher backup id is the newer), ISO week 53
(2026-12-28, 2026-12-31 and 2027-01-01 are all in 2026-W53), a year boundary an hour apart, and
the leap day 2028-02-29.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from airflow_provider_c66.exceptions import Cloud66InputError
from airflow_provider_c66.transfers.retention import RULES, ArchiveEntry, RetentionPolicy, plan

GROUP = ("stack-1", "mysql", "shop")
PLUS_ONE = timezone(timedelta(hours=1))


def entry(
    backup_id: int, date: datetime, group: tuple[str, str, str] = GROUP, key: str | None = None
) -> ArchiveEntry:
    stack, db_type, database = group
    prefix = key or f"cloud66/{stack}/{db_type}/{database}/{backup_id}/"
    return ArchiveEntry(
        stack_id=stack,
        db_type=db_type,
        database=database,
        backup_id=backup_id,
        backup_date=date,
        manifest_key=prefix + "manifest.json",
        object_keys=(prefix + "db.tar",),
    )


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# backup id -> date. Newest first: 14, 13, 12, ... 1.
LAKE_DATES = {
    1: utc("2026-03-04T03:00"),  # two archives on one day: 2 is the day's newest
    2: utc("2026-03-04T21:00"),
    3: utc("2026-03-30T12:00"),
    4: utc("2026-11-15T12:00"),  # 2026-W46
    5: utc("2026-12-28T08:00"),  # Monday of 2026-W53
    # 2026-12-31T23:30Z and 2027-01-01T00:30Z, given in UTC+1: the UTC date decides day, month, year.
    6: datetime(2027, 1, 1, 0, 30, tzinfo=PLUS_ONE),  # 2026-W53, 2026-12, 2026
    7: datetime(2027, 1, 1, 1, 30, tzinfo=PLUS_ONE),  # 2026-W53 too, but 2027-01 and 2027
    8: utc("2027-01-04T06:00"),  # 2027-W01
    9: utc("2027-07-14T12:00"),  # 2027-W28
    10: utc("2027-12-31T12:00"),  # 2027-W52
    11: utc("2028-02-28T12:00"),  # 2028-W09
    12: utc("2028-02-29T12:00"),  # the leap day, 2028-W09
    13: utc("2028-03-01T12:00"),  # the same instant as 14: 14 is the newer
    14: utc("2028-03-01T12:00"),
}


def lake() -> list[ArchiveEntry]:
    entries = [entry(bid, date) for bid, date in LAKE_DATES.items()]
    random.Random(7).shuffle(entries)  # the input order never matters
    return entries


def kept(policy: RetentionPolicy, entries: list[ArchiveEntry] | None = None) -> dict[int, tuple[str, ...]]:
    """backup id -> reasons, for the kept archives."""
    return {d.archive.backup_id: d.reasons for d in plan(entries or lake(), policy).kept}


# --- each rule's exact kept set -------------------------------------------------------------------
def test_keep_last_keeps_the_newest_and_breaks_a_tie_by_the_higher_backup_id():
    assert kept(RetentionPolicy(keep_last=3)) == {14: ("last 1",), 13: ("last 2",), 12: ("last 3",)}
    assert kept(RetentionPolicy(keep_last=1)) == {14: ("last 1",)}


def test_keep_daily_keeps_each_days_newest_over_the_days_that_have_archives():
    assert kept(RetentionPolicy(keep_daily=4)) == {
        14: ("daily 2028-03-01",),
        12: ("daily 2028-02-29",),
        11: ("daily 2028-02-28",),
        10: ("daily 2027-12-31",),
    }
    # Every day: the newest of 2026-03-04 (2) and of 2028-03-01 (14) only; 6 is 2026-12-31 in UTC.
    everything = kept(RetentionPolicy(keep_daily=100))
    assert sorted(everything) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14]
    assert everything[6] == ("daily 2026-12-31",) and everything[7] == ("daily 2027-01-01",)


def test_keep_weekly_uses_iso_weeks_across_week_53():
    assert kept(RetentionPolicy(keep_weekly=5)) == {
        14: ("weekly 2028-W09",),
        10: ("weekly 2027-W52",),
        9: ("weekly 2027-W28",),
        8: ("weekly 2027-W01",),
        7: ("weekly 2026-W53",),  # 2027-01-01 is the newest of 2026-W53: 6 and 5 are not kept
    }
    assert sorted(kept(RetentionPolicy(keep_weekly=6))) == [4, 7, 8, 9, 10, 14]


def test_keep_monthly_keeps_each_months_newest_the_leap_day_for_february():
    assert kept(RetentionPolicy(keep_monthly=5)) == {
        14: ("monthly 2028-03",),
        12: ("monthly 2028-02",),
        10: ("monthly 2027-12",),
        9: ("monthly 2027-07",),
        8: ("monthly 2027-01",),
    }
    assert sorted(kept(RetentionPolicy(keep_monthly=7))) == [4, 6, 8, 9, 10, 12, 14]


def test_keep_yearly_splits_years_by_the_utc_date_and_adds_no_oldest():
    assert kept(RetentionPolicy(keep_yearly=3)) == {
        14: ("yearly 2028",),
        10: ("yearly 2027",),
        6: ("yearly 2026",),  # 2027-01-01T00:30+01:00 is still 2026 in UTC
    }
    # More years asked than the lake has: still only each year's newest (restic 0.17 would add 1).
    assert kept(RetentionPolicy(keep_yearly=10)) == kept(RetentionPolicy(keep_yearly=3))


def test_rules_combine_and_an_archive_kept_for_several_reasons_lists_them_all():
    policy = RetentionPolicy(keep_last=2, keep_daily=3, keep_weekly=2, keep_monthly=3, keep_yearly=2)
    decided = plan(lake(), policy)
    assert {d.archive.backup_id: d.reasons for d in decided.kept} == {
        14: ("last 1", "daily 2028-03-01", "weekly 2028-W09", "monthly 2028-03", "yearly 2028"),
        13: ("last 2",),
        12: ("daily 2028-02-29", "monthly 2028-02"),
        11: ("daily 2028-02-28",),
        10: ("weekly 2027-W52", "monthly 2027-12", "yearly 2027"),
    }
    assert [d.archive.backup_id for d in decided.deleted] == [9, 8, 7, 6, 5, 4, 3, 2, 1]
    assert all(not d.keep and d.reasons == () for d in decided.deleted)
    assert [d.archive.backup_id for d in decided.decisions] == list(range(14, 0, -1)), "newest first"


def test_groups_are_planned_apart():
    other_db = ("stack-1", "postgresql", "ledger")
    other_stack = ("stack-2", "mysql", "shop")  # same db type and name, another stack
    entries = [
        *lake(),
        entry(100, utc("2026-05-01T00:00"), other_db),
        entry(101, utc("2026-05-02T00:00"), other_db),
        entry(200, utc("2020-01-01T00:00"), other_stack),
    ]
    decided = plan(entries, RetentionPolicy(keep_last=1))
    assert list(decided.groups) == sorted([GROUP, other_db, other_stack])
    assert {d.archive.backup_id: d.reasons for d in decided.kept} == {
        14: ("last 1",),
        101: ("last 1",),
        200: ("last 1",),
    }
    assert [d.archive.backup_id for d in decided.groups[other_db]] == [101, 100]


def test_a_tie_on_date_and_id_is_broken_by_the_manifest_key():
    """The same backup archived under two prefixes: one is kept, always the same one."""
    date = utc("2027-06-01T00:00")
    a, b = entry(5, date, key="a/5/"), entry(5, date, key="b/5/")
    for order in ([a, b], [b, a]):
        assert [d.archive.manifest_key for d in plan(order, RetentionPolicy(keep_daily=1)).kept] == [
            "b/5/manifest.json"
        ]


def test_bad_entries_are_refused():
    with pytest.raises(ValueError, match="listed twice"):
        plan(
            [entry(1, utc("2027-01-01T00:00")), entry(1, utc("2027-01-01T00:00"))],
            RetentionPolicy(keep_last=1),
        )
    with pytest.raises(ValueError, match="timezone-aware"):
        entry(1, datetime(2027, 1, 1))


# --- the policy -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({}, "keep_*", "at least one of keep_last, keep_daily, keep_weekly, keep_monthly, keep_yearly"),
        ({"keep_daily": 0, "keep_last": "0"}, "keep_*", "a policy that keeps nothing would delete every"),
        ({"keep_daily": -1}, "keep_daily", "must be an integer from 0 to 1000000"),
        ({"keep_weekly": 2.5}, "keep_weekly", "got 2.5 (float)"),
        ({"keep_monthly": True}, "keep_monthly", "got True (bool)"),
        ({"keep_yearly": "seven"}, "keep_yearly", "got 'seven' (str)"),
        ({"keep_last": None}, "keep_last", "got None (NoneType)"),
        ({"keep_last": 10**7}, "keep_last", "must be an integer from 0 to 1000000"),
        ({"keep_hourly": 24}, "keep_hourly", "is not a retention rule; the rules are keep_last"),
    ],
)
def test_a_policy_is_refused_naming_the_field_and_what_is_allowed(
    kwargs: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(Cloud66InputError) as info:
        RetentionPolicy.of(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert message in str(info.value)


def test_a_policy_reads_numeric_strings_as_templated_fields_render_them():
    policy = RetentionPolicy.of(keep_daily="7", keep_weekly=" 4 ")
    assert policy == RetentionPolicy(keep_daily=7, keep_weekly=4)
    assert policy.describe() == "keep_daily=7, keep_weekly=4"
    with pytest.raises(Cloud66InputError, match=r"^keep_\*: "):
        RetentionPolicy()


# --- properties -----------------------------------------------------------------------------------
GROUPS = [GROUP, ("stack-1", "redis", "cache"), ("stack-2", "mysql", "shop")]


@st.composite
def lakes(draw: Any) -> list[ArchiveEntry]:
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(GROUPS),
                st.integers(min_value=1, max_value=40),  # repeated ids: ties
                st.datetimes(min_value=datetime(2025, 12, 20), max_value=datetime(2028, 3, 5)),
            ),
            max_size=40,
        )
    )
    return [
        entry(bid, date.replace(tzinfo=UTC), group, key=f"lake/{index}/")
        for index, (group, bid, date) in enumerate(rows)
    ]


counts = st.fixed_dictionaries({name: st.integers(min_value=0, max_value=6) for name in RULES}).filter(
    lambda c: any(c.values())
)


@settings(max_examples=300, deadline=None)
@given(entries=lakes(), bigger=counts, data=st.data())
def test_the_kept_set_never_grows_when_every_rule_shrinks(
    entries: list[ArchiveEntry], bigger: dict[str, int], data: Any
) -> None:
    smaller = {name: data.draw(st.integers(min_value=0, max_value=count)) for name, count in bigger.items()}
    assume(any(smaller.values()))
    big = plan(entries, RetentionPolicy(**bigger))
    small = plan(entries, RetentionPolicy(**smaller))
    assert {d.archive.manifest_key for d in small.kept} <= {d.archive.manifest_key for d in big.kept}


@settings(max_examples=300, deadline=None)
@given(entries=lakes(), policy=counts)
def test_every_archive_is_decided_once_and_nothing_else(
    entries: list[ArchiveEntry], policy: dict[str, int]
) -> None:
    decided = plan(entries, RetentionPolicy(**policy))
    assert sorted(d.archive.manifest_key for d in decided.decisions) == sorted(
        e.manifest_key for e in entries
    )
    assert {d.archive for d in decided.decisions} == set(entries)
    assert all(d.keep == bool(d.reasons) for d in decided.decisions)


@settings(max_examples=300, deadline=None)
@given(entries=lakes(), last=st.integers(min_value=1, max_value=8), policy=counts)
def test_keep_last_keeps_exactly_the_n_newest_of_each_group(
    entries: list[ArchiveEntry], last: int, policy: dict[str, int]
) -> None:
    def newest(group: tuple[str, str, str]) -> set[str]:
        members = sorted(
            (e for e in entries if e.group == group),
            key=lambda e: (e.backup_date, e.backup_id, e.manifest_key),
            reverse=True,
        )
        return {e.manifest_key for e in members[:last]}

    expected = set().union(*(newest(g) for g in GROUPS))
    only_last = plan(entries, RetentionPolicy(keep_last=last))
    assert {d.archive.manifest_key for d in only_last.kept} == expected
    # With other rules as well, the N newest are still kept (and "last n" says which they are).
    combined = plan(entries, RetentionPolicy(**{**policy, "keep_last": last}))
    assert expected <= {d.archive.manifest_key for d in combined.kept}
    for decisions in combined.groups.values():
        for rank, decision in enumerate(decisions, start=1):
            assert (f"last {rank}" in decision.reasons) == (rank <= last)

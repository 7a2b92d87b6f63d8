"""What a scheduled archive covers: targets listed by hand and grouped per stack, or discovered."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airflow_provider_c66.exceptions import Cloud66InputError
from airflow_provider_c66.hooks.cloud66 import Cloud66Hook
from airflow_provider_c66.models import Stack
from airflow_provider_c66.targets import Discovery, Target, from_pairs

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def test_pairs_are_grouped_per_stack_in_first_seen_order():
    items = [
        {"stack_id": "shop", "db_type": "mysql"},
        {"stack_id": "blog", "db_type": "postgresql"},
        {"stack_id": "shop", "db_type": "REDIS "},
        {"stack_id": "shop", "db_type": "mysql"},
        {"stack_id": "blog", "db_types": ["postgresql", "redis"]},
    ]
    assert from_pairs(items) == [Target("shop", ("mysql", "redis")), Target("blog", ("postgresql", "redis"))]
    assert from_pairs(items)[0].to_json() == {"stack_id": "shop", "db_types": ["mysql", "redis"]}


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([], "targets"),
        ({"stack_id": "shop"}, "targets"),
        (["shop"], "targets[0]"),
        ([{"stack_id": "shop", "db_type": "oracle"}], "targets[0].db_type"),
        ([{"stack_id": "../x", "db_type": "mysql"}], "targets[0].stack_id"),
        ([{"stack_id": "shop", "db_types": ["all"]}], "targets[0].db_types"),
    ],
)
def test_bad_targets_name_the_item_and_field(items: Any, field: str):
    with pytest.raises(Cloud66InputError) as info:
        from_pairs(items)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("prod-*", "discover"),
        ({"include": "prod-*", "exlude": ["x"]}, "discover"),
        ({"include": [""]}, "discover.include"),
        ({"exclude": [3]}, "discover.exclude"),
        ({"db_types": ["sqlite"]}, "discover.db_types"),
        ({"max_age_days": 0}, "discover.max_age_days"),
    ],
)
def test_bad_discovery_settings_are_refused_by_name(raw: Any, field: str):
    with pytest.raises(Cloud66InputError) as info:
        Discovery.from_json(raw)
    assert info.value.field == field


def test_include_and_exclude_match_the_uid_or_the_name():
    rules = Discovery.from_json({"include": ["*-prod", "Billing*"], "exclude": ["legacy-*"]})
    assert rules.matches("shop-prod", "Shop")
    assert rules.matches("b1", "Billing API")
    assert not rules.matches("legacy-prod", "Old shop"), "excluded wins"
    assert not rules.matches("shop-staging", "Shop (staging)")
    assert Discovery().matches("anything", "at all")


def test_discovery_archives_the_types_each_matching_stack_backed_up_lately(cloud66_emulator_factory, caplog):
    emu = cloud66_emulator_factory(stacks=())
    for uid in ("shop-prod", "blog-prod", "quiet-prod", "shop-staging"):
        emu.add_stack(uid, databases=[("mysql", "app"), ("redis", "cache")])
    now = datetime.now(UTC)
    emu.add_backup("shop-prod", db_type="mysql", database_name="app", backup_date=now - timedelta(days=1))
    emu.add_backup("shop-prod", db_type="redis", database_name="cache", backup_date=now - timedelta(days=2))
    emu.add_backup("blog-prod", db_type="redis", database_name="cache", backup_date=now - timedelta(hours=1))
    emu.add_backup("blog-prod", db_type="mysql", database_name="app", backup_date=now - timedelta(days=30))
    emu.add_backup("quiet-prod", db_type="mysql", database_name="app", backup_date=now - timedelta(days=40))
    emu.add_backup("shop-staging", db_type="mysql", database_name="app", backup_date=now)

    with caplog.at_level(logging.INFO):
        found = Discovery.from_json({"include": ["*-prod"]}).targets(Cloud66Hook(), logging.getLogger("t"))

    assert found == [Target("shop-prod", ("mysql", "redis")), Target("blog-prod", ("redis",))]
    assert "'quiet-prod'" in caplog.text and "no backup in the last 7 days" in caplog.text
    paths = [r.path for r in emu.requests]
    assert paths[0] == "/api/3/stacks.json"
    assert "/api/3/stacks/shop-staging/backups.json" not in paths, "an unmatched stack costs nothing"
    assert len(paths) == 1 + 3, "the stack list, then one read per matching stack"

    mysql_only = Discovery.from_json({"db_types": ["mysql"], "max_age_days": 60}).targets(
        Cloud66Hook(), logging.getLogger("t")
    )
    assert [(t.stack_id, t.db_types) for t in mysql_only] == [
        ("shop-prod", ("mysql",)),
        ("blog-prod", ("mysql",)),
        ("quiet-prod", ("mysql",)),
        ("shop-staging", ("mysql",)),
    ]


def test_list_stacks_reads_every_page(cloud66_emulator_factory):
    emu = cloud66_emulator_factory(stacks=[f"stack-{n:02d}" for n in range(35)])
    stacks = Cloud66Hook().list_stacks()
    assert [s.uid for s in stacks] == [f"stack-{n:02d}" for n in range(35)]
    assert stacks[0] == Stack("stack-00", "Stack stack-00", "production")
    assert [r.query.get("page") for r in emu.requests] == ["1", "2"]

"""The benchmark's report (benchmarks/copy_to_s3.py): the WAN goal is printed with the bound the S3 side
sets in the same run, so a reader sees whether a NOT MET is the engine's or the server's."""

from __future__ import annotations

from typing import Any

from tests.helpers import load_benchmark

bench = load_benchmark("copy_to_s3")


def runs(operator_mib_s: float, upload_mib_s: float) -> dict[str, Any]:
    return {"operator": {"mib_s": operator_mib_s}, "upload": {"mib_s": upload_mib_s}}


def test_the_wan_bound_is_the_upload_only_limit_over_the_link_and_the_operator_over_that_limit() -> None:
    limit, of_limit, text = bench.upload_bound(runs(44.8, 48.0), cap=16.0)
    assert (limit, round(of_limit, 6)) == (0.75, round(44.8 / 48.0, 6))
    assert text.splitlines() == [
        "  the upload-only limit (the same UploadPart calls from memory, no download): 0.750 of the link;",
        "  the operator: 0.933 of that limit",
        "  (the limit is below 0.8 on its own: at 8 MiB parts, 4 in flight, this S3 server takes",
        "  too long over each part for any copy to meet the first WAN goal in this run)",
    ]


def test_a_limit_that_leaves_room_for_the_goal_is_stated_without_the_caveat() -> None:
    limit, of_limit, text = bench.upload_bound(runs(45.2, 53.76), cap=16.0)
    assert (limit, round(of_limit, 3)) == (0.84, 0.841)
    assert text.endswith("the operator: 0.841 of that limit")
    assert "below 0.8" not in text

"""The benchmark's report (benchmarks/copy_to_s3.py): the WAN goal is printed with the bound the S3 side
sets in the same run, so a reader sees whether a NOT MET is the engine's or the server's."""

from __future__ import annotations

from typing import Any

from tests.helpers import load_benchmark

bench = load_benchmark("copy_to_s3")


def runs(operator_mib_s: float, upload_mib_s: float) -> dict[str, Any]:
    """The operator's and the upload-only limit's figures for 512 MiB at 8 MiB parts, 4 in flight."""
    size = 512 * bench.MiB
    upload = {"mib_s": upload_mib_s, "seconds": 512 / upload_mib_s, "size": size}
    return {
        "operator": {"mib_s": operator_mib_s},
        "upload": {**upload, "part_size": 8 * bench.MiB, "concurrency": 4},
    }


def test_the_wan_bound_is_the_upload_only_limit_the_operators_share_and_a_buffered_copys_ceiling() -> None:
    limit, of_limit, ceiling, text = bench.upload_bound(runs(44.8, 48.0), cap=16.0)
    # 512 MiB in 512 / 48 s, plus one 8 MiB part at 16 MiB/s: 512 / (10.667 + 0.5) of 64 MiB/s
    assert (limit, round(of_limit, 6), round(ceiling, 6)) == (
        0.75,
        round(44.8 / 48.0, 6),
        round(8 / 11.1666667, 6),
    )
    assert text.splitlines() == [
        "  the upload-only limit (the same UploadPart calls from memory, no download): 0.750 of the link;",
        "  the operator: 0.933 of that limit;",
        "  a copy that downloads a part before it uploads it: at most 0.716 of the link (the limit's 10.67 s",
        "  and one part's download at the cap, 0.50 s)",
        "  (below 0.8: at 8 MiB parts, 4 in flight, the time this S3 server takes over the",
        "  parts and the Complete leaves no such copy able to meet the first WAN goal in this run)",
    ]


def test_a_limit_above_the_goal_can_still_leave_a_buffered_copy_below_it() -> None:
    # the quiet run of 2026-12-06: the limit alone leaves room, its time plus the first part does not
    limit, _, ceiling, text = bench.upload_bound(runs(45.7, 53.3), cap=16.0)
    assert (round(limit, 3), round(ceiling, 3)) == (0.833, 0.792)
    assert "at most 0.792 of the link" in text
    assert "(below 0.8: at 8 MiB parts, 4 in flight," in text


def test_a_ceiling_that_leaves_room_for_the_goal_is_stated_without_the_caveat() -> None:
    limit, of_limit, ceiling, text = bench.upload_bound(runs(50.0, 60.0), cap=16.0)
    assert (round(limit, 3), round(of_limit, 3), round(ceiling, 3)) == (0.938, 0.833, 0.886)
    assert text.endswith("and one part's download at the cap, 0.50 s)")
    assert "below 0.8" not in text

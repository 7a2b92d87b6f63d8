"""The benchmark's charts (benchmarks/charts.py): each PNG is written at its size, and a peer that did not
run is drawn as missing, never dropped. The figures are synthetic, in the shape copy_to_s3.py builds
(the dict it writes with --json); benchmarks/ is not a package, so its modules are loaded by path.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import load_benchmark

pytest.importorskip("matplotlib")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MiB = 1 << 20

charts = load_benchmark("charts")


def result(name: str, size_mib: int, mib_s: float, concurrency: int = 4, **extra: Any) -> dict[str, Any]:
    """One run as Bench.run returns it (the child's figures, then the parent's)."""
    size = size_mib * MiB
    return {
        "seconds": size_mib / mib_s,
        "cpu": 1.5,
        "peak_rss": 213 * MiB,
        "import_rss": 128 * MiB,
        "keys": [f"{name}/1/app_db.tar"],
        "copy_seconds": size_mib / mib_s,
        "uploaded_bytes": size,
        "s3_cpu": 2.0,
        "emulator_cpu": 0.5,
        "name": name,
        "size": size,
        "mib_s": mib_s,
        "concurrency": concurrency,
        "verified": True,
        **extra,
    }


def figures() -> dict[str, Any]:
    """A full run (both scenarios) where rclone was not installed and naive did not fit in loopback."""
    operator = result("operator", 1024, 149.2)
    operator.update(samples=[operator.copy(), result("operator", 1024, 140.0)], cpu_least=1.4)
    wan_operator = result("operator (WAN)", 512, 44.1, proxy_cpu={"emulator": 1.0, "s3": 1.2})
    sweep = [result(f"operator (WAN, c={c})", 512, mib_s, c) for c, mib_s in ((1, 15.0), (2, 28.5))]
    sweep += [wan_operator, result("operator (WAN, c=8)", 512, 70.3, 8)]
    return {
        "load_before": [0.4, 0.3, 0.2],
        "missing_peers": {
            "rclone": "rclone is not installed: apt-get install rclone (make bench does, as root)"
        },
        "loopback": {
            "runs": {
                "upload": result("upload-only", 1024, 155.0),
                "operator": operator,
                "download": result("download-only", 1024, 1800.0, verified=None),
            },
            "peers": {"aws": result("aws", 1024, 137.0), "s5cmd": result("s5cmd", 1024, 154.9)},
            "naive_fits": False,
            "seconds": 300.0,
        },
        "wan": {
            "runs": {
                "download": result("download-only (WAN)", 512, 58.1, verified=None),
                "upload": result("upload-only (WAN)", 512, 51.6),
                "operator": wan_operator,
            },
            "peers": {
                "aws": result("aws (WAN)", 512, 15.2),
                "s5cmd": result("s5cmd (WAN)", 512, 14.5),
                "naive": result("naive (WAN)", 512, 7.7),
            },
            "naive_fits": True,
            "proxy_check": {"cap_mib": 16.0, "rtt_ms": 30.0, "size_mib": 32.0},
            "split": 171 * MiB,
            "sweep": sweep,
            "seconds": 240.0,
        },
    }


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which a PNG must start with after its signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_both_charts_are_written_at_their_size(tmp_path: Path) -> None:
    written = charts.write_charts(figures(), tmp_path / "bench")

    assert [chart.path.name for chart in written] == ["throughput.png", "concurrency.png"]
    assert png_size(written[0].path) == charts.pixels(charts.THROUGHPUT_INCHES) == (1200, 520)
    assert png_size(written[1].path) == charts.pixels(charts.CONCURRENCY_INCHES) == (800, 520)


def test_a_peer_that_did_not_run_is_drawn_as_such(tmp_path: Path) -> None:
    chart = charts.throughput_chart(figures(), tmp_path / "throughput.png")

    assert chart.texts == [
        ("loopback", "this operator", "149.2"),
        ("loopback", "curl | aws s3 cp -", "137.0"),
        ("loopback", "curl | s5cmd pipe", "154.9"),
        ("loopback", "curl | rclone rcat", "missing"),
        ("loopback", "HttpToS3Operator-style", "skipped (memory)"),
        ("WAN", "this operator", "44.1"),
        ("WAN", "curl | aws s3 cp -", "15.2"),
        ("WAN", "curl | s5cmd pipe", "14.5"),
        ("WAN", "curl | rclone rcat", "missing"),
        ("WAN", "HttpToS3Operator-style", "7.7"),
    ]


def test_the_concurrency_chart_labels_each_point_with_its_share_of_the_link(tmp_path: Path) -> None:
    chart = charts.concurrency_chart(figures(), tmp_path / "concurrency.png")

    assert chart.texts == [
        ("WAN", "max_concurrency 1", "15.0 (94%)"),
        ("WAN", "max_concurrency 2", "28.5 (89%)"),
        ("WAN", "max_concurrency 4", "44.1 (69%)"),
        ("WAN", "max_concurrency 8", "70.3 (55%)"),
    ]


def test_one_scenario_gives_what_it_can(tmp_path: Path) -> None:
    loopback_only = figures()
    del loopback_only["wan"]

    written = charts.write_charts(loopback_only, tmp_path)

    assert [chart.path.name for chart in written] == ["throughput.png"]
    assert {text[0] for text in written[0].texts} == {"loopback"}


def test_the_benchmark_runs_on_without_matplotlib(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def no_matplotlib(figures: dict[str, Any], directory: Path) -> list[Any]:
        raise ModuleNotFoundError("No module named 'matplotlib'")

    monkeypatch.syspath_prepend(str(BENCHMARKS))  # copy_to_s3 imports charts from beside itself
    monkeypatch.setitem(sys.modules, "charts", charts)
    monkeypatch.setattr(charts, "write_charts", no_matplotlib)

    load_benchmark("copy_to_s3").write_charts(figures(), tmp_path)

    assert "charts skipped: No module named 'matplotlib'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())

"""PNG charts of a benchmark run: copy_to_s3.py draws them at its end (``make bench``: into docs/bench).

    .venv/bin/python benchmarks/charts.py FIGURES.json [--out DIR]

redraws them from a ``copy_to_s3.py --json`` file. The functions take the figures dict copy_to_s3.py
builds (the one it writes with ``--json``) and import matplotlib inside, so that the benchmark runs,
and says why there are no charts, without it (matplotlib is in the ``bench`` extra only). They draw on
matplotlib's Agg canvas, never a window, and at a fixed pixel size (no tight bounding box).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MiB = 1 << 20
DPI = 100
THROUGHPUT_INCHES = (12.0, 5.2)  # 1200 x 520 pixels
CONCURRENCY_INCHES = (8.0, 5.2)  # 800 x 520 pixels
CHARTS_DIR = Path(__file__).resolve().parents[1] / "docs" / "bench"
# The contenders, top to bottom; a peer's name as in copy_to_s3.PEERS.
CONTENDERS = {
    "operator": "this operator",
    "aws": "curl | aws s3 cp -",
    "s5cmd": "curl | s5cmd pipe",
    "rclone": "curl | rclone rcat",
    "naive": "HttpToS3Operator-style",
}
OPERATOR_COLOUR, PEER_COLOUR, UPLOAD_COLOUR, DOWNLOAD_COLOUR, LINK_COLOUR = (
    "#1f5fa8",
    "#9aa7b4",
    "#d9822b",
    "#3a9a5b",
    "#c0392b",
)


class Chart(NamedTuple):
    """A PNG written, and the texts drawn beside its bars or points: (panel, row, text), in order."""

    path: Path
    texts: list[tuple[str, str, str]]


def pixels(inches: tuple[float, float]) -> tuple[int, int]:
    """The (width, height) in pixels of a chart drawn at ``inches``: what the test checks."""
    return round(inches[0] * DPI), round(inches[1] * DPI)


def _figure(inches: tuple[float, float], columns: int = 1) -> tuple[Figure, list[Axes]]:
    """A figure on the Agg canvas (no display, no pyplot state), laid out so that no text is clipped."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=inches, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, list(axes)


def _save(figure: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI)


def _wan_link(wan: dict[str, Any]) -> tuple[float, float, int]:
    """(cap MiB/s a connection each way, round trip ms, files the backup is split into)."""
    check, size = wan["proxy_check"], wan["runs"]["operator"]["size"]
    return float(check["cap_mib"]), float(check["rtt_ms"]), math.ceil(size / wan["split"])


def _rows(figures: dict[str, Any]) -> list[str]:
    """The operator, then every peer that ran or was missing in any scenario (none silently dropped)."""
    named = set(figures.get("missing_peers", {}))
    for scenario in ("loopback", "wan"):
        named.update(figures.get(scenario, {}).get("peers", {}))
    return ["operator", *(name for name in CONTENDERS if name in named)]


def _throughput_panel(
    ax: Axes, panel: str, scenario: dict[str, Any], rows: list[str], missing: dict[str, str]
) -> list[tuple[str, str, str]]:
    """One scenario's bars, top to bottom in ``rows``; a peer without a result is written, not left out."""
    runs = scenario["runs"]
    results = {"operator": runs["operator"], **scenario["peers"]}
    values = [float(results[name]["mib_s"]) if name in results else None for name in rows]
    lines = [("upload-only limit (the same UploadParts from memory)", float(runs["upload"]["mib_s"]))]
    if panel == "WAN":
        cap, _, _ = _wan_link(scenario)
        parts = int(runs["operator"]["concurrency"])
        lines.append((f"the connections' limit: {parts} × {cap:g} MiB/s", parts * cap))
    right = 1.2 * max([value for value in values if value is not None] + [mib_s for _, mib_s in lines])
    positions = list(range(len(rows)))
    colours = [OPERATOR_COLOUR if name == "operator" else PEER_COLOUR for name in rows]
    ax.barh(positions, [value or 0.0 for value in values], color=colours, height=0.6)
    texts = []
    for position, name, value in zip(positions, rows, values, strict=True):
        if value is not None:
            text = f"{value:.1f}"
            ax.text(value + right * 0.01, position, text, va="center", fontsize=9)
        else:
            text = "missing" if name in missing else "not run"
            if name == "naive" and not scenario.get("naive_fits", True):
                text = "skipped (memory)"  # run only with 3 x the backup + 2 GiB available
            ax.text(right * 0.01, position, text, va="center", fontsize=9, style="italic", color="#666666")
        texts.append((panel, CONTENDERS[name], text))
    for (label, mib_s), style, colour in zip(lines, (":", "--"), (UPLOAD_COLOUR, LINK_COLOUR), strict=False):
        ax.axvline(mib_s, linestyle=style, color=colour, linewidth=1.5, label=f"{label}: {mib_s:.1f}")
    ax.set_yticks(positions, [CONTENDERS[name] for name in rows])
    ax.set_ylim(len(rows) + 0.4, -0.6)  # the operator on top; a free row at the bottom for the legend
    ax.set_xlim(0, right)
    ax.set_xlabel("MiB/s (backup size / wall time)")
    ax.legend(loc="lower right", fontsize=8, framealpha=0.95)
    ax.grid(axis="x", alpha=0.3)
    return texts


def throughput_chart(figures: dict[str, Any], path: Path) -> Chart:
    """Each contender's MiB/s, loopback and WAN side by side (whichever of the two the run had)."""
    panels = [scenario for scenario in ("loopback", "wan") if scenario in figures]
    if not panels:
        raise ValueError("the figures hold neither scenario")
    figure, axes = _figure(THROUGHPUT_INCHES, len(panels))
    rows, missing = _rows(figures), figures.get("missing_peers", {})
    texts = []
    for ax, scenario in zip(axes, panels, strict=True):
        data, operator = figures[scenario], figures[scenario]["runs"]["operator"]
        size = int(operator["size"]) // MiB
        if scenario == "loopback":
            repeats = len(operator.get("samples", [operator]))
            runs = f"best of {repeats} runs" if repeats > 1 else "one run each"
            title = f"loopback: {size} MiB backup, everything on 127.0.0.1\n{runs}"
            panel = "loopback"
        else:
            cap, rtt, split_into = _wan_link(data)
            title = (
                f"WAN: {size} MiB backup in {split_into} files, one run each\n"
                f"every connection {cap:g} MiB/s each way, {rtt:g} ms round trip"
            )
            panel = "WAN"
        ax.set_title(title, fontsize=10)
        texts += _throughput_panel(ax, panel, data, rows, missing)
    for ax in axes[1:]:
        ax.tick_params(labelleft=False)  # the contenders are named once, on the left
    figure.suptitle("Throughput of each contender, MiB/s (higher is better)", fontsize=12)
    _save(figure, path)
    return Chart(path, texts)


def concurrency_chart(figures: dict[str, Any], path: Path) -> Chart:
    """The operator's WAN MiB/s at each max_concurrency against what that many capped connections carry."""
    wan = figures["wan"]
    sweep = sorted(wan["sweep"], key=lambda res: int(res["concurrency"]))
    cap, rtt, split_into = _wan_link(wan)
    runs, size = wan["runs"], int(wan["runs"]["operator"]["size"]) // MiB
    xs = [int(res["concurrency"]) for res in sweep]
    ys = [float(res["mib_s"]) for res in sweep]
    figure, (ax,) = _figure(CONCURRENCY_INCHES)
    right = max(xs) + 0.5
    ax.plot(
        [0, right],
        [0, right * cap],
        linestyle="--",
        color=LINK_COLOUR,
        label=f"the connections' limit: max_concurrency × {cap:g} MiB/s",
    )
    ax.plot(xs, ys, marker="o", color=OPERATOR_COLOUR, linewidth=2, label="this operator")
    texts = []
    for x, y in zip(xs, ys, strict=True):
        text = f"{y:.1f} ({y / (x * cap):.0%})"
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(0, -16), ha="center", fontsize=9)
        texts.append(("WAN", f"max_concurrency {x}", text))
    for key, marker, colour, what in (
        ("upload", "s", UPLOAD_COLOUR, "upload-only limit"),
        ("download", "^", DOWNLOAD_COLOUR, "download-only limit"),
    ):
        parts, mib_s = int(runs[key]["concurrency"]), float(runs[key]["mib_s"])
        ax.plot(
            [parts],
            [mib_s],
            marker=marker,
            linestyle="none",
            color=colour,
            markersize=8,
            label=f"{what} ({parts} connections): {mib_s:.1f}",
        )
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlim(0, right)
    ax.set_ylim(0, max([right * cap, *ys]) * 1.05)
    ax.set_xlabel("max_concurrency (parts in flight, each way)")
    ax.set_ylabel("MiB/s (backup size / wall time)")
    ax.set_title(
        f"{size} MiB backup in {split_into} files; every connection capped at {cap:g} MiB/s each way,"
        f" {rtt:g} ms round trip\nlabels: MiB/s (share of the connections' limit)",
        fontsize=9,
    )
    figure.suptitle("WAN: the operator's throughput by max_concurrency", fontsize=12)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.95)
    ax.grid(alpha=0.3)
    _save(figure, path)
    return Chart(path, texts)


def write_charts(figures: dict[str, Any], directory: Path) -> list[Chart]:
    """Every chart the figures allow: throughput.png, and concurrency.png when the WAN sweep ran."""
    charts = []
    if "loopback" in figures or "wan" in figures:
        charts.append(throughput_chart(figures, directory / "throughput.png"))
    if figures.get("wan", {}).get("sweep"):
        charts.append(concurrency_chart(figures, directory / "concurrency.png"))
    return charts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("figures", type=Path, help="a copy_to_s3.py --json file")
    parser.add_argument("--out", type=Path, default=CHARTS_DIR, help=f"directory for the PNGs ({CHARTS_DIR})")
    args = parser.parse_args(argv)
    for chart in write_charts(json.loads(args.figures.read_text()), args.out):
        print(chart.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

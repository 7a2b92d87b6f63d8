"""Generate docs/reliability.md from the tests, so the table cannot drift from them.

Every fault and bad input the suite proves carries a marker on its test (or on one parameter)::

    @pytest.mark.reliability(area="download", fault="connection drop mid-part", outcome="retried and succeeded")

This script collects the suite (``pytest --collect-only``, nothing runs), reads those markers and
writes the table: one row per (area, fault, outcome) with the tests that prove it.

    python scripts/reliability_table.py            # rewrite docs/reliability.md
    python scripts/reliability_table.py --check    # exit 1 if docs/reliability.md is out of date

``tests/test_reliability.py::test_reliability_table_is_up_to_date`` runs ``--check``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "reliability.md"
MARKER = "reliability"

AREAS = {
    "API": "The Cloud 66 API",
    "download": "The download (signed URLs)",
    "upload": "The upload (S3)",
    "worker": "The worker",
    "concurrency": "Concurrency and re-runs",
    "bad input": "Hostile and bad input",
    "secrets": "Secrets",
    "source": "The backup itself (still being written, or not what its record says)",
    "prune": "Pruning archives (retention)",
}
OUTCOMES = (
    "retried and succeeded",
    "succeeded, byte-exact",
    "clear error",
    "aborted, nothing left",
    "next run cleans up and completes",
    "skipped, nothing copied",
    "one archive; all succeeded or skipped",
    "refused before any request",
    "kept under the prefix",
    "no secret in any output",
    "not repeated; clear error",
    "accepted after checking the object",
    "retryable error, nothing completed",
    "left in place and reported",
    "waits for the budget's reset (no try spent), then succeeds",
)


@dataclass(frozen=True)
class Entry:
    area: str
    fault: str
    outcome: str
    nodeid: str


class _Collector:
    """A pytest plugin object: reads the reliability markers of every collected test."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.errors: list[str] = []

    def pytest_collection_finish(self, session: Any) -> None:
        for item in session.items:
            for mark in item.iter_markers(MARKER):
                self._add(item.nodeid, mark.args, mark.kwargs)

    def _add(self, nodeid: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        area, fault, outcome = kwargs.get("area"), kwargs.get("fault"), kwargs.get("outcome")
        if args or set(kwargs) != {"area", "fault", "outcome"}:
            self.errors.append(f"{nodeid}: use reliability(area=..., fault=..., outcome=...), got {kwargs}")
        elif area not in AREAS:
            self.errors.append(f"{nodeid}: area {area!r} is not one of {list(AREAS)}")
        elif outcome not in OUTCOMES:
            self.errors.append(f"{nodeid}: outcome {outcome!r} is not one of {list(OUTCOMES)}")
        elif not isinstance(fault, str) or not fault.strip():
            self.errors.append(f"{nodeid}: fault must be a non-empty string")
        else:
            self.entries.append(Entry(area, " ".join(fault.split()), outcome, nodeid))


def _marked_files(tests: Path) -> list[str]:
    """Test files that can hold the marker (collecting only these keeps the run short)."""
    return sorted(
        str(path.relative_to(ROOT))
        for path in tests.rglob("test_*.py")
        if f"mark.{MARKER}" in path.read_text(encoding="utf-8")
    )


def collect() -> list[Entry]:
    """Collect the marked test files with pytest (no test runs) and return their entries."""
    import pytest

    collector = _Collector()
    output = io.StringIO()
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    args = ["--collect-only", "-q", "-p", "no:cacheprovider", *_marked_files(ROOT / "tests")]
    with contextlib.redirect_stdout(output):
        code = pytest.main(args, plugins=[collector])
    if code != 0:
        raise SystemExit(f"pytest --collect-only failed ({code}):\n{output.getvalue()}")
    if collector.errors:
        raise SystemExit("bad reliability markers:\n" + "\n".join(collector.errors))
    return collector.entries


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _tests_cell(nodeids: list[str], all_params: dict[str, int]) -> str:
    """Test ids for one row; every parameter of one test in the row is shown once as ``test (N cases)``."""
    shown: list[str] = []
    by_base: dict[str, list[str]] = {}
    for nodeid in nodeids:
        by_base.setdefault(nodeid.split("[", 1)[0], []).append(nodeid)
    for base, ids in by_base.items():
        if len(ids) > 1 and len(ids) == all_params.get(base):
            shown.append(f"`{base}` ({len(ids)} cases)")
        else:
            shown.extend(f"`{nodeid}`" for nodeid in ids)
    return "<br>".join(_cell(s) for s in shown)


def render(entries: Iterable[Entry]) -> str:
    entries = list(entries)
    all_params: dict[str, int] = {}
    for nodeid in dict.fromkeys(e.nodeid for e in entries):
        base = nodeid.split("[", 1)[0]
        all_params[base] = all_params.get(base, 0) + 1
    rows: dict[tuple[str, str, str], list[str]] = {}
    for entry in entries:
        rows.setdefault((entry.area, entry.fault, entry.outcome), []).append(entry.nodeid)
    faults = sum(1 for area, _, _ in rows if area not in ("bad input", "secrets"))
    bad = sum(1 for area, _, _ in rows if area == "bad input")
    lines = [
        "# Reliability: faults, bad input and secrets",
        "",
        "<!-- Generated by scripts/reliability_table.py from the tests' reliability markers; do not edit.",
        "     Regenerate: .venv/bin/python scripts/reliability_table.py -->",
        "",
        "Every row is a fault or a bad input the test suite injects, the outcome the tests assert, and",
        "the tests that prove it (run them with `python -m pytest <test id>`). The outcomes:",
        "",
        "- **retried and succeeded**: the package retried (or resumed, or fetched a fresh signed URL) and",
        "  the result is complete and byte-exact.",
        "- **succeeded, byte-exact**: handled without a retry, and the result is byte-exact.",
        "- **clear error**: the task fails with an error that names what failed (a `Cloud66ApiError`",
        "  subclass for the API), never an unhandled `KeyError`/`TypeError`; nothing partial is left in S3.",
        "- **aborted, nothing left**: the multipart upload was aborted: no object, no open upload.",
        "- **next run cleans up and completes**: a killed worker could not clean up; the next run of the",
        "  task aborts the multipart uploads left on the archive's keys and completes the archive.",
        "- **skipped, nothing copied** / **one archive; all succeeded or skipped**: re-runs and concurrent",
        "  copies of the same backup end with one archive and no failed task.",
        "- **refused before any request**: `Cloud66InputError` naming the argument; the emulator saw no",
        "  request and S3 no call.",
        "- **kept under the prefix**: names from the API cannot make a key escape the configured prefix.",
        "- **no secret in any output**: the API token and every URL signature are absent from every log",
        "  line, exception text, XCom value and rendered template field.",
        "- **left in place and reported**: the prune deletes nothing of it and lists it in its report",
        "  (`skipped` with the reason, or `locked` with the lock).",
        "",
        f"{faults} faults and {bad} bad inputs.",
    ]
    for area, title in AREAS.items():
        area_rows = [(key, ids) for key, ids in rows.items() if key[0] == area]
        if not area_rows:
            continue
        lines += ["", f"## {title}", "", "| fault | outcome | tests |", "|---|---|---|"]
        for (_, fault, outcome), ids in area_rows:
            lines.append(f"| {_cell(fault)} | {outcome} | {_tests_cell(ids, all_params)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/reliability.md is out of date")
    options = parser.parse_args(argv)
    text = render(collect())
    if options.check:
        current = TABLE.read_text(encoding="utf-8") if TABLE.exists() else ""
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(), text.splitlines(), "docs/reliability.md", "generated", lineterm=""
            )
            print(
                "docs/reliability.md is out of date; run: python scripts/reliability_table.py",
                file=sys.stderr,
            )
            print("\n".join(diff), file=sys.stderr)
            return 1
        print("docs/reliability.md is up to date")
        return 0
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    TABLE.write_text(text, encoding="utf-8")
    print(f"wrote {TABLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

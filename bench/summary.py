"""The combined table of ``bench.run_all``: every row once, each server's numbers side by side.

A benchmark's rows are measured on each Temporal server it ran on (the embedded dev
server, a real multi-service cluster), each against a baseline of *its own* run on
that server, so a row reads across: the value, that server's baseline and the ratio,
then the same on the next server, then the goal and a verdict per server. Rows are
matched across servers by benchmark and measure; a note a benchmark appends to a
measure ("(2 failed runs retried)") stays in the value cell instead of splitting the
row. A benchmark that did not run on a server says why in the notes under the table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from bench.harness import Row, table

# What benchmarks append to a measure when something went wrong in that run.
RUN_NOTE = re.compile(r" \((\d+ failed runs retried|\d+ runs FAILED)\)$")
# "44.9 (bare activity)" -> "44.9", "bare activity"
BASELINE = re.compile(r"^(?P<value>[^()]*?) \((?P<what>[^()]+)\)$")
ABSENT = "-"


@dataclass(frozen=True)
class Measured:
    """One row as one server measured it, filed under the issue's goal it answers."""

    goal: str
    server: str
    row: Row


def row_verdict(row: Row) -> str:
    """met / NOT met; a row without a pass/fail goal is "reference", a failed benchmark FAILED."""
    if row.measure == "benchmark failed":
        return "FAILED"
    if row.met is None:
        return "" if row.value.startswith(("skipped", "unavailable")) else "reference"
    return "met" if row.met else "NOT met"


def split_baseline(baseline: str) -> tuple[str, str]:
    found = BASELINE.match(baseline)
    return (found["value"], found["what"]) if found else (baseline, "")


@dataclass
class _Line:
    goal: str
    bench: str
    measure: str
    what: str = ""
    target: str = ""
    cells: dict[str, Row] = field(default_factory=dict)


def _lines(measured: Sequence[Measured]) -> list[_Line]:
    lines: dict[tuple[str, str, str], _Line] = {}
    for m in measured:
        note = RUN_NOTE.search(m.row.measure)
        measure = RUN_NOTE.sub("", m.row.measure)
        line = lines.setdefault((m.goal, m.row.bench, measure), _Line(m.goal, m.row.bench, measure))
        value = m.row.value + (f" ({note.group(1)})" if note else "")
        line.cells[m.server] = replace(m.row, measure=measure, value=value)
        line.what = line.what or split_baseline(m.row.baseline)[1]
        line.target = line.target or m.row.goal
    order = {key: i for i, key in enumerate(lines)}
    # The goals in order, then the rows of other issues, each in run order.
    return [lines[key] for key in sorted(lines, key=lambda k: (k[0] == "", k[0], order[k]))]


def side_by_side(
    servers: Sequence[str], measured: Sequence[Measured]
) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of the combined table (cells as strings)."""

    def cut(text: str, n: int = 44) -> str:
        return text if len(text) <= n else text[: n - 3] + "..."

    header = ["goal", "benchmark", "measure", "baseline is"]
    for server in servers:
        header += [server, f"{server} baseline", "ratio"]
    header.append("goal")
    header += [f"verdict {server}" for server in servers]
    rows: list[list[str]] = []
    for line in _lines(measured):
        cells = [line.goal, line.bench, line.measure, line.what]
        verdicts = []
        for server in servers:
            row = line.cells.get(server)
            if row is None:
                cells += [ABSENT, "", ""]
                verdicts.append("")
                continue
            cells += [cut(row.value), split_baseline(row.baseline)[0], row.ratio]
            verdicts.append(row_verdict(row))
        rows.append([*cells, line.target, *verdicts])
    return header, rows


def plain(servers: Sequence[str], measured: Sequence[Measured]) -> list[str]:
    header, rows = side_by_side(servers, measured)
    return table(header, rows, left=4)


def markdown(servers: Sequence[str], measured: Sequence[Measured]) -> list[str]:
    """The same table for bench/README.md."""
    header, rows = side_by_side(servers, measured)

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [fmt(header), fmt(["---"] * len(header)), *(fmt(r) for r in rows)]

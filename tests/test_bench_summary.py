"""`make bench`'s combined table: each row once, every server's numbers beside each other.

The benchmarks themselves are not tests (they measure time); what is tested here is the
plumbing that decides what the lead reads: rows of the dev server and the cluster
matched up, a verdict per server, "reference" for rows without a pass/fail goal, and a
reason for every benchmark that did not run on a server.
"""

from __future__ import annotations

import subprocess
import sys

from bench import run_all
from bench.harness import Row
from bench.summary import Measured, markdown, side_by_side, split_baseline


def governed(server: str, value: str, base: str, ratio: str, met: bool, note: str = "") -> Measured:
    row = Row(
        "1 sequential",
        "governed ms/step" + note,
        value,
        f"{base} (bare activity)",
        ratio,
        "<= 1.10x",
        met,
    )
    return Measured("1", server, row)


def test_a_row_measured_on_both_servers_is_one_line_with_each_servers_baseline_and_verdict() -> (
    None
):
    measured = [
        governed("dev", "48.1", "40.5", "1.19x", False),
        governed("cluster", "45.0", "43.0", "1.05x", True, note=" (2 failed runs retried)"),
    ]
    header, rows = side_by_side(["dev", "cluster"], measured)
    assert header == [
        "goal", "benchmark", "measure", "baseline is",
        "dev", "dev baseline", "ratio", "cluster", "cluster baseline", "ratio",
        "goal", "verdict dev", "verdict cluster",
    ]  # fmt: skip
    assert rows == [
        [
            "1", "1 sequential", "governed ms/step", "bare activity",
            "48.1", "40.5", "1.19x", "45.0 (2 failed runs retried)", "43.0", "1.05x",
            "<= 1.10x", "NOT met", "met",
        ]
    ]  # fmt: skip


def test_rows_go_in_goal_order_other_issues_last_and_absent_cells_say_so() -> None:
    measured = [
        Measured("", "dev", Row("4 OPA", "decide_step p99 ms", "0.8", "0.5 (trivial query)")),
        Measured("4", "dev", Row("8 actions", "approved step Actions", "9.0", "11.0 (before)")),
        governed("dev", "48.1", "40.5", "1.19x", False),
        Measured("6", "cluster", Row("peer_dbos", "benchmark failed", "RuntimeError: boom")),
    ]
    _, rows = side_by_side(["dev", "cluster"], measured)
    assert [(r[0], r[1]) for r in rows] == [
        ("1", "1 sequential"),
        ("4", "8 actions"),
        ("6", "peer_dbos"),
        ("", "4 OPA"),
    ]
    by_bench = {r[1]: r for r in rows}
    assert by_bench["8 actions"][-2:] == ["reference", ""]  # no goal: reference; not on cluster
    assert by_bench["8 actions"][7] == "-"
    assert by_bench["peer_dbos"][-2:] == ["", "FAILED"]
    assert markdown(["dev", "cluster"], measured)[1].count("---") == len(rows[0])


def test_make_bench_says_why_a_benchmark_runs_on_one_server_only() -> None:
    servers = ["dev", "cluster"]
    full = run_all.benchmarks(quick=False)
    assert [n for n, b in full.items() if not run_all.runs_on(b, "cluster", servers)] == [
        "wft_wait", "decisions", "peer", "sandbox_cost", "parked", "fairness", "memory_recall",
        "locomo",
    ]  # fmt: skip
    why = run_all.notes(full, servers)
    assert len(why) == 8
    assert all(line.split(": ", 2)[2] for line in why)
    assert [n for n, b in full.items() if b.goal in {"1", "2", "3", "4", "5", "6"}] == [
        "wft_wait", "sequential", "express", "throughput", "actions",
        "peer", "peer_dbos", "sandbox_cost", "parked",
    ]  # fmt: skip
    # Quick sizes park 40 runs, which fits on both servers.
    assert run_all.runs_on(run_all.benchmarks(quick=True)["parked"], "cluster", servers)


def test_an_unknown_server_is_refused_before_anything_starts() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--servers", "dev,prod"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "--servers takes distinct names of ['dev', 'cluster']" in done.stderr


def test_a_baseline_splits_into_its_number_and_what_it_is_only_when_that_is_unambiguous() -> None:
    assert split_baseline("44.9 (bare activity)") == ("44.9", "bare activity")
    assert split_baseline("245 MB (idle worker)") == ("245 MB", "idle worker")
    mixed = "8.0 (before fewer-actions); 1.0 (bare)"
    assert split_baseline(mixed) == (mixed, "")

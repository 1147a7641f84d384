"""Workflow code does not change without a thought for the runs parked on it.

A change to ``workflows/`` can break every run started on the code before it, and
``tests/test_replay.py`` only catches that for the paths the committed histories
cover. So any change fails here until its author has decided: a ``workflow.patched``
branch (and a history of the new path), or histories re-recorded on purpose because
no run of the old code can exist. Then the manifest is refreshed.
"""

from __future__ import annotations

from tests.workflow_manifest import MANIFEST, REPO, WRITE_COMMAND, committed, compute

GUIDE = "docs/workflow-changes.md"


def test_workflow_sources_match_the_committed_manifest() -> None:
    now, then = compute(), committed()
    changed = sorted(p for p in now.keys() & then.keys() if now[p] != then[p])
    added = sorted(now.keys() - then.keys())
    removed = sorted(then.keys() - now.keys())
    if not (changed or added or removed):
        return
    lines = [
        f"workflow code changed since {MANIFEST.relative_to(REPO)} was written:",
        *(f"  changed: {p}" for p in changed),
        *(f"  added:   {p}" for p in added),
        *(f"  removed: {p}" for p in removed),
        "A run parked on the old code will replay against this code. Before refreshing:",
        "  1. if a run of the old code may exist, keep its path behind "
        "workflow.patched('<new-id>') and add a scenario for the new path to "
        "tests/record_histories.py, then record it: "
        ".venv/bin/python -m tests.record_histories <scenario>;",
        "     if none can exist (nothing deployed, every such run closed), re-record on "
        "purpose: .venv/bin/python -m tests.record_histories --replace, in its own commit;",
        "  2. .venv/bin/pytest tests/test_replay.py passes;",
        f"  3. refresh the manifest: {WRITE_COMMAND}",
        f"See {GUIDE}.",
    ]
    raise AssertionError("\n".join(lines))


def test_the_guide_the_failure_points_to_exists() -> None:
    assert (REPO / GUIDE).is_file()

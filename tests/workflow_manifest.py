"""The sha256 of every workflow source file, committed beside the recorded histories.

``tests/test_workflow_changes.py`` recomputes it: workflow code that changed since the
manifest was written fails there until the change is made safe for parked runs (a
patch, or histories re-recorded on purpose; docs/workflow-changes.md) and the manifest
is refreshed with ``.venv/bin/python -m tests.workflow_manifest --write``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "tests" / "histories" / "workflow-sources.sha256"
WRITE_COMMAND = ".venv/bin/python -m tests.workflow_manifest --write"


def workflow_sources() -> list[Path]:
    """Every module the workflow sandbox loads from ``workflows/``."""
    return sorted((REPO / "workflows").rglob("*.py"))


def compute() -> dict[str, str]:
    return {
        str(path.relative_to(REPO)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in workflow_sources()
    }


def render(digests: dict[str, str]) -> str:
    """``sha256sum`` format, so ``sha256sum -c`` checks it as well."""
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(digests.items()))


def committed() -> dict[str, str]:
    if not MANIFEST.exists():
        return {}
    rows = (line.split(maxsplit=1) for line in MANIFEST.read_text().splitlines() if line)
    return {path.strip(): digest for digest, path in rows}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.workflow_manifest", description=__doc__)
    parser.add_argument("--write", action="store_true", help="refresh the committed manifest")
    args = parser.parse_args(argv)
    text = render(compute())
    if args.write:
        MANIFEST.write_text(text)
        print(f"wrote {MANIFEST.relative_to(REPO)} ({len(text.splitlines())} files)")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

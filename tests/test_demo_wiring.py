"""The demos' own wiring: `make demo` runs them as CLI commands, not through test fixtures.

The field cases' logic is tested in test_case_*.py against fixtures that set the
process up the way a test does; this checks what the `stead demo …` commands set up
themselves, which those tests cannot see (an audit chain missing here stopped
`make demo` at its second command once).
"""

from __future__ import annotations

import subprocess
import sys

from stead.settings import Settings
from tests.conftest import REPO, subprocess_env

PROBE = """
from stead.audit import installed
from stead.cli.demo import embedded_stack
with embedded_stack():
    print("audit key bytes:", len(installed().key()))
"""


def test_the_demos_stack_installs_the_audit_chain(stack: Settings) -> None:
    # The session's stack is running, so the demo uses it and leaves it running.
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=subprocess_env(stack),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "audit key bytes: 32" in done.stdout, done.stdout

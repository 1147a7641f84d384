"""The README tells the truth: its Python blocks compile and every command it lists exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
COMMANDS = sorted(
    {
        m.group(1).strip()
        for m in re.finditer(r"^\| `stead ([a-z][a-z -]*?)(?: [A-Z\[(-].*?)?` \|", README, re.M)
    }
)


def test_python_blocks_compile() -> None:
    for block in re.findall(r"```python\n(.*?)```", README, re.S):
        compile(block, "README.md", "exec")


def test_readme_lists_the_cli() -> None:
    assert {"run", "status", "pending", "approve", "cancel", "audit", "demo"} <= {
        c.split()[0] for c in COMMANDS
    }


@pytest.mark.parametrize("command", COMMANDS)
def test_every_listed_command_exists(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stead.cli", *command.split(), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr

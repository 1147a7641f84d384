"""The README tells the truth: every command it lists exists, and every ``stead …`` line
of its shell examples names a real command with options that command takes."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from stead.cli.main import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
COMMANDS = sorted(
    {
        m.group(1).strip()
        for m in re.finditer(r"^\| `stead ([a-z][a-z -]*?)(?: [A-Z\[(-].*?)?` \|", README, re.M)
    }
)


def _shell_invocations() -> list[list[str]]:
    """Every ``stead …`` invocation in the README's ```sh blocks, as argv after ``stead``."""
    found: list[list[str]] = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].split(" # ", 1)[0]
            if line.lstrip().startswith("#"):
                continue
            for segment in re.split(r"&&|\|\||[|;&>]|\$\(|\)", line):
                words = shlex.split(segment.replace('"', " "), comments=False)
                if words and words[0] == "stead":
                    found.append(words[1:])
    return found


SHELL_INVOCATIONS = _shell_invocations()


def _resolve(argv: list[str]) -> tuple[Any, list[str]]:
    """Walk ``argv`` through the CLI's groups to the command it runs; return it and the rest.

    Typer's groups are recognised by their ``commands`` (Typer vendors its own click).
    """
    command: Any = typer.main.get_command(app)
    rest = list(argv)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        assert sub is not None, f"`stead {' '.join(argv)}`: no command {rest[0]!r}"
        command, rest = sub, rest[1:]
    return command, rest


def test_the_readme_has_shell_examples_of_the_cli() -> None:
    assert len(SHELL_INVOCATIONS) >= 20
    assert {"run", "approve", "pending", "dev", "memory"} <= {a[0] for a in SHELL_INVOCATIONS}


@pytest.mark.parametrize("argv", SHELL_INVOCATIONS, ids=" ".join)
def test_every_shell_example_names_a_real_command_and_options(argv: list[str]) -> None:
    command, rest = _resolve(argv)
    assert not hasattr(command, "commands"), f"`stead {' '.join(argv)}` names no command"
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    known.add("--help")
    used = {word.split("=", 1)[0] for word in rest if word.startswith("-") and word != "-"}
    assert used <= known, f"`stead {' '.join(argv)}`: no option {sorted(used - known)}"


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

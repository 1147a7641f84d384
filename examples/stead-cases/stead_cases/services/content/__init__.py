"""Sample data for the content case: what the creator's memory starts with, and a week.

``SEED`` is written to memory (namespace/key, versioned, with the creator as the
author) before the first run; ``episode`` gets two versions, one per past script.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# (namespace, key, file, why it is remembered)
SEED: list[tuple[str, str, str, str]] = [
    ("brand", "voice", "brand_voice.md", "the voice every draft must keep"),
    ("brand", "style-guide", "style_guide.md", "format rules per channel"),
    ("scripts", "episode", "scripts/episode-41.md", "past script, for continuity"),
    ("scripts", "episode", "scripts/episode-42.md", "past script, for continuity"),
]


def seed() -> list[tuple[str, str, str, str]]:
    """``SEED`` with each file's text in place of its name."""
    return [(ns, key, (HERE / name).read_text(), why) for ns, key, name, why in SEED]


def week() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HERE / "week.json").read_text())
    return data

"""The ``--since`` window of an SLO report: ``30m``, ``24h``, ``7d``."""

from __future__ import annotations

import re
from datetime import timedelta

_SINCE = re.compile(r"^([1-9][0-9]{0,5})([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


class InvalidWindow(ValueError):
    """A ``--since`` value that is not a positive count of minutes, hours or days."""


def parse_since(text: str) -> timedelta:
    """``"30m"`` → 30 minutes; one unit only, so a window reads the same everywhere."""
    match = _SINCE.match(text.strip())
    if match is None:
        raise InvalidWindow(f"{text!r} is not a window; use a count and a unit: 30m, 24h or 7d")
    count, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(count)})

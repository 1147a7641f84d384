"""The time a question names, as windows of event time (`valid_from`) to prefer.

"What did Gina find on 1 February, 2023?", "... in July 2023?", "... in June?" name
a day, a month (with or without its year) or a year. Recall prefers memories whose
event time falls in such a window: a memory is usually written on or soon after the
day it speaks of ("yesterday I went camping"), so a window reaches a little past
the period itself (`SLACK`).

Deliberately small and deterministic (no relative dates such as "last week": they
need a reference time the question does not carry). A question naming no time gives
no window, and recall ranks as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MONTHS = {
    name: i + 1
    for i, name in enumerate(
        (
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        )
    )
}
_MONTH = r"(january|february|march|april|may|june|july|august|september|october|november|december)"
_YEAR = r"((?:19|20)\d\d)"
# 1 February, 2023 | 1 February 2023 | February 1, 2023 | February 1st 2023
_DAY_FIRST = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+{_MONTH},?\s+{_YEAR}\b", re.I)
_MONTH_FIRST = re.compile(rf"\b{_MONTH}\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+{_YEAR}\b", re.I)
_MONTH_YEAR = re.compile(rf"\b{_MONTH},?\s+{_YEAR}\b", re.I)
# "in June", "during May": a bare month only after a preposition ("may" is also a verb).
_MONTH_ONLY = re.compile(rf"\b(?:in|during|of|since|until|by)\s+{_MONTH}\b", re.I)
_YEAR_ONLY = re.compile(rf"\b(?:in|during|of|since|until|by)\s+{_YEAR}\b", re.I)

SLACK = timedelta(days=10)


@dataclass(frozen=True)
class Window:
    """Event times from `start` (inclusive) to `end` (exclusive); `month` alone (no
    year) matches that month of any year."""

    start: datetime | None = None
    end: datetime | None = None
    month: int | None = None

    def contains(self, when: datetime) -> bool:
        if self.month is not None:
            shifted = when - SLACK
            return when.month == self.month or shifted.month == self.month
        assert self.start is not None and self.end is not None
        return self.start <= when < self.end


def _month_span(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def windows(question: str) -> list[Window]:
    """Every period `question` names, most specific first (days, months, years)."""
    found: list[Window] = []
    text = question
    for pattern, day_group, month_group in ((_DAY_FIRST, 1, 2), (_MONTH_FIRST, 2, 1)):
        for m in pattern.finditer(text):
            try:
                day = datetime(
                    int(m.group(3)), MONTHS[m.group(month_group).lower()], int(m.group(day_group))
                ).replace(tzinfo=UTC)
            except ValueError:
                continue
            found.append(Window(day - SLACK, day + timedelta(days=1) + SLACK))
        text = pattern.sub(" ", text)
    for m in _MONTH_YEAR.finditer(text):
        start, end = _month_span(int(m.group(2)), MONTHS[m.group(1).lower()])
        found.append(Window(start, end + SLACK))
    text = _MONTH_YEAR.sub(" ", text)
    for m in _MONTH_ONLY.finditer(text):
        found.append(Window(month=MONTHS[m.group(1).lower()]))
    for m in _YEAR_ONLY.finditer(text):
        year = int(m.group(1))
        found.append(
            Window(datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC) + SLACK)
        )
    return found


def in_any(when: datetime, spans: list[Window]) -> bool:
    return any(w.contains(when) for w in spans)

"""A SKU's mismatch history across reconciliations, from time-series memory.

The previous run's findings (``memory.history``) say whether a SKU was wrong *last
time*; they cannot tell a SKU that drifts every night from one that slipped once.
So every reconciliation records, per SKU found in both sources, two points of the
series ``commerce.sku`` (one ``memory.observe_many`` step, all or none):
``kind=mismatch`` (1 when shop and warehouse disagreed, else 0) and ``kind=stock``
(the warehouse's sellable units). Before comparing, the playbook reads the newest
mismatch points of each SKU (``memory.series`` grouped ``by: sku``, ``last: N``);
their sum is the runs that found the SKU wrong and their samples the runs that
checked it. This module turns those into a verdict per mismatched SKU: a first
mismatch, a repeat, or a trend ("mismatched in 3 of the last 5 runs").

Pure functions, so the reconcile step stays a read and the verdict is unit-testable.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import Field

from adapters.memory import PointArgs, SeriesOpPoint
from stead.contracts.base import Closed

SERIES = "commerce.sku"
Verdict = Literal["first", "again", "trend"]


class SkuTrend(Closed):
    """How often a SKU mismatched now, counting this run and the earlier ones read."""

    sku: str
    mismatched: int = Field(description="Runs that found it mismatched, this one included.")
    runs: int = Field(description="Runs that checked it, this one included.")
    verdict: Verdict = Field(
        description="first: no earlier run read found it wrong; trend: mismatched in at least "
        "trend_at runs; again: otherwise."
    )
    text: str


def sku_observations(sellable: dict[str, int], mismatched: Iterable[str]) -> list[PointArgs]:
    """This run's points per SKU found in both sources (``sellable``: the warehouse's)."""
    wrong = set(mismatched)
    points: list[PointArgs] = []
    for sku in sorted(sellable):
        points.append(
            PointArgs(value=1.0 if sku in wrong else 0.0, labels=_labels(sku, "mismatch"))
        )
        points.append(PointArgs(value=float(sellable[sku]), labels=_labels(sku, "stock")))
    return points


def sku_trends(
    earlier: list[SeriesOpPoint], mismatched: Iterable[str], *, trend_at: int
) -> list[SkuTrend]:
    """A verdict per SKU mismatched now, from the earlier runs' mismatch points."""
    found: dict[str, tuple[float, int]] = {}
    for point in earlier:
        if point.group is None:
            continue
        total, samples = found.get(point.group, (0.0, 0))
        found[point.group] = (total + point.value, samples + point.samples)
    trends = []
    for sku in sorted(set(mismatched)):
        total, samples = found.get(sku, (0.0, 0))
        wrong, runs = round(total) + 1, samples + 1
        trends.append(_trend(sku, wrong, runs, trend_at))
    return trends


def _trend(sku: str, wrong: int, runs: int, trend_at: int) -> SkuTrend:
    verdict: Verdict
    if wrong == 1:
        verdict = "first"
        text = f"{sku}: first mismatch" + (
            f" in the last {runs} runs" if runs > 1 else " (no earlier run recorded it)"
        )
    else:
        verdict = "trend" if wrong >= trend_at else "again"
        text = f"{sku} mismatched in {wrong} of the last {runs} runs ({verdict})"
    return SkuTrend(sku=sku, mismatched=wrong, runs=runs, verdict=verdict, text=text)


def _labels(sku: str, kind: str) -> dict[str, str]:
    return {"sku": sku, "kind": kind}

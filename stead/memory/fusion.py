"""How hybrid recall merges its two rankings into one.

The vector path (meaning: cosine) and the lexical path (exact terms: BM25 in
Postgres) each return candidates with a score, best first. Two ways to merge:

- ``rrf``, reciprocal-rank fusion: the sum over paths of weight / (k + rank). Robust,
  but blind to margins: a rare exact term far ahead on BM25 counts as much as a
  near tie.
- ``convex``: each path's scores scaled to [0, 1] by its best candidate (min-max),
  then weighted and summed (a candidate one path did not return scores 0 there).

Either way a candidate whose event time falls in a period the question names
(`when.py`) gets `time_bonus`. Fused scores are divided by the best possible one, so
they lie in (0, 1]. The defaults were set before any measurement (equal weights).
`python -m bench.locomo PATH --tune` replays a grid on LoCoMo conversations 0 and 1
and shows the same weights on the held-out 2-4: the grid's best on 0-1 (convex,
vector 0.2, lexical 0.8, time 0.2: 0.586 vs 0.567) scored lower on the held-out
conversations (0.574 vs 0.588), so the defaults stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Scored = Sequence[tuple[str, float]]


@dataclass(frozen=True)
class Fusion:
    method: Literal["rrf", "convex"] = "convex"
    vector_weight: float = 0.5
    lexical_weight: float = 0.5
    time_bonus: float = 0.2
    rank_constant: float = 60.0
    depth: int = 50
    """Candidates asked of each path (at least 4k + 8 for a large k)."""

    def fuse(self, vector: Scored, lexical: Scored, in_period: set[str]) -> list[tuple[str, float]]:
        """Candidate ids with their fused score in (0, 1], best first (ties: vector order,
        then lexical)."""
        scores: dict[str, float] = {}
        for weight, ranked in ((self.vector_weight, vector), (self.lexical_weight, lexical)):
            for cid, part in zip((c for c, _ in ranked), self._parts(ranked), strict=True):
                scores[cid] = scores.get(cid, 0.0) + weight * part
        for cid in in_period:
            if cid in scores:
                scores[cid] += self.time_bonus
        best = self.vector_weight + self.lexical_weight + (self.time_bonus if in_period else 0.0)
        if self.method == "rrf":
            best = (best - (self.time_bonus if in_period else 0.0)) / (self.rank_constant + 1)
            best += self.time_bonus if in_period else 0.0
        return sorted(
            ((cid, score / best) for cid, score in scores.items()), key=lambda item: -item[1]
        )

    def _parts(self, ranked: Scored) -> list[float]:
        if self.method == "rrf":
            return [1.0 / (self.rank_constant + rank) for rank in range(1, len(ranked) + 1)]
        values = [score for _, score in ranked]
        if not values:
            return []
        top, low = max(values), min(values)
        if top <= low:
            return [1.0] * len(values)
        return [(v - low) / (top - low) for v in values]


DEFAULT_FUSION = Fusion()

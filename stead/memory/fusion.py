"""How hybrid recall merges its two rankings into one.

The vector path (meaning: cosine) and the lexical path (exact terms: BM25 in
Postgres) each return candidates with a score, best first. Two ways to merge:

- ``rrf``, reciprocal-rank fusion: the sum over paths of weight / (k + rank). Robust,
  but blind to margins: a rare exact term far ahead on BM25 counts as much as a
  near tie.
- ``convex``: each path's scores scaled to [0, 1] by its best candidate (min-max),
  then weighted and summed (a candidate one path did not return scores 0 there).

Either way a candidate whose event time falls in a period the question names
(`when.py`) gets `time_bonus`, one whose subject label the question names gets
`subject_bonus`, and then each candidate passes `neighbour_share` of its score to its
neighbours in a numbered sequence that are candidates too (`cues.py`). Fused scores
are divided by the best possible one, so they lie in (0, 1].

The first defaults were set before any measurement (equal weights, time 0.2). The
current ones were chosen on LoCoMo conversations 0 and 1 only
(`python -m bench.locomo PATH --tune`, recall@5) and then read once on the held-out
conversations 2-4 (bench/README.md has both): lexical 0.6 / vector 0.4, subject 0.4,
neighbour share 0.2. The weights alone moved recall@5 by about one point (tuning and
held-out alike), the two cues by five more (bench/README.md has the steps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Scored = Sequence[tuple[str, float]]


@dataclass(frozen=True)
class Fusion:
    method: Literal["rrf", "convex"] = "convex"
    vector_weight: float = 0.4
    lexical_weight: float = 0.6
    time_bonus: float = 0.2
    subject_bonus: float = 0.4
    neighbour_share: float = 0.2
    rank_constant: float = 60.0
    depth: int = 50
    """Candidates asked of each path (at least 4k + 8 for a large k)."""

    def fuse(
        self,
        vector: Scored,
        lexical: Scored,
        in_period: set[str],
        about_subject: set[str] | None = None,
        neighbours: Mapping[str, Sequence[str]] | None = None,
    ) -> list[tuple[str, float]]:
        """Candidate ids with their fused score in (0, 1], best first (ties: vector order,
        then lexical)."""
        about_subject = about_subject or set()
        scores: dict[str, float] = {}
        for weight, ranked in ((self.vector_weight, vector), (self.lexical_weight, lexical)):
            for cid, part in zip((c for c, _ in ranked), self._parts(ranked), strict=True):
                scores[cid] = scores.get(cid, 0.0) + weight * part
        for bonus, chosen in ((self.time_bonus, in_period), (self.subject_bonus, about_subject)):
            for cid in chosen:
                if cid in scores:
                    scores[cid] += bonus
        if neighbours and self.neighbour_share:
            own = dict(scores)
            for cid, near in neighbours.items():
                for other in near:
                    if cid in own and other in scores:
                        scores[other] += self.neighbour_share * own[cid]
        best = self.vector_weight + self.lexical_weight
        if self.method == "rrf":
            best /= self.rank_constant + 1
        best += (self.time_bonus if in_period else 0.0) + (
            self.subject_bonus if about_subject else 0.0
        )
        if neighbours:
            best *= 1 + 2 * self.neighbour_share
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

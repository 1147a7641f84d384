"""Retrieval quality on LoCoMo: Stead's recall against BM25, raw cosine and Postgres FTS.

LoCoMo (Maharana et al., 2024; CC BY-NC 4.0, evaluation only) holds long multi-session
conversations with questions whose evidence is a set of dialog turns. The data file
is never part of this repository: pass its path (`locomo10*.json`).

What is measured: every turn is stored as a memory through `MemoryService.remember`
(one tenant per conversation, key = the turn's id, `valid_from` = its session date),
then every question of categories 1-4 (single-hop, temporal, multi-hop, open-domain;
5 is adversarial and has no evidence) is asked through `MemoryService.recall`. A
question's evidence recall@k is the share of its evidence turns in the top k;
any-hit@5 is whether at least one is in the top 5. Baselines, same run, same turns:

- BM25 (Okapi, k1=1.2, b=0.75, lowercase word tokens; a small implementation below),
- raw cosine over the same all-MiniLM-L6-v2 vectors Stead embeds (brute force, numpy),
- Postgres full-text search ranked by `ts_rank` (Stead's degraded path before hybrid recall).

The turn vectors are computed once in a batch with the same model and served to the
service by `Precomputed` (the service would compute exactly these, one at a time);
questions are embedded by the service itself, so the latency column is end to end.

    .venv/bin/python -m bench.locomo PATH/locomo10-part1.json
    .venv/bin/python -m bench.locomo PATH --conversations 0,1     # a subset
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import re
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import REPO, BenchStack, Row, Section, run_standalone, table
from stead.audit import chain_for
from stead.audit import install as install_audit_chain
from stead.db.pool import create_pool, tenant_transaction
from stead.embeddings import MiniLmEmbedder
from stead.memory import Provenance, RecallQuery, RememberRequest, cues, store, when
from stead.memory.fusion import Fusion
from stead.memory.service import MemoryService
from stead.vector import EdgeVectorIndex
from stead.vector.terms import query_terms

NAMESPACE = "conversation"
CATEGORIES = {1: "single-hop", 2: "temporal", 3: "multi-hop", 4: "open-domain"}
PRINCIPAL = "service:bench-locomo"
GOAL_POINTS = 0.10


@dataclass(frozen=True)
class Turn:
    key: str
    content: str
    said_at: datetime


@dataclass(frozen=True)
class Question:
    text: str
    category: int
    evidence: frozenset[str]


@dataclass(frozen=True)
class Conversation:
    tenant: str
    turns: list[Turn]
    questions: list[Question]


def session_time(text: str) -> datetime:
    """'1:56 pm on 8 May, 2023' -> an aware datetime (the data names no zone: UTC)."""
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)


def turn_text(turn: dict[str, Any]) -> str:
    """What a memory holds for a turn: who said it, what, and the photo they shared."""
    text = f"{turn['speaker']}: {turn['text']}"
    if turn.get("blip_caption"):
        text += f" [shares a photo: {turn['blip_caption']}]"
    return text


def load(path: Path, wanted: Sequence[int] | None) -> list[Conversation]:
    import json

    raw = json.loads(path.read_text())
    out = []
    for i, sample in enumerate(raw):
        if wanted is not None and i not in wanted:
            continue
        conv = sample["conversation"]
        turns: list[Turn] = []
        n = 1
        while f"session_{n}" in conv:
            said_at = session_time(conv[f"session_{n}_date_time"])
            turns += [Turn(t["dia_id"], turn_text(t), said_at) for t in conv[f"session_{n}"]]
            n += 1
        keys = {t.key for t in turns}
        questions = []
        for qa in sample["qa"]:
            if qa["category"] not in CATEGORIES:
                continue
            # A few evidence entries are "D8:6; D9:17" or carry stray spaces.
            evidence = frozenset(
                e for ref in qa.get("evidence", []) for e in re.split(r"[;,\s]+", ref) if e in keys
            )
            if evidence:
                questions.append(Question(str(qa["question"]), qa["category"], evidence))
        out.append(Conversation(f"locomo{i}", turns, questions))
    return out


# ----------------------------------------------------------------- baselines

WORD = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return WORD.findall(text.lower())


class Bm25:
    """Okapi BM25 over word tokens (the rank-bm25 formula, with its idf floor)."""

    def __init__(self, docs: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        self._docs = [Counter(tokens(d)) for d in docs]
        self._len = [sum(c.values()) for c in self._docs]
        self._avg = sum(self._len) / max(len(self._len), 1)
        df: Counter[str] = Counter(t for c in self._docs for t in c)
        n = len(docs)
        idf = {t: math.log((n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        floor = 0.25 * sum(idf.values()) / max(len(idf), 1)
        self._idf = {t: v if v > 0 else floor for t, v in idf.items()}
        self._k1, self._b = k1, b

    def top(self, query: str, k: int) -> list[int]:
        terms = tokens(query)
        scores = np.zeros(len(self._docs))
        for i, doc in enumerate(self._docs):
            norm = self._k1 * (1 - self._b + self._b * self._len[i] / self._avg)
            scores[i] = sum(
                self._idf.get(t, 0.0) * doc[t] * (self._k1 + 1) / (doc[t] + norm)
                for t in terms
                if t in doc
            )
        return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]


class Precomputed:
    """The real model's vectors for the stored turns; anything else goes to the model."""

    def __init__(self, model: MiniLmEmbedder, vectors: dict[str, list[float]]) -> None:
        self._model = model
        self._vectors = vectors

    @property
    def name(self) -> str:
        return self._model.name

    @property
    def dim(self) -> int:
        return self._model.dim

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if all(t in self._vectors for t in texts):
            return [self._vectors[t] for t in texts]
        return await self._model.embed(texts)


# ------------------------------------------------------------------ scoring


@dataclass
class Scores:
    r5: list[float]
    r10: list[float]
    hit5: list[float]

    @classmethod
    def empty(cls) -> Scores:
        return cls([], [], [])

    def add(self, ranked: Sequence[str], evidence: frozenset[str]) -> None:
        self.r5.append(len(evidence & set(ranked[:5])) / len(evidence))
        self.r10.append(len(evidence & set(ranked[:10])) / len(evidence))
        self.hit5.append(1.0 if evidence & set(ranked[:5]) else 0.0)


# Stead's degraded path before hybrid recall: OR-ed lexemes ranked by ts_rank (no idf).
TS_RANK = (
    "WITH q AS (SELECT nullif(replace(plainto_tsquery('english', $2)::text, ' & ', ' | '), '')"
    "::tsquery AS tsq)"
    " SELECT m.key, ts_rank(v.search, q.tsq) AS score"
    " FROM memory_versions v JOIN memories m ON m.id = v.memory_id AND m.tenant = v.tenant, q"
    " WHERE v.tenant = $1 AND v.superseded_at IS NULL AND v.erased_at IS NULL"
    " AND v.search @@ q.tsq ORDER BY score DESC, v.recorded_at DESC LIMIT 10"
)
SYSTEMS = ("stead", "bm25", "cosine", "pg-fts")


# Fusion weights were tuned on these conversations only (`--tune`); the rest are held out.
TUNED_ON = (0, 1)
HELD_OUT = -1


@dataclass(frozen=True)
class Candidates:
    """What hybrid recall fuses for one question, kept to replay other weights offline."""

    question: Question
    vector: list[tuple[str, float]]
    lexical: list[tuple[str, float]]
    in_period: set[str]
    about_subject: set[str]
    neighbours: dict[str, tuple[str, ...]]
    key_of: dict[str, str]


def turn_vectors_cached(model: MiniLmEmbedder, texts: list[str], cache: Path) -> list[list[float]]:
    """The model's vectors for `texts`, computed once per text set and kept in `cache`
    (outside the repository's tracked files)."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache / f"locomo-{digest}.npy"
    if path.exists():
        return [list(map(float, row)) for row in np.load(path)]
    vectors = model.embed_sync(texts)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(vectors, dtype=np.float32))
    return vectors


async def measure_path(
    settings: Any,
    work: Path,
    path: Path,
    wanted: Sequence[int] | None,
    *,
    tune: bool = False,
    cache: Path = REPO / ".stead" / "bench",
) -> Section:
    conversations = load(path, wanted)
    install_audit_chain(chain_for(settings))
    model = MiniLmEmbedder()
    all_turns = [t.content for c in conversations for t in c.turns]
    started = time.perf_counter()
    vectors = turn_vectors_cached(model, all_turns, cache)
    turn_vectors = dict(zip(all_turns, vectors, strict=True))
    print(f"locomo: {len(all_turns)} turn vectors in {time.perf_counter() - started:.0f} s")
    index = EdgeVectorIndex(work / "locomo-qdrant")
    pool = await create_pool(settings.postgres_dsn, min_size=1, max_size=8)
    service = MemoryService(pool, index, Precomputed(model, turn_vectors))
    by: dict[tuple[str, int], Scores] = {}
    latencies: list[float] = []
    replay: list[tuple[int, Candidates]] = []
    try:
        await service.start()
        for number, conv in zip(wanted or range(len(conversations)), conversations, strict=True):
            started = time.perf_counter()
            await remember_all(service, conv)
            print(
                f"  {conv.tenant}: {len(conv.turns)} turns remembered in "
                f"{time.perf_counter() - started:.0f} s; {len(conv.questions)} questions",
                flush=True,
            )
            held_out = number not in TUNED_ON
            captured = await ask_all(service, conv, turn_vectors, model, by, latencies, held_out)
            replay += [(number, c) for c in captured]
    finally:
        await pool.close()
        await index.close()
    section = summarize(conversations, by, latencies, path)
    if tune:
        section.lines += tuning(replay, service.fusion)
    return section


async def remember_all(service: MemoryService, conv: Conversation) -> None:
    """Every turn through `remember`, a few at a time (as concurrent steps would)."""
    gate = asyncio.Semaphore(4)

    async def one(turn: Turn) -> None:
        async with gate:
            await service.remember(
                RememberRequest(
                    tenant=conv.tenant,
                    namespace=NAMESPACE,
                    key=turn.key,
                    content=turn.content,
                    valid_from=turn.said_at,
                    provenance=Provenance(principal=PRINCIPAL, reason="locomo benchmark"),
                )
            )

    await asyncio.gather(*(one(t) for t in conv.turns))


async def ask_all(
    service: MemoryService,
    conv: Conversation,
    turn_vectors: dict[str, list[float]],
    model: MiniLmEmbedder,
    by: dict[tuple[str, int], Scores],
    latencies: list[float],
    held_out: bool,
) -> list[Candidates]:
    keys = [t.key for t in conv.turns]
    bm25 = Bm25([t.content for t in conv.turns])
    matrix = np.asarray([turn_vectors[t.content] for t in conv.turns], dtype=np.float32)
    qvecs = np.asarray(model.embed_sync([q.text for q in conv.questions]), dtype=np.float32)
    captured = []
    for q, qvec in zip(conv.questions, qvecs, strict=True):
        started = time.perf_counter()
        result = await service.recall(
            RecallQuery(tenant=conv.tenant, query=q.text, principal=PRINCIPAL, k=10)
        )
        latencies.append((time.perf_counter() - started) * 1000)
        captured.append(await candidates(service, conv.tenant, q, qvec.tolist()))
        async with tenant_transaction(service.pool, conv.tenant) as conn:
            fts = await conn.fetch(TS_RANK, conv.tenant, q.text)
        ranked = {
            "stead": [item.key for item in result.items],
            "bm25": [keys[i] for i in bm25.top(q.text, 10)],
            "cosine": [keys[i] for i in np.argsort(-(matrix @ qvec), kind="stable")[:10]],
            "pg-fts": [r["key"] for r in fts],
        }
        for system, keys_ranked in ranked.items():
            for cat in (q.category, 0, *((HELD_OUT,) if held_out else ())):
                by.setdefault((system, cat), Scores.empty()).add(keys_ranked, q.evidence)
    return captured


async def candidates(
    service: MemoryService, tenant: str, q: Question, qvec: list[float]
) -> Candidates:
    """The two candidate lists recall fuses (the same index call, same depth), for `--tune`."""
    depth = service.fusion.depth
    found = await service.index.hybrid(tenant, qvec, query_terms(q.text), depth)
    hits = list(found.dense)
    lexical = [(h.id, h.score) for h in found.lexical]
    async with tenant_transaction(service.pool, tenant) as conn:
        ids = list(dict.fromkeys([h.id for h in hits] + [i for i, _ in lexical]))
        rows = {r["id"]: r for r in await store.versions_by_id(conn, tenant, ids)}
    periods = when.windows(q.text)
    question = cues.words(q.text)
    return Candidates(
        q,
        [(h.id, h.score) for h in hits],
        lexical,
        {i for i in ids if when.in_any(rows[i]["valid_from"], periods)},
        {i for i in ids if cues.names_subject(question, rows[i]["content"])},
        cues.neighbours({i: (rows[i]["namespace"], rows[i]["key"]) for i in ids}),
        {i: rows[i]["key"] for i in ids},
    )


def tuning(replay: list[tuple[int, Candidates]], current: Fusion) -> list[str]:
    """Recall@5 of a grid of fusion weights on the tuning conversations, and the same
    weights on the held-out ones (shown, never used to choose)."""
    grid = [
        Fusion(
            method="rrf",
            rank_constant=c,
            vector_weight=wv,
            lexical_weight=1 - wv,
            subject_bonus=sb,
            neighbour_share=ns,
        )
        for c in (20.0, 60.0)
        for wv in (0.35, 0.5)
        for sb in (0.0, 0.01)
        for ns in (0.0, 0.2)
    ] + [
        Fusion(
            vector_weight=wv,
            lexical_weight=1 - wv,
            time_bonus=tb,
            subject_bonus=sb,
            neighbour_share=ns,
        )
        for wv in (0.3, 0.4, 0.5, 0.6)
        for tb in (0.1, 0.2)
        for sb in (0.0, 0.2, 0.3, 0.4)
        for ns in (0.0, 0.2, 0.3)
    ]

    def score(f: Fusion, tuned: bool) -> float:
        r5 = []
        for number, c in replay:
            if (number in TUNED_ON) != tuned:
                continue
            fused = f.fuse(c.vector, c.lexical, c.in_period, c.about_subject, c.neighbours)
            top = [c.key_of[i] for i, _ in fused][:5]
            r5.append(len(c.question.evidence & set(top)) / len(c.question.evidence))
        return mean(r5)

    results = sorted(((score(f, True), score(f, False), f) for f in grid), key=lambda r: -r[0])
    lines = ["", f"tuning on conversations {TUNED_ON} (recall@5; held-out shown, not used):"]
    rows = [
        [
            f"{f.method} c={f.rank_constant:g} wv={f.vector_weight:g} "
            f"wl={f.lexical_weight:g} time={f.time_bonus:g} subject={f.subject_bonus:g} "
            f"neighbour={f.neighbour_share:g}" + (" (current)" if f == current else ""),
            f"{tuned:.3f}",
            f"{held:.3f}",
        ]
        for tuned, held, f in results[:8]
    ]
    rows.append(
        [f"current: {current}", f"{score(current, True):.3f}", f"{score(current, False):.3f}"]
    )
    return lines + table(["fusion", "tuning r@5", "held-out r@5"], rows)


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def summarize(
    conversations: list[Conversation],
    by: dict[tuple[str, int], Scores],
    latencies: list[float],
    path: Path,
) -> Section:
    n = sum(len(c.questions) for c in conversations)
    section = Section(
        f"LoCoMo evidence recall ({path.name}: {len(conversations)} conversations, "
        f"{sum(len(c.turns) for c in conversations)} turns, {n} questions of categories 1-4)"
    )
    header = [
        "category",
        "n",
        *[f"{s} r@5" for s in SYSTEMS],
        "stead r@10",
        "bm25 r@10",
        "stead hit@5",
        "bm25 hit@5",
    ]
    rows = []
    labels = {**CATEGORIES, 0: "all", HELD_OUT: "all, held out"}
    for cat in [*CATEGORIES, 0, HELD_OUT]:
        s = {system: by.get((system, cat), Scores.empty()) for system in SYSTEMS}
        if not s["stead"].r5:
            continue
        rows.append(
            [
                labels[cat],
                str(len(s["stead"].r5)),
                *[f"{mean(s[x].r5):.3f}" for x in SYSTEMS],
                f"{mean(s['stead'].r10):.3f}",
                f"{mean(s['bm25'].r10):.3f}",
                f"{mean(s['stead'].hit5):.3f}",
                f"{mean(s['bm25'].hit5):.3f}",
            ]
        )
    section.lines += table(header, rows)
    overall = {system: by[(system, 0)] for system in SYSTEMS}
    section.lines.append("")
    section.lines += table(
        ["system (all categories)", "recall@5", "recall@10", "any-hit@5"],
        [
            [
                x,
                f"{mean(overall[x].r5):.3f}",
                f"{mean(overall[x].r10):.3f}",
                f"{mean(overall[x].hit5):.3f}",
            ]
            for x in SYSTEMS
        ],
    )
    best_name = max(SYSTEMS[1:], key=lambda x: mean(overall[x].r5))
    best, ours = mean(overall[best_name].r5), mean(overall["stead"].r5)
    met = ours >= best + GOAL_POINTS
    p50 = statistics.median(latencies)
    p95 = statistics.quantiles(latencies, n=100, method="inclusive")[94]
    section.lines.append("")
    section.lines.append(
        f"verdict: stead recall@5 {ours:.3f} vs best baseline {best_name} {best:.3f} "
        f"({(ours - best) * 100:+.1f} points; goal +{GOAL_POINTS * 100:.0f}): "
        f"{'met' if met else 'NOT met'}"
    )
    section.lines.append(f"stead recall latency, end to end: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    section.rows += [
        Row(
            "8 locomo",
            "evidence recall@5 (cat 1-4)",
            f"{ours:.3f}",
            f"{best:.3f} ({best_name})",
            f"{(ours - best) * 100:+.1f} pt",
            f">= +{GOAL_POINTS * 100:.0f} pt",
            met,
        ),
        Row("8 locomo", "recall p95 ms (end to end)", f"{p95:.1f}", "", "", "reference"),
    ]
    return section


async def measure(
    stack: BenchStack, path: Path | None, wanted: Sequence[int] | None = None, *, tune: bool = False
) -> Section:
    """For `bench.run_all`: a skipped row when no data file was given."""
    if path is None or not path.exists():
        section = Section("LoCoMo: skipped")
        section.rows.append(
            Row("8 locomo", "evidence recall@5", "skipped: no data file (make bench LOCOMO=path)")
        )
        return section
    return await measure_path(stack.settings, stack.work, path, wanted, tune=tune)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", type=Path, help="locomo10*.json (not in this repository)")
    parser.add_argument("--conversations", default="", help="comma-separated indices")
    parser.add_argument("--tune", action="store_true", help="also print a fusion weight grid")
    args = parser.parse_args()
    if not args.path.exists():
        parser.error(f"{args.path} does not exist")
    wanted = [int(i) for i in args.conversations.split(",") if i] or None
    run_standalone(lambda stack: measure(stack, args.path, wanted, tune=args.tune))


if __name__ == "__main__":
    main()

"""4. OPA decision latency from the client: p50/p99 of ``decide_step`` against a trivial query.

A thin wrapper over bench/opa_latency.py (its ``stack`` variant: OPA started the way
``stead dev up`` starts it, the repo's policies, Stead's pooled ``OpaClient``), so
the number in the combined table is measured exactly as that benchmark measures it:
N sequential step decisions interleaved with N queries of
``data.stead.system.health`` (the baseline: a bare HTTP round trip to the same OPA).
Its ``before`` variant (the httpx client, Go's default GOGC) runs in the same rounds,
so the section also shows what section 4's fix bought on this machine, right now.
For the other variants (aiohttp, unix socket, h2c, ...) run bench/opa_latency.py.

    .venv/bin/python -m bench.decisions [--quick] [--n 2000] [--warmup 300]
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (
    Row,
    Section,
    machine_line,
    percentile,
    quick_flag,
    quiet_logging,
    report,
    scrub_environment,
    settings_for,
)
from bench.opa_latency import VARIANTS
from bench.opa_latency import measure as opa_measure
from stead.devstack.opa import ensure_binary
from stead.settings import Settings

GOAL_P99_MS = 2.0


@dataclass(frozen=True)
class Sizes:
    n: int
    warmup: int


FULL = Sizes(n=2000, warmup=300)
QUICK = Sizes(n=300, warmup=50)


async def measure(settings: Settings, sizes: Sizes = FULL) -> Section:
    """Needs only the opa binary: it starts (and stops) an OPA process of its own."""
    binary = ensure_binary(settings.home, settings.opa_bin)
    variants = [v for v in VARIANTS if v.name in ("stack", "before")]
    with tempfile.TemporaryDirectory(prefix="stead-bench-opa-") as tmp:
        samples = await opa_measure(binary, variants, sizes.n, sizes.warmup, Path(tmp))
    sample, before = (next(s for s in samples if s.variant == name) for name in ("stack", "before"))
    d50, d99 = percentile(sample.decision_ms, 50), percentile(sample.decision_ms, 99)
    b50, b99 = percentile(sample.baseline_ms, 50), percentile(sample.baseline_ms, 99)
    section = Section(f"4. OPA decision latency from the client ({len(sample.decision_ms)} calls)")
    section.lines += [
        f"{'':<34}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}",
        f"{'decide_step (stead.step.decision)':<34}{d50:>8.3f}"
        f"{percentile(sample.decision_ms, 95):>8.3f}{d99:>8.3f}",
        f"{'trivial query (baseline)':<34}{b50:>8.3f}"
        f"{percentile(sample.baseline_ms, 95):>8.3f}{b99:>8.3f}",
        f"{'before (httpx, GOGC=100)':<34}{percentile(before.decision_ms, 50):>8.3f}"
        f"{percentile(before.decision_ms, 95):>8.3f}{percentile(before.decision_ms, 99):>8.3f}",
        f"ratio p50 {d50 / b50:.2f}x, p99 {d99 / b99:.2f}x; OPA's own timers (p50): handler "
        f"{sample.server_handler_ms or 0:.3f} ms, eval {sample.server_eval_ms or 0:.3f} ms",
    ]
    section.rows += [
        Row("4 OPA", "decide_step p50 ms", f"{d50:.2f}", f"{b50:.2f} (trivial query)",
            f"{d50 / b50:.2f}x"),
        Row("4 OPA", "decide_step p99 ms", f"{d99:.2f}", f"{b99:.2f} (trivial query)",
            f"{d99 / b99:.2f}x", f"<= {GOAL_P99_MS:.0f} ms", d99 <= GOAL_P99_MS),
    ]  # fmt: skip
    return section


def main() -> None:
    parser = quick_flag(__doc__)
    parser.add_argument("--n", type=int)
    parser.add_argument("--warmup", type=int)
    args = parser.parse_args()
    base = QUICK if args.quick else FULL
    sizes = Sizes(args.n or base.n, args.warmup or base.warmup)
    quiet_logging()
    print(machine_line())
    scrub_environment()
    with tempfile.TemporaryDirectory(prefix="stead-bench-") as tmp:
        report(asyncio.run(measure(settings_for(Path(tmp)), sizes)))


if __name__ == "__main__":
    main()

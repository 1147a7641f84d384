"""How long a step waits for its OPA decision, against a trivial query in the same run.

Every step pays one ``decide_step`` round trip before it may run, so this is the
policy tax on a plan's critical path. The benchmark starts its own OPA processes
(the repo's ``policies/``, a free loopback port each), one per variant, and from an
async ``OpaClient`` per variant measures N sequential ``decide_step`` calls
interleaved with N trivial queries (``data.stead.system.health``): interleaving puts
drift (CPU frequency, a noisy neighbour) into both columns alike, so their ratio is
what the step decision costs over a bare HTTP round trip to the same server.

Variants differ in the client wire (``stack``: ``OpaClient``'s own HTTP/1.1 pool,
what workers use; ``httpx`` and ``aiohttp``: the same ``OpaClient`` over those
libraries) or in how OPA runs (flags, environment, socket); ``before`` is the stack
as it was (httpx, Go's default GOGC). ``uds`` and ``h2c`` are reached over httpx, the
only wire here that speaks Unix sockets and h2c.

    .venv/bin/python -m bench.opa_latency [--n 2000] [--warmup 300] [--only stack,httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import httpx

from stead.devstack.opa import SERVER_ENV, ensure_binary, server_argv
from stead.devstack.ports import LOOPBACK, free_port
from stead.policy import OpaClient
from stead.policy.authz import OpaTokens, authz_data
from stead.policy.http1 import ConnectFailed, ConnectionDropped, Response
from stead.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
HEALTH = "stead/system/health"
ROUNDS = 10

# A realistic step: tenant lookup, allow-list, budgets, approval triggers all run.
STEP_INPUT: dict[str, Any] = {
    "tenant": "acme",
    "principal": "user:carol",
    "run": {"workflow_id": "run-7", "run_id": "r-1", "started_by": "user:carol"},
    "step": {"id": "lookup", "operation": "records.get", "args": {"key": "orders"}},
    "operation": {
        "name": "records.get",
        "side_effect": "read",
        "risk": "low",
        "scopes": ["records:read"],
    },
    "budget": {"max_steps": 10, "max_tokens": 10000, "max_usd": 1},
    "spent": {"steps": 2, "tokens": 1500, "usd": 0.1},
    "approvals": [],
}


@dataclass(frozen=True)
class Variant:
    """One way to run OPA (and reach it), to compare against the stack's defaults."""

    name: str
    flags: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    watch: bool = True
    uds: bool = False
    h2c: bool = False
    wire: Literal["http1", "httpx", "aiohttp"] = "httpx"
    authz: bool = False  # token auth + system.authz on every request, as the stack runs it


VARIANTS = (
    Variant("stack", wire="http1", authz=True),  # how `stead dev up` runs OPA and is asked
    Variant("no-authz", wire="http1"),  # the stack without token auth: what authz costs
    # The stack before bench/README.md section 4's fix: httpx, and Go's default GOGC.
    Variant("before", env={"GOGC": "100"}),
    Variant("httpx"),
    Variant("aiohttp", wire="aiohttp"),
    Variant("no-watch", watch=False, wire="http1"),
    Variant("read-store", flags=("--optimize-store-for-read-speed",), wire="http1"),
    Variant("gogc100", env={"GOGC": "100"}, wire="http1"),  # Go's default, before 4
    Variant("gomaxprocs1", env={"GOMAXPROCS": "1"}, wire="http1"),
    Variant("uds", uds=True),
    Variant("h2c", flags=("--h2c",), h2c=True),
)


class AiohttpWire:
    """Bench only: ``OpaClient``'s wire over one ``aiohttp`` session, to compare clients."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30.0)
        )

    async def post(self, path: str, body: bytes, content_type: bytes) -> Response:
        try:
            async with self._session.post(
                self._url + path, data=body, headers={"Content-Type": content_type.decode()}
            ) as answer:
                return Response(answer.status, await answer.read(), keep_alive=True)
        except aiohttp.ClientConnectorError as exc:
            raise ConnectFailed(str(exc)) from None
        except aiohttp.ClientError as exc:
            raise ConnectionDropped(str(exc)) from None

    async def aclose(self) -> None:
        await self._session.close()


@dataclass(frozen=True)
class Sample:
    variant: str
    decision_ms: list[float]
    baseline_ms: list[float]
    server_handler_ms: float | None
    server_eval_ms: float | None


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@contextlib.asynccontextmanager
async def opa_process(
    binary: Path, variant: Variant, workdir: Path
) -> AsyncIterator[tuple[OpaClient, httpx.AsyncClient]]:
    """Start OPA for ``variant``; yield a client wired the way the variant needs, and its pool."""
    socket_path = workdir / f"{variant.name}.sock"
    if variant.uds:
        addr, url = f"unix://{socket_path}", "http://opa"
    else:
        port = free_port()
        addr, url = f"{LOOPBACK}:{port}", f"http://{LOOPBACK}:{port}"
    tokens = OpaTokens.generate() if variant.authz else None
    authz = workdir / f"{variant.name}-authz.json" if tokens else None
    if tokens and authz:
        authz.write_text(json.dumps(authz_data(tokens.roles())))
    argv = [
        *server_argv(binary, addr, REPO / "policies", watch=variant.watch, authz=authz),
        *variant.flags,
    ]
    log = workdir / f"{variant.name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            env={**os.environ, **SERVER_ENV, **variant.env},
        )
    transport = httpx.AsyncHTTPTransport(
        uds=str(socket_path) if variant.uds else None,
        http1=not variant.h2c,
        http2=variant.h2c,
    )
    token = tokens.decision if tokens else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx.AsyncClient(transport=transport, trust_env=False, timeout=2.0, headers=headers)
    opa = (
        OpaClient(url, token=token, client=http)
        if variant.wire == "httpx"
        else OpaClient(url, token=token)
    )
    if variant.wire == "aiohttp":
        opa._wire = AiohttpWire(url)  # bench only: the same client logic over aiohttp
    try:
        await wait_ready(opa, process, log)
        yield opa, http
    finally:
        await opa.aclose()
        await http.aclose()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait(timeout=10)


async def wait_ready(opa: OpaClient, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"opa exited with {process.returncode}:\n{log.read_text()}")
        if await opa.revision() != "unknown":
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"opa did not become ready in 30 s:\n{log.read_text()}")


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def server_side_ms(
    opa: OpaClient, http: httpx.AsyncClient, rounds: int
) -> tuple[float, float]:
    """p50 of OPA's own handler and eval timers (``?metrics``): the part the server owns."""
    handler, evaluation = [], []
    for _ in range(rounds):
        answer = await http.post(
            f"{opa.url}/v1/data/stead/step/decision?metrics=true", json={"input": STEP_INPUT}
        )
        metrics = answer.json()["metrics"]
        handler.append(metrics["timer_server_handler_ns"] / 1e6)
        evaluation.append(metrics["timer_rego_query_eval_ns"] / 1e6)
    return statistics.median(handler), statistics.median(evaluation)


@dataclass
class Running:
    variant: Variant
    opa: OpaClient
    http: httpx.AsyncClient
    decisions: list[float] = field(default_factory=list)
    baselines: list[float] = field(default_factory=list)


async def measure(
    binary: Path, variants: Sequence[Variant], n: int, warmup: int, workdir: Path
) -> list[Sample]:
    """All variants run side by side; rounds rotate through them so drift hits each alike."""
    async with contextlib.AsyncExitStack() as stack:
        running = []
        for variant in variants:
            opa, http = await stack.enter_async_context(opa_process(binary, variant, workdir))
            result = await opa.decide_step(STEP_INPUT)
            assert result.outcome == "allow", result
            running.append(Running(variant, opa, http))
        for run in running:
            for _ in range(warmup):
                await run.opa.decide_step(STEP_INPUT)
                await run.opa.evaluate(HEALTH, {})
        per_round = max(1, n // ROUNDS)
        for _ in range(ROUNDS):
            for run in running:
                decide = functools.partial(run.opa.decide_step, STEP_INPUT)
                health = functools.partial(run.opa.evaluate, HEALTH, {})
                for _ in range(per_round):
                    run.decisions.append(await timed(decide))
                    run.baselines.append(await timed(health))
        samples = []
        for run in running:
            handler, evaluation = await server_side_ms(run.opa, run.http, min(n, 500))
            samples.append(
                Sample(run.variant.name, run.decisions, run.baselines, handler, evaluation)
            )
        return samples


def report(samples: list[Sample], n: int) -> str:
    header = (
        f"{'variant':<12} {'dec p50':>8} {'dec p95':>8} {'dec p99':>8} "
        f"{'base p50':>9} {'base p99':>9} {'ratio p50':>10} {'ratio p99':>10} "
        f"{'srv handler':>12} {'srv eval':>9}"
    )
    lines = [
        f"decide_step vs data.stead.system.health: {n} sequential calls each, interleaved, "
        f"variants rotated in {ROUNDS} rounds; ms",
        header,
        "-" * len(header),
    ]
    for s in samples:
        d50, d95, d99 = (percentile(s.decision_ms, q) for q in (50, 95, 99))
        b50, b99 = (percentile(s.baseline_ms, q) for q in (50, 99))
        lines.append(
            f"{s.variant:<12} {d50:>8.3f} {d95:>8.3f} {d99:>8.3f} {b50:>9.3f} {b99:>9.3f} "
            f"{d50 / b50:>10.2f} {d99 / b99:>10.2f} "
            f"{s.server_handler_ms or 0:>12.3f} {s.server_eval_ms or 0:>9.3f}"
        )
    lines.append("dec = decide_step incl. result validation; base = trivial query; "
                 "srv = OPA's own timers (p50, ?metrics=true)")  # fmt: skip
    return "\n".join(lines)


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--only", default="", help="comma-separated variant names")
    args = parser.parse_args(argv)
    wanted = {name for name in args.only.split(",") if name}
    settings = load_settings()
    binary = ensure_binary(settings.home, settings.opa_bin)
    variants = [v for v in VARIANTS if not wanted or v.name in wanted]
    with tempfile.TemporaryDirectory(prefix="opa-bench-") as tmp:
        samples = await measure(binary, variants, args.n, args.warmup, Path(tmp))
    print(report(samples, len(samples[0].decision_ms)))


if __name__ == "__main__":
    asyncio.run(main())

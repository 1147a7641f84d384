"""The embedded OPA: ``opa run --server`` watching the policy dir, behind token auth.

OPA's REST API answers only bearer tokens the ``system.authz`` policy
(``infra/opa/authz/authz.rego``) knows: the decision token for workers, the admin
token for data and policy changes (``stead.policy.authz``). Both are generated on the
first ``up`` and kept in ``$STEAD_HOME/opa/tokens.json`` (mode 0600), which the
settings read, so every command on this machine presents them without an export.

OPA is a Go program with no wheel, so the binary is found (``$STEAD_OPA_BIN``, PATH,
``$STEAD_HOME/bin``, the per-machine cache) or built once with ``go install`` from the
Go module proxy, and cached so every later ``up`` and test session reuses it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from stead.devstack import proc
from stead.devstack.ports import LOOPBACK
from stead.errors import BinaryMissing, StackError
from stead.machine_cache import machine_cache_dir
from stead.policy.authz import (
    AUTHZ_DATA_FILE,
    AUTHZ_POLICY,
    SERVER_FLAGS,
    OpaTokens,
    authz_data,
    ensure_tokens,
    write_private,
)

OPA_MODULE = "github.com/open-policy-agent/opa"
OPA_VERSION = "v1.22.2"
READINESS_QUERY = "stead/system/health"
# Go collects garbage whenever the heap doubles (GOGC=100). Each decision allocates,
# so OPA collected every few hundred decisions, and a collection landing mid-request
# was most of the decision p99 (bench/README.md, 4). 400 lets the heap grow to five
# times the live set (a few tens of MB with Stead's policies) between collections.
# An operator's own GOGC in the environment wins.
SERVER_ENV: dict[str, str] = {"GOGC": "400"}


def server_argv(
    binary: Path, addr: str, policy_dir: Path, *, watch: bool = True, authz: Path | None = None
) -> list[str]:
    """``opa run --server`` as the stack runs it; bench/opa_latency.py measures this.

    ``authz`` is the token-hash data file: with it, OPA authenticates every request and
    asks ``system.authz`` (loaded from outside the policy dir) whether to serve it.
    """
    flags = list(SERVER_FLAGS) if authz else []
    beside = [str(AUTHZ_POLICY), str(authz.resolve())] if authz else []
    return [
        str(binary),
        "run",
        "--server",
        "--addr",
        addr,
        *(["--watch"] if watch else []),
        # Decision logs stay off (no --set decision_logs...): a log line per step is
        # I/O on the hot path, and Stead records every decision in Postgres anyway.
        "--log-level",
        "error",
        "--skip-version-check",
        *flags,
        str(policy_dir.resolve()),
        *beside,
    ]


def find_binary(home: Path, explicit: Path | None) -> Path | None:
    if explicit is not None:
        if not explicit.exists():
            raise BinaryMissing(f"STEAD_OPA_BIN={explicit} does not exist")
        return explicit
    on_path = shutil.which("opa")
    if on_path:
        return Path(on_path)
    for candidate in (home / "bin" / "opa", machine_cache_dir("bin") / "opa"):
        if candidate.exists():
            return candidate
    return None


def ensure_binary(home: Path, explicit: Path | None, *, build: bool = True) -> Path:
    """Find opa, or build it once with Go; without Go, say exactly how to get it."""
    found = find_binary(home, explicit)
    if found is not None:
        return found
    go = shutil.which("go")
    if go is None or not build:
        raise BinaryMissing(
            "the `opa` binary was not found (checked $STEAD_OPA_BIN, PATH, "
            f"{home / 'bin'}, {machine_cache_dir('bin')}) and Go is not installed to build it. "
            f"Install Go and run `GOBIN={home / 'bin'} go install {OPA_MODULE}@{OPA_VERSION}`, "
            "or download OPA and set STEAD_OPA_BIN to its path."
        )
    target = home / "bin"
    target.mkdir(parents=True, exist_ok=True)
    print(
        f"building OPA {OPA_VERSION} into {target} (once; takes a few minutes)...", file=sys.stderr
    )
    result = subprocess.run(
        [go, "install", "-v", f"{OPA_MODULE}@{OPA_VERSION}"],
        env={**os.environ, "GOBIN": str(target.resolve())},
        check=False,
    )
    if result.returncode != 0 or not (target / "opa").exists():
        raise BinaryMissing(
            f"`go install {OPA_MODULE}@{OPA_VERSION}` failed (exit {result.returncode}); "
            "see the output above, or set STEAD_OPA_BIN to an existing opa binary"
        )
    return target / "opa"


def tokens_dir(home: Path) -> Path:
    """Where the dev OPA's tokens (and their hashes, for OPA) live."""
    return home / "opa"


def start(
    home: Path,
    binary: Path,
    policy_dir: Path,
    port: int,
    *,
    tokens: OpaTokens | None = None,
    timeout: float = 30.0,
) -> proc.PidRecord:
    """Start OPA behind token auth; ``tokens`` default to ``home``'s own (made on first use).

    A test that starts a second OPA passes the stack's tokens, so the workers and
    helpers already holding them talk to it unchanged.
    """
    if not policy_dir.is_dir():
        raise StackError(f"policy dir {policy_dir} does not exist; set STEAD_POLICY_DIR")
    if not AUTHZ_POLICY.is_file():
        raise StackError(
            f"OPA's authorization policy {AUTHZ_POLICY} is missing; run from a Stead checkout"
        )
    directory = tokens_dir(home)
    if tokens is None:
        tokens = ensure_tokens(directory)
    else:
        write_private(directory / AUTHZ_DATA_FILE, json.dumps(authz_data(tokens.roles())))
    argv = server_argv(binary, f"{LOOPBACK}:{port}", policy_dir, authz=directory / AUTHZ_DATA_FILE)
    log = home / "logs" / "opa.log"
    env = {**SERVER_ENV, **os.environ}
    record = proc.spawn("opa", argv, run_dir=home / "run", log_path=log, env=env)
    url = f"http://{LOOPBACK}:{port}"
    proc.wait_ready(
        "opa", record, lambda: is_ready(url, tokens.decision), log_path=log, timeout=timeout
    )
    return record


def is_ready(url: str, token: str | None = None) -> bool:
    """OPA is healthy *and* the policies loaded: a known query returns a defined result."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            if client.get(f"{url}/health").status_code != 200:
                return False
            answer = client.post(
                f"{url}/v1/data/{READINESS_QUERY}", json={"input": {}}, headers=headers
            )
            return answer.status_code == 200 and "result" in answer.json()
    except httpx.HTTPError:
        return False

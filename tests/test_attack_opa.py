"""OPA as a boundary, tested from the attacker's side (findings 9: an open data API).

The attacker reaches OPA's port with raw HTTP: no token, a guessed one, or the decision
token lifted from a worker. None of that may change tenant data or policy, read OPA's
own authorization data, or get a decision; only the admin token (``stead policy push``)
changes what policy sees, and a worker holding the wrong token blocks the step and
executes nothing.
"""

from __future__ import annotations

import json
import pickle
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from stead.contracts.run import RunStatus
from stead.devstack import opa as opa_stack
from stead.devstack import proc
from stead.devstack.ports import LOOPBACK, free_port
from stead.errors import ConfigError
from stead.policy.authz import AUTHZ_DATA_FILE, TOKENS_FILE, token_hash
from stead.policy.opa import OpaClient, PolicyUnauthorized
from stead.settings import Settings
from stead.temporal import connect
from tests.conftest import REPO, settings_for, subprocess_env
from tests.opa_auth import admin_headers, decision_headers, stack_tokens
from tests.peers import IdempotentApi, serve
from tests.runs import configure_tenant, new_tenant, playbook, start_run
from workers.main import build_worker, open_resources

READ_STEP: dict[str, Any] = {
    "tenant": "nobody-configured",
    "principal": "user:eve",
    "step": {"id": "s", "operation": "records.get", "args": {}},
}
HOSTILE_TENANT = {"operations": ["*"], "approval_risk": "high", "approval_authentication": "none"}
HOSTILE_POLICY = 'package stead.step\n\ndecision := {"outcome": "allow", "reasons": ["pwned"]}\n'


def _stead(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stead.cli", *args],
        env=subprocess_env(settings, **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _tenant_data(stack: Settings, tenant: str) -> Any:
    async with httpx.AsyncClient(trust_env=False) as http:
        answer = await http.get(
            f"{stack.opa_url}/v1/data/stead/tenants/{tenant}", headers=admin_headers()
        )
    assert answer.status_code == 200, answer.text
    return answer.json().get("result")


# --- (a) nobody without a token changes data or policy --------------------------------


async def test_an_anonymous_caller_cannot_put_tenant_data_or_policies(stack: Settings) -> None:
    tenant = new_tenant()
    await configure_tenant(stack.opa_url, tenant, operations=["records.get"])
    before = await _tenant_data(stack, tenant)
    async with httpx.AsyncClient(base_url=stack.opa_url, trust_env=False) as http:
        data = await http.put(f"/v1/data/stead/tenants/{tenant}", json=HOSTILE_TENANT)
        patch = await http.patch(
            "/v1/data/stead/tenants",
            json=[{"op": "add", "path": f"/{tenant}/operations/-", "value": "*"}],
        )
        policy = await http.put("/v1/policies/hostile", content=HOSTILE_POLICY)
        delete = await http.delete(f"/v1/data/stead/tenants/{tenant}")
    assert [r.status_code for r in (data, patch, policy, delete)] == [401] * 4
    assert data.json()["code"] == "unauthorized"
    assert await _tenant_data(stack, tenant) == before


async def test_an_anonymous_or_guessed_token_gets_no_decision(stack: Settings) -> None:
    async with httpx.AsyncClient(base_url=stack.opa_url, trust_env=False) as http:
        anonymous = await http.post("/v1/data/stead/step/decision", json={"input": READ_STEP})
        guessed = await http.post(
            "/v1/data/stead/step/decision",
            json={"input": READ_STEP},
            headers={"Authorization": "Bearer not-the-token"},
        )
        basic = await http.post(
            "/v1/data/stead/step/decision",
            json={"input": READ_STEP},
            auth=("stead", stack_tokens(stack).decision),
        )
        health = await http.get("/health")
    assert (anonymous.status_code, guessed.status_code, basic.status_code) == (401, 401, 401)
    assert "result" not in anonymous.json()
    assert health.status_code == 200, "readiness probes need no credential"


# --- (b) the decision token a worker holds asks, and does nothing else ----------------


async def test_the_decision_token_cannot_write_data_or_policies(stack: Settings) -> None:
    tenant = new_tenant()
    await configure_tenant(stack.opa_url, tenant, operations=["records.get"])
    before = await _tenant_data(stack, tenant)
    async with httpx.AsyncClient(
        base_url=stack.opa_url, headers=decision_headers(), trust_env=False
    ) as http:
        refused = [
            await http.put(f"/v1/data/stead/tenants/{tenant}", json=HOSTILE_TENANT),
            await http.put(f"/v1/data/stead/tenants/{tenant}/approval_authentication", json="none"),
            await http.patch(
                "/v1/data/stead/tenants",
                json=[{"op": "replace", "path": f"/{tenant}/operations", "value": ["*"]}],
            ),
            await http.delete(f"/v1/data/stead/tenants/{tenant}"),
            await http.put("/v1/policies/hostile", content=HOSTILE_POLICY),
            await http.get("/v1/policies"),
        ]
        asked = await http.post("/v1/data/stead/step/decision", json={"input": READ_STEP})
    assert [r.status_code for r in refused] == [401] * len(refused)
    assert await _tenant_data(stack, tenant) == before
    assert asked.status_code == 200 and asked.json()["result"]["outcome"] == "deny"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/data/system", None),
        ("GET", "/v1/data/system/stead_authz/tokens", None),
        ("POST", "/v1/data/system/authz/allow", {"input": {}}),
        ("GET", "/v1/data", None),
        ("POST", "/v1/data", {"input": {}}),
        ("POST", "/v1/query", {"query": "x = data.system"}),
        ("POST", "/v1/compile", {"query": "data.system.stead_authz.tokens[x]"}),
        ("GET", "/v1/data/stead/../system/stead_authz", None),
        ("GET", "/v1/data/stead/%2E%2E/system/stead_authz", None),
        ("GET", "/v1/config", None),
    ],
    ids=[
        "system",
        "token-hashes",
        "authz-rule",
        "root-get",
        "root-post",
        "query",
        "compile",
        "dot-dot",
        "encoded-dot-dot",
        "config",
    ],
)
async def test_the_decision_token_cannot_read_opas_own_data_or_tokens(
    stack: Settings, method: str, path: str, body: Any
) -> None:
    # httpx would normalise "..": send the bytes an attacker sends.
    with httpx.Client(base_url=stack.opa_url, trust_env=False) as http:
        request = http.build_request(method, "/", json=body, headers=decision_headers())
        request.url = request.url.copy_with(raw_path=path.encode())
        answer = http.send(request)
    assert answer.status_code == 401, answer.text
    tokens = stack_tokens(stack)
    assert tokens.decision not in answer.text and tokens.admin not in answer.text
    assert token_hash(tokens.admin) not in answer.text


async def test_not_even_the_admin_token_reads_the_token_hashes(stack: Settings) -> None:
    async with httpx.AsyncClient(
        base_url=stack.opa_url, headers=admin_headers(), trust_env=False
    ) as http:
        hashes = await http.get("/v1/data/system/stead_authz/tokens")
        overwrite = await http.put(
            "/v1/data/system/stead_authz/tokens", json={token_hash("mine"): "admin"}
        )
        root = await http.put("/v1/data", json={})
    assert (hashes.status_code, overwrite.status_code, root.status_code) == (401, 401, 401)


def test_the_tokens_are_private_files_and_opa_holds_only_their_hashes(stack: Settings) -> None:
    folder = opa_stack.tokens_dir(stack.home)
    tokens = stack_tokens(stack)
    for name in (TOKENS_FILE, AUTHZ_DATA_FILE):
        mode = stat.S_IMODE((folder / name).stat().st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"
    hashes = (folder / AUTHZ_DATA_FILE).read_text()
    assert tokens.decision not in hashes and tokens.admin not in hashes
    roles = json.loads(hashes)["system"]["stead_authz"]["tokens"]
    assert roles == {token_hash(tokens.decision): "decision", token_hash(tokens.admin): "admin"}
    status = _stead(stack, "dev", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert tokens.decision not in status.stdout and tokens.admin not in status.stdout
    assert json.loads(status.stdout)["opa_tokens"] == str(folder / TOKENS_FILE)
    exports = _stead(stack, "dev", "env")
    assert f"export STEAD_OPA_ADMIN_TOKEN={json.dumps(tokens.admin)}" in exports.stdout, (
        "curl users get the token from `eval $(stead dev env)`"
    )


# --- the worker's client: a refused token fails closed and says what to fix -----------


@pytest.mark.parametrize("token", [None, "not-the-token"], ids=["missing", "wrong"])
async def test_the_opa_client_without_the_right_token_fails_closed_naming_the_setting(
    stack: Settings, token: str | None
) -> None:
    async with OpaClient(stack.opa_url, token=token) as opa:
        with pytest.raises(PolicyUnauthorized) as caught:
            await opa.decide_step(READ_STEP)
    message = str(caught.value)
    assert "HTTP 401" in message and "STEAD_OPA_TOKEN" in message
    assert message.endswith(
        "$STEAD_HOME/opa/tokens.json; compose: the token `stead policy tokens` made)."
    )
    assert "not-the-token" not in message


# --- (d) the admin token changes policy: `stead policy push` --------------------------


async def test_stead_policy_push_changes_what_the_next_run_sees(
    stack: Settings, tmp_path: Path
) -> None:
    tenant = new_tenant()
    task_queue = f"attack-{uuid.uuid4().hex[:8]}"
    await configure_tenant(stack.opa_url, tenant, operations=["records.get"])
    echo = playbook({"id": "say", "operation": "core.echo", "args": {"value": "hi"}})
    client = await connect(stack)
    async with open_resources(stack) as resources, build_worker(client, task_queue, resources):
        before = await (
            await start_run(client, task_queue, tenant=tenant, principal="user:ann",
                            playbook_source=echo)
        ).result()  # fmt: skip
        tenant_file = tmp_path / "tenant.json"
        tenant_file.write_text(
            json.dumps(
                {**HOSTILE_TENANT, "operations": ["core.echo"], "start_authentication": "none"}
            )
        )
        pushed = _stead(
            stack, "policy", "push", str(tenant_file), "--data-path", f"stead/tenants/{tenant}"
        )
        assert pushed.returncode == 0, pushed.stderr
        assert "pushed 0 policy module(s) and 1 data document(s)" in pushed.stdout
        after = await (
            await start_run(client, task_queue, tenant=tenant, principal="user:ann",
                            playbook_source=echo)
        ).result()  # fmt: skip
    assert before.status != "completed" and not any(s.status == "succeeded" for s in before.steps)
    assert after.status == "completed", after.reasons
    assert after.steps[0].status == "succeeded"


async def test_stead_policy_push_sends_a_policy_module_and_a_directory(
    stack: Settings, tmp_path: Path
) -> None:
    tenant = new_tenant()
    folder = tmp_path / "policies"
    (folder / "stead" / "pushed").mkdir(parents=True)
    (folder / "stead" / "pushed" / "probe.rego").write_text(
        "package stead.pushed\n\nanswer := data.stead.pushed_data.value\n"
    )
    (folder / "stead" / "pushed" / "probe_test.rego").write_text(
        "package stead.pushed_test\n\ntest_never_pushed if true\n"
    )
    (folder / "stead" / "pushed_data").mkdir()
    (folder / "stead" / "pushed_data" / "data.json").write_text(json.dumps({"value": tenant}))
    pushed = _stead(stack, "policy", "push", str(folder))
    assert pushed.returncode == 0, pushed.stderr
    assert "pushed 1 policy module(s) and 1 data document(s)" in pushed.stdout
    async with httpx.AsyncClient(
        base_url=stack.opa_url, headers=decision_headers(), trust_env=False
    ) as http:
        answer = await http.post("/v1/data/stead/pushed/answer", json={"input": {}})
        tests = await http.get("/v1/data/stead/pushed_test")
    assert answer.json()["result"] == tenant
    assert "result" not in tests.json() or not tests.json()["result"], "tests are not policy"


def test_stead_policy_push_with_the_decision_token_is_refused_in_one_line(
    stack: Settings, tmp_path: Path
) -> None:
    tenant = new_tenant()
    tenant_file = tmp_path / "tenant.json"
    tenant_file.write_text(json.dumps(HOSTILE_TENANT))
    refused = _stead(
        stack,
        "policy",
        "push",
        str(tenant_file),
        "--data-path",
        f"stead/tenants/{tenant}",
        STEAD_OPA_ADMIN_TOKEN=stack_tokens(stack).decision,
    )
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "HTTP 401" in lines[0] and "STEAD_OPA_ADMIN_TOKEN" in lines[0]
    assert stack_tokens(stack).decision not in refused.stderr
    unplaced = _stead(stack, "policy", "push", str(tenant_file))
    assert unplaced.returncode == 1 and "--data-path" in unplaced.stderr


# --- (e) a worker with the wrong token: blocked, with the reason, nothing executed ----


async def test_a_worker_with_a_wrong_opa_token_executes_nothing_and_says_why(
    stack: Settings,
) -> None:
    tenant = new_tenant()
    task_queue = f"attack-{uuid.uuid4().hex[:8]}"
    await configure_tenant(stack.opa_url, tenant)
    api = IdempotentApi()
    wrong = settings_for(stack.home, opa_token="lifted-from-somewhere-else")
    client = await connect(wrong)
    with serve(api) as url:
        async with open_resources(wrong) as resources, build_worker(client, task_queue, resources):
            handle = await start_run(
                client,
                task_queue,
                tenant=tenant,
                principal="user:ann",
                playbook_source=playbook(
                    {
                        "id": "send",
                        "operation": "http.request",
                        "args": {"method": "POST", "url": f"{url}/x"},
                    }
                ),
            )
            status: RunStatus = await handle.result()
    assert status.status != "completed"
    assert not any(s.status == "succeeded" for s in status.steps)
    said = " ".join([*status.reasons, *(r for s in status.steps for r in (s.error or "",))])
    assert "policy_unavailable" in said and "STEAD_OPA_TOKEN" in said, said
    assert "lifted-from-somewhere-else" not in said
    assert api.requests == 0 and api.effects == []


# --- decision logs and OPA's own log never carry a token ------------------------------


def test_opa_logs_and_decision_logs_never_print_a_token(stack: Settings, tmp_path: Path) -> None:
    binary = opa_stack.ensure_binary(stack.home, stack.opa_bin)
    port = free_port()
    authz = opa_stack.tokens_dir(stack.home) / AUTHZ_DATA_FILE
    argv = opa_stack.server_argv(binary, f"{LOOPBACK}:{port}", stack.policy_dir, authz=authz)
    at = argv.index("--log-level")
    argv[at : at + 2] = ["--log-level", "debug", "--set", "decision_logs.console=true"]
    log = tmp_path / "opa.log"
    record = proc.spawn("opa-logged", argv, run_dir=tmp_path, log_path=log)
    url = f"http://{LOOPBACK}:{port}"
    tokens = stack_tokens(stack)
    try:
        proc.wait_ready(
            "opa",
            record,
            lambda: opa_stack.is_ready(url, tokens.decision),
            log_path=log,
            timeout=30,
        )
        with httpx.Client(base_url=url, trust_env=False) as http:
            asked = http.post(
                "/v1/data/stead/step/decision",
                json={"input": READ_STEP},
                headers=decision_headers(),
            )
            put = http.put("/v1/data/stead/probe", json={"x": 1}, headers=admin_headers())
            refused = http.put("/v1/data/stead/probe", json={}, headers=decision_headers())
    finally:
        proc.stop(record)
    assert (asked.status_code, put.status_code, refused.status_code) == (200, 204, 401)
    text = log.read_text(errors="replace")
    assert '"decision_id"' in text, "decision logging was on"
    assert tokens.decision not in text and tokens.admin not in text


def test_the_authz_policy_passes_its_own_tests_and_strict_check(stack: Settings) -> None:
    binary = opa_stack.ensure_binary(stack.home, stack.opa_bin)
    folder = REPO / "infra" / "opa" / "authz"
    checked = subprocess.run(
        [str(binary), "check", "--strict", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [str(binary), "test", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_stead_policy_push_replaces_the_modules_opa_loaded_from_files(
    stack: Settings, tmp_path: Path
) -> None:
    watched, edited = tmp_path / "loaded" / "policies", tmp_path / "edited" / "policies"
    shutil.copytree(stack.policy_dir, watched)
    shutil.copytree(stack.policy_dir, edited)
    system = edited / "stead" / "system.rego"
    system.write_text(system.read_text().replace('revision := "dev"', 'revision := "pushed"'))
    binary = opa_stack.ensure_binary(stack.home, stack.opa_bin)
    port = free_port()
    record = opa_stack.start(tmp_path, binary, watched, port, tokens=stack_tokens(stack))
    url = f"http://{LOOPBACK}:{port}"
    try:
        pushed = _stead(stack, "policy", "push", str(edited), STEAD_OPA_URL=url)
        with httpx.Client(base_url=url, headers=decision_headers(), trust_env=False) as http:
            health = http.get("/v1/data/stead/system/health").json()["result"]
    finally:
        proc.stop(record)
    assert pushed.returncode == 0, pushed.stderr
    assert health == {"ok": True, "revision": "pushed"}


def test_a_token_that_cannot_be_a_header_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_for(tmp_path, opa_token="half a token\r\nX-Injected: 1")
    assert "STEAD_OPA_TOKEN" in caught.value.message
    assert "half a token" not in caught.value.message


def test_a_refused_token_survives_pickling_as_the_same_error() -> None:
    """Temporal carries activity errors across processes; the hint must survive."""
    refused = PolicyUnauthorized("http://127.0.0.1:8181", "refused Stead's token with HTTP 401")
    again = pickle.loads(pickle.dumps(refused))
    assert type(again) is PolicyUnauthorized and str(again) == str(refused)
    assert "STEAD_OPA_TOKEN" in str(again)

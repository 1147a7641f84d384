"""``stead webhook serve``: return events in, one governed reconciliation run per event out.

The streaming half of the commerce case (the nightly Schedule is the batch half).
``POST /returns`` with ``{event_id, order_id, sku, quantity, condition}`` starts the
``commerce-reconcile`` playbook for that SKU. The run's workflow id is
``return-<tenant>-<event_id>`` and Temporal refuses a second workflow with that id,
even after the first finished, so a redelivered event (webhook senders retry) is
answered with the run it already started instead of starting another.

With ``--secret-file`` the receiver checks Standard Webhooks signatures (the scheme
``webhook.post`` signs with) and answers 401 to anything unsigned or stale.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import Field, SecretStr, ValidationError
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from stead.cli._common import console, fails_cleanly, settings
from stead.cli.starts import StartCredential, read_token_file, start_governed, starter
from stead.contracts.base import Closed
from stead.errors import ConfigError
from stead_cases.runs import COMMERCE_AGENT, commerce_request, reconcile_limits

app = typer.Typer(help="Receive events that start governed runs.", no_args_is_help=True)
BODY_LIMIT = 64 * 1024


class ReturnEvent(Closed):
    """A parcel the warehouse received back; closed, so a renamed field is a 422."""

    event_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
    order_id: str = Field(min_length=1, max_length=100)
    sku: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    quantity: int = Field(ge=1, le=10_000)
    condition: Literal["resellable", "damaged"] = "resellable"


@dataclass(frozen=True)
class ReturnRuns:
    """Starts the reconciliation run of one return event."""

    client: Client
    task_queue: str
    tenant: str
    shop_url: str
    opa_url: str
    database: str = "warehouse"
    principal: str = COMMERCE_AGENT
    opa_token: SecretStr | None = None  # the decision token, to read the tenant's limits
    # The service principal's token; each run gets a copy narrowed to it alone.
    credential: StartCredential | None = None
    # Tenant -> fairness weight (STEAD_FAIRNESS_WEIGHTS): this tenant's share of the queue.
    fairness_weights: Mapping[str, float] = field(default_factory=dict)

    def run_id(self, event: ReturnEvent) -> str:
        return f"return-{self.tenant}-{event.event_id}"

    async def start(self, event: ReturnEvent) -> tuple[str, bool]:
        """``(run id, started)``; ``started`` is False when the event was seen before."""
        request = commerce_request(
            self.tenant,
            shop_url=self.shop_url,
            database=self.database,
            # Read per event: a limit tightened in OPA routes the very next return.
            limits=await reconcile_limits(self.opa_url, self.tenant, self.opa_token),
            skus=[event.sku],
            trigger={"type": "return", **event.model_dump(mode="json")},
            history_key="returns",
            principal=self.principal,
        )
        run_id = self.run_id(event)
        try:
            await start_governed(
                self.client,
                self.task_queue,
                request,
                self.credential,
                workflow_id=run_id,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                fairness_weights=self.fairness_weights,
            )
        except WorkflowAlreadyStartedError:
            return run_id, False
        return run_id, True


@contextmanager
def serving(
    runs: ReturnRuns,
    loop: asyncio.AbstractEventLoop,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    secret: str | None = None,
) -> Iterator[str]:
    """Serve ``POST /returns`` on a thread; runs start on ``loop`` (the client's loop).
    Yields the receiver's URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0].rstrip("/") != "/returns":
                self._answer(404, {"error": "POST return events to /returns"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > BODY_LIMIT:
                self._answer(413, {"error": f"events are at most {BODY_LIMIT} bytes"})
                return
            raw = self.rfile.read(length)
            if secret is not None:
                from adapters.webhook import SignatureInvalid, verify

                try:
                    verify(secret, dict(self.headers.items()), raw)
                except SignatureInvalid as exc:
                    self._answer(401, {"error": f"signature refused: {exc}"})
                    return
            try:
                event = ReturnEvent.model_validate_json(raw)
            except ValidationError as exc:
                problems = [
                    f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                    for e in exc.errors()
                ]
                self._answer(422, {"error": "not a return event", "problems": problems})
                return
            future = asyncio.run_coroutine_threadsafe(runs.start(event), loop)
            try:
                run_id, started = future.result(timeout=30)
            except Exception as exc:  # Temporal or OPA down: the sender should retry
                self._answer(503, {"error": f"could not start the run: {exc}"})
                return
            self._answer(202 if started else 200, {"run_id": run_id, "started": started})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@app.command("serve")
@fails_cleanly
def serve(
    shop_url: Annotated[str, typer.Option(help="The shop API the runs reconcile against.")],
    tenant: Annotated[str, typer.Option(help="Tenant the runs belong to.")] = "shop",
    database: Annotated[str, typer.Option(help="The tenant's warehouse database.")] = "warehouse",
    principal: Annotated[
        str | None,
        typer.Option("--as", help="Who starts the runs (default: the token's principal)."),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="The service principal's token (else STEAD_WEBHOOK_TOKEN_FILE), e.g. "
            "service:webhook's from `stead principal token`."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8700,
    task_queue: Annotated[str | None, typer.Option(help="Default: STEAD_TASK_QUEUE.")] = None,
    secret_file: Annotated[
        Path | None, typer.Option(help="Signing key file: require Standard Webhooks signatures.")
    ] = None,
) -> None:
    """Start one reconciliation run per return event posted to /returns, until Ctrl-C."""
    from stead.temporal import connect

    cfg = settings()
    secret = None
    if secret_file is not None:
        if not secret_file.is_file():
            raise ConfigError(f"--secret-file {secret_file} does not exist")
        secret = secret_file.read_text().strip()

    path = token_file or cfg.webhook_token_file
    credential = None
    if path is not None:
        credential = StartCredential.load(cfg, read_token_file(path, "the webhook token file"))
        starter(cfg, tenant, principal, credential.token)
    else:
        console.print(
            f"[yellow]no webhook token[/] (--token-file or STEAD_WEBHOOK_TOKEN_FILE): runs are "
            f"refused unless tenant {tenant} opts out of start tokens in its policy data"
        )
    run_as = credential.principal if credential is not None else principal or COMMERCE_AGENT

    async def main() -> None:
        client = await connect(cfg)
        runs = ReturnRuns(
            client,
            task_queue or cfg.task_queue,
            tenant,
            shop_url.rstrip("/"),
            cfg.opa_url,
            database,
            run_as,
            cfg.opa_token,
            credential,
            cfg.fairness_weights,
        )
        with serving(runs, asyncio.get_running_loop(), host=host, port=port, secret=secret) as url:
            console.print(f"receiving return events at {url}/returns for tenant {tenant}")
            await asyncio.Event().wait()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        console.print("stopped")

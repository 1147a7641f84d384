"""``stead policy``: change a running OPA's policies and data, and make OPA's tokens.

``push`` presents the admin token (``STEAD_OPA_ADMIN_TOKEN``; the dev stack's own
otherwise). ``tokens`` makes a decision and an admin token for an OPA outside the dev
stack (docker-compose.yml): OPA gets only their SHA-256 hashes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stead.cli._common import console, fails_cleanly, settings

app = typer.Typer(help="OPA: push policies and data, make OPA's API tokens.")


@app.command("push")
@fails_cleanly
def push_command(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="A policy directory, a .rego or a .json file (default STEAD_POLICY_DIR)."
        ),
    ] = None,
    data_path: Annotated[
        str | None,
        typer.Option(
            "--data-path", help="Where a single .json file goes, e.g. stead/tenants/acme."
        ),
    ] = None,
    policy_id: Annotated[
        str | None, typer.Option("--id", help="Policy id for a single .rego (default its name).")
    ] = None,
) -> None:
    """PUT policy modules and data documents into STEAD_OPA_URL with the admin token."""
    from stead.policy.admin import OpaAdmin
    from stead.policy.push import plan_push, push

    cfg = settings()
    items = plan_push(path or cfg.policy_dir, data_path=data_path, policy_id=policy_id)
    push(OpaAdmin(cfg.opa_url, cfg.opa_admin_token), items)
    policies = sum(1 for item in items if item.kind == "policy")
    console.print(
        f"pushed {policies} policy module(s) and {len(items) - policies} data document(s) "
        f"to {cfg.opa_url}",
        highlight=False,
    )


@app.command("tokens")
@fails_cleanly
def tokens_command(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for tokens.json and authz.json (mode 0600).")
    ],
) -> None:
    """Make OPA's decision and admin tokens (kept if already there) and OPA's hash file."""
    from stead.policy.authz import AUTHZ_DATA_FILE, TOKENS_FILE, ensure_tokens

    ensure_tokens(out)
    console.print(
        f"{out / TOKENS_FILE}: the tokens (decision for workers as STEAD_OPA_TOKEN, admin for "
        f"operators as STEAD_OPA_ADMIN_TOKEN)\n{out / AUTHZ_DATA_FILE}: their hashes, for OPA "
        "(docker-compose.yml mounts STEAD_OPA_AUTHZ_DIR)",
        highlight=False,
    )

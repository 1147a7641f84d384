"""OPA's own API credentials: a decision token for workers, an admin token for operators.

OPA runs with ``--authentication=token --authorization=basic`` and the ``system.authz``
policy in ``infra/opa/authz/authz.rego`` (outside the Stead bundle in ``policies/``).
That policy looks the presented bearer token up by its SHA-256 in a data file OPA loads
beside it, so OPA never holds a usable token: reading its data (which the policy forbids
anyway) would give an attacker hashes, not credentials.

- ``decision``: ``GET``/``POST /v1/data/stead/...`` only (what workers and the CLI ask).
- ``admin``: change data and policies (``stead policy push``, demos, tenant config).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from stead.errors import ConfigError

Role = Literal["decision", "admin"]
AUTHZ_POLICY: Final = Path(__file__).resolve().parents[2] / "infra" / "opa" / "authz" / "authz.rego"
TOKENS_FILE: Final = "tokens.json"
AUTHZ_DATA_FILE: Final = "authz.json"
SERVER_FLAGS: Final = ("--authentication=token", "--authorization=basic")


@dataclass(frozen=True)
class OpaTokens:
    """The two bearer tokens of one OPA; never logged, never in workflow history."""

    decision: str
    admin: str

    @classmethod
    def generate(cls) -> OpaTokens:
        return cls(decision=secrets.token_urlsafe(32), admin=secrets.token_urlsafe(32))

    def roles(self) -> dict[str, Role]:
        return {self.decision: "decision", self.admin: "admin"}


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authz_data(roles: dict[str, Role]) -> dict[str, object]:
    """The data document the authz policy reads: token hash -> role, under ``data.system``."""
    return {"system": {"stead_authz": {"tokens": {token_hash(t): r for t, r in roles.items()}}}}


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only, replacing ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


def read_tokens(directory: Path) -> OpaTokens | None:
    """The tokens kept in ``directory/tokens.json``; None when there are none yet."""
    path = directory / TOKENS_FILE
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        return OpaTokens(decision=str(raw["decision"]), admin=str(raw["admin"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path} is unreadable ({type(exc).__name__}); delete it and run `stead dev up` "
            "again to generate new OPA tokens"
        ) from None


def ensure_tokens(directory: Path) -> OpaTokens:
    """Tokens for the OPA whose files live in ``directory``: kept if present, else generated.

    Writes both ``tokens.json`` (the tokens, for Stead's settings) and ``authz.json``
    (their hashes, for OPA), each mode 0600.
    """
    tokens = read_tokens(directory)
    if tokens is None:
        tokens = OpaTokens.generate()
        write_private(directory / TOKENS_FILE, json.dumps(tokens.__dict__, indent=2))
    write_private(directory / AUTHZ_DATA_FILE, json.dumps(authz_data(tokens.roles()), indent=2))
    return tokens

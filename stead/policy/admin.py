"""Changing OPA's data and policies with the admin token: ``stead policy push``, demos, catalog.

Every write to OPA goes through here, so each one presents ``STEAD_OPA_ADMIN_TOKEN``
and fails with one line that names what to fix. The decision token workers hold cannot
write (``infra/opa/authz/authz.rego``); this is the only credential that can.
"""

from __future__ import annotations

import json
from typing import Any, Final

import httpx
from pydantic import SecretStr

from stead.errors import ConfigError

ADMIN_TOKEN_HINT: Final = (
    "set STEAD_OPA_ADMIN_TOKEN to OPA's admin token (the dev stack keeps it in "
    "$STEAD_HOME/opa/tokens.json)"
)


class OpaAdmin:
    """PUTs data documents and policy modules into one OPA, as its admin."""

    def __init__(self, url: str, token: str | SecretStr | None, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        self._headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self._timeout = timeout

    def put_data(self, path: str, value: Any) -> None:
        """Replace ``data.<path>`` (slash-separated) with ``value``."""
        body = json.dumps(value).encode()
        self._send("PUT", f"/v1/data/{_clean(path)}", body, "application/json", what=path)

    def put_policy(self, policy_id: str, rego: str) -> None:
        """Create or replace the policy module ``policy_id``; OPA compiles it first."""
        self._send(
            "PUT", f"/v1/policies/{_clean(policy_id)}", rego.encode(), "text/plain", what=policy_id
        )

    def policy_ids(self) -> list[str]:
        """The ids of the policy modules OPA holds (files it loaded, and pushed ones)."""
        try:
            with httpx.Client(timeout=self._timeout, trust_env=False) as http:
                response = http.get(f"{self.url}/v1/policies", headers=self._headers)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        self._check(response, "the policy list")
        modules = response.json().get("result", [])
        return [m["id"] for m in modules if isinstance(m, dict) and isinstance(m.get("id"), str)]

    async def aput_data(self, path: str, value: Any) -> None:
        """``put_data`` for async callers (demos)."""
        url = f"{self.url}/v1/data/{_clean(path)}"
        try:
            async with httpx.AsyncClient(timeout=self._timeout, trust_env=False) as http:
                response = await http.put(url, json=value, headers=self._headers)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        self._check(response, path)

    def _send(self, method: str, path: str, body: bytes, content_type: str, *, what: str) -> None:
        headers = {**self._headers, "Content-Type": content_type}
        try:
            with httpx.Client(timeout=self._timeout, trust_env=False) as http:
                response = http.request(method, self.url + path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        self._check(response, what)

    def _unreachable(self, exc: httpx.HTTPError) -> ConfigError:
        return ConfigError(
            f"OPA at {self.url} could not be reached ({type(exc).__name__}); "
            "is `stead dev up` running, or is STEAD_OPA_URL right?"
        )

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code in (401, 403):
            missing = "no admin token was sent" if not self._headers else "it refused the token"
            raise ConfigError(
                f"OPA at {self.url} did not take {what}: HTTP {response.status_code}, "
                f"{missing}; {ADMIN_TOKEN_HINT}"
            )
        if response.status_code >= 300:
            raise ConfigError(
                f"OPA at {self.url} refused {what} (HTTP {response.status_code}: "
                f"{_opa_message(response)})"
            )


def _clean(path: str) -> str:
    cleaned = path.strip("/")
    if not cleaned or any(part in ("", ".", "..") for part in cleaned.split("/")):
        raise ConfigError(f"not an OPA path: {path!r} (expected e.g. stead/tenants/acme)")
    return cleaned


def _opa_message(response: httpx.Response) -> str:
    """OPA's error message and its first detail, on one line."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].replace("\n", " ")
    if not isinstance(body, dict):
        return str(body)[:200]
    parts = [str(body.get("message", "")).replace("\n", " ")]
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        where = first.get("location") or {}
        at = f" at {where.get('file')}:{where.get('row')}" if isinstance(where, dict) else ""
        parts.append(f"{first.get('message', '')}{at}")
    return "; ".join(p for p in parts if p)[:400]

"""Secrets from environment variables: ``STEAD_SECRET__<TENANT>__<ADAPTER>__<NAME>``.

The backend is handed its variables (``Settings``' ``secret_environment()`` at worker
start) instead of reading ``os.environ``: settings stay the one reader of the
environment, tests pass a plain dict, and the snapshot is masked (``SecretStr``) from
the moment it is taken. Changing a value therefore needs a worker restart, as it
would for any process environment.

The mapping upper-cases each part and keeps ``-`` as ``-``. Turning ``-`` into ``_``
would be friendlier to shells but would map ``acme-eu`` and ``acme_eu`` to one
variable, i.e. let one tenant read another's secret. Set such variables with ``env``,
a ``.service`` file or the orchestrator (Kubernetes and Docker accept ``-``), or use
the files backend.

Where a secret may be sent is declared beside it, in
``STEAD_SECRET__<TENANT>__<ADAPTER>__<NAME>__DESTINATIONS`` (egress entries separated
by commas or whitespace, e.g. ``api.example.com, https://hooks.example.com:8443``). A
reference has exactly three parts without ``__``, so no reference maps to this name.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr

from stead.secrets.refs import SecretRef
from stead.settings import SECRET_ENV_PREFIX

ENV_PREFIX = SECRET_ENV_PREFIX
DESTINATIONS_SUFFIX = "__DESTINATIONS"


def env_name(ref: SecretRef) -> str:
    """The variable that holds ``ref``; one-to-one thanks to the reference grammar."""
    return ENV_PREFIX + "__".join(part.upper() for part in (ref.tenant, ref.adapter, ref.name))


class EnvSecretBackend:
    """Looks references up in a snapshot of ``STEAD_SECRET__*`` variables."""

    def __init__(self, variables: Mapping[str, SecretStr | str]) -> None:
        self._vars = {
            key: value if isinstance(value, SecretStr) else SecretStr(value)
            for key, value in variables.items()
            if key.startswith(ENV_PREFIX)
        }

    def __repr__(self) -> str:
        return f"EnvSecretBackend({len(self._vars)} variables)"

    async def fetch(self, ref: SecretRef) -> SecretStr | None:
        return self._vars.get(env_name(ref))

    def describe(self, ref: SecretRef) -> str:
        return f"environment variable {env_name(ref)}"

    async def destinations(self, ref: SecretRef) -> tuple[str, ...] | None:
        """The egress entries declared for ``ref``, or None when none are."""
        declared = self._vars.get(destinations_env_name(ref))
        if declared is None:
            return None
        return split_entries(declared.get_secret_value())

    def describe_destinations(self, ref: SecretRef) -> str:
        return f"environment variable {destinations_env_name(ref)}"


def destinations_env_name(ref: SecretRef) -> str:
    """The variable that declares where ``ref`` may be sent."""
    return env_name(ref) + DESTINATIONS_SUFFIX


def split_entries(text: str) -> tuple[str, ...]:
    """Entries separated by commas, whitespace or lines; ``#`` starts a comment line."""
    lines = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return tuple(e for line in lines for e in line.replace(",", " ").split() if e)

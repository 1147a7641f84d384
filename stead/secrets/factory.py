"""The worker's secret store, built from settings once at start."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr

from stead.secrets.env import EnvSecretBackend
from stead.secrets.files import FileSecretBackend
from stead.secrets.store import SecretBackend, Secrets
from stead.settings import Settings


def open_secret_store(settings: Settings, environ: Mapping[str, SecretStr]) -> Secrets:
    """Backends in the order ``settings.secret_backends`` names them; the first hit wins.

    ``environ`` is the ``STEAD_SECRET__*`` snapshot (``stead.settings.secret_environment``),
    passed in so that only settings read the process environment.
    """
    backends: list[SecretBackend] = []
    for name in settings.secret_backends:
        if name == "env":
            backends.append(EnvSecretBackend(environ))
        else:
            backends.append(FileSecretBackend(settings.secret_dir or settings.home / "secrets"))
    return Secrets(backends)

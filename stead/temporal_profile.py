"""Temporal's own environment configuration, read the way its CLI and SDKs read it.

``temporalio.envconfig`` resolves one profile: ``TEMPORAL_*`` variables over the
``temporal.toml`` profile named by ``TEMPORAL_PROFILE`` (default ``default``), from
``TEMPORAL_CONFIG_FILE`` or ``~/.config/temporalio/temporal.toml``. This module maps
that profile onto Stead's settings fields; ``stead.settings.load_settings`` gives it
its place in the precedence (below ``STEAD_TEMPORAL_*``, above ``stack.json``).

Beside ``stead.settings`` rather than in ``stead.temporal``: that package's ``__init__``
loads the client, which imports the settings, so living there made an import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from temporalio.envconfig import ClientConfigProfile, ClientConfigTLS, DataSource

from stead.errors import ConfigError


def profile_settings(environment: Mapping[str, str]) -> dict[str, Any]:
    """Settings fields the Temporal profile sets; empty when nothing is configured."""
    try:
        profile = ClientConfigProfile.load(override_env_vars=dict(environment))
    except Exception as exc:  # the bridge raises its own ConfigError type, not exported
        chosen = environment.get("TEMPORAL_PROFILE", "default")
        raise ConfigError(
            f"Temporal environment configuration (profile {chosen!r}) cannot be loaded: "
            f"{exc}; fix TEMPORAL_PROFILE / TEMPORAL_CONFIG_FILE or the temporal.toml"
        ) from None
    found: dict[str, Any] = {}
    if profile.address:
        found["temporal_address"] = profile.address
    if profile.namespace:
        found["temporal_namespace"] = profile.namespace
    if profile.api_key:
        found["temporal_api_key"] = profile.api_key
    if profile.grpc_meta:
        found["temporal_grpc_meta"] = dict(profile.grpc_meta)
    if profile.tls is not None:
        found.update(_tls_settings(profile.tls))
    return found


def _tls_settings(tls: ClientConfigTLS) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if tls.disabled is not None:
        found["temporal_tls"] = not tls.disabled
    if tls.server_name:
        found["temporal_tls_server_name"] = tls.server_name
    for field, source in (
        ("temporal_tls_cert", tls.client_cert),
        ("temporal_tls_key", tls.client_private_key),
        ("temporal_tls_ca", tls.server_root_ca_cert),
    ):
        found.update(_pem_setting(field, source))
    return found


def _pem_setting(field: str, source: DataSource | None) -> dict[str, Any]:
    """A path goes to the file field, inline PEM to its ``*_data`` twin."""
    if source is None:
        return {}
    if isinstance(source, Path):
        return {field: source}
    text = source.decode() if isinstance(source, bytes) else source
    return {f"{field}_data": text}

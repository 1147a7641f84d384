"""What a worker holds to mint and check credentials, loaded once from the key directory.

* the capability authority, only where ``capability.key`` is present (main workers);
* the capability verifier, always: ``capability.pub`` is required, since no step may
  run without checking its token;
* the principal-token verifier, where ``identity.pub`` is present (workers that run
  the approval and start admission activities);
* the integrity secret, where ``integrity.secret`` is present (workers that run
  ``stead.run``: they seal and check its continuation state).

Against the embedded dev stack (``$STEAD_HOME/stack.json`` exists, no ``STEAD_KEYS_DIR``)
missing keys are created on first use, as ``stead dev up`` creates Postgres credentials;
anywhere else a missing key is a configuration error that says which file to provide.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from stead.capability.authority import CapabilityAuthority
from stead.capability.verifier import CapabilityVerifier
from stead.errors import ConfigError
from stead.identity.tokens import PrincipalTokenVerifier
from stead.keys import CAPABILITY, IDENTITY, INTEGRITY, key_store
from stead.settings import Settings


@dataclass(frozen=True)
class WorkerTrust:
    authority: CapabilityAuthority | None
    capabilities: CapabilityVerifier
    principals: PrincipalTokenVerifier | None
    # Seals a run's continuation state (activities/continuation.py); None: cannot seal.
    integrity: bytes | None = None


def open_trust(settings: Settings, pool: asyncpg.Pool) -> WorkerTrust:
    store = key_store(settings)
    public = store.public(CAPABILITY)
    if public is None:
        raise ConfigError(
            f"no capability public key at {store.public_path(CAPABILITY)}: run `stead keys init` "
            "where the authority runs and copy capability.pub to this worker's STEAD_KEYS_DIR"
        )
    private = store.private(CAPABILITY)
    identity = store.public(IDENTITY)
    return WorkerTrust(
        authority=None if private is None else CapabilityAuthority(private, pool),
        capabilities=CapabilityVerifier(public),
        principals=None if identity is None else PrincipalTokenVerifier(identity),
        integrity=store.secret(INTEGRITY),
    )

"""Capability tokens: one signed, short-lived, single-use grant per step effect.

The authority (``authority.py``) holds the private key and signs only after a recorded
allow; the execution boundary verifies with the public key (``verifier.py``) and spends
the token in the Postgres ledger (``ledger.py``) in the transaction that commits the
effect's intent.
"""

from stead.capability.authority import CapabilityAuthority, CapabilityIssuer, IssuedCapability
from stead.capability.claims import DEFAULT_TTL, MAX_TTL, CapabilityClaims, CapabilityScope
from stead.capability.errors import (
    CapabilityExpired,
    CapabilityInvalid,
    CapabilityMismatch,
    CapabilityRefused,
    CapabilityReplayed,
    KeyRebound,
    NoAllowDecision,
    NoAuthority,
)
from stead.capability.ledger import consume
from stead.capability.verifier import CapabilityVerifier

__all__ = [
    "DEFAULT_TTL",
    "MAX_TTL",
    "CapabilityAuthority",
    "CapabilityClaims",
    "CapabilityExpired",
    "CapabilityInvalid",
    "CapabilityIssuer",
    "CapabilityMismatch",
    "CapabilityRefused",
    "CapabilityReplayed",
    "CapabilityScope",
    "CapabilityVerifier",
    "IssuedCapability",
    "KeyRebound",
    "NoAllowDecision",
    "NoAuthority",
    "consume",
]

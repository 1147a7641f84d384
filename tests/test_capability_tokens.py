"""Capability tokens on their own: what the authority signs, and what the public key accepts."""

from __future__ import annotations

import base64
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from biscuit_auth import Biscuit, BiscuitBuilder, BlockBuilder, KeyPair, PublicKey

from stead.capability import (
    MAX_TTL,
    CapabilityAuthority,
    CapabilityExpired,
    CapabilityInvalid,
    CapabilityMismatch,
    CapabilityScope,
    CapabilityVerifier,
)
from stead.capability.authority import AUTHORITY_BLOCK, utcnow
from stead.capability.trust import open_trust
from stead.db.pool import create_pool
from stead.identity.tokens import PrincipalTokenIssuer
from stead.keys import CAPABILITY, KeyStore
from stead.settings import Settings
from tests.conftest import settings_for


@pytest_asyncio.fixture(scope="module")
async def pool(stack: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(stack.postgres_dsn, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    store = KeyStore(tmp_path_factory.mktemp("authority-keys"))
    store.ensure(CAPABILITY)
    return store


@pytest.fixture(scope="module")
def authority(keys: KeyStore, pool: asyncpg.Pool) -> CapabilityAuthority:
    private = keys.private(CAPABILITY)
    assert private is not None
    return CapabilityAuthority(private, pool)


@pytest.fixture(scope="module")
def verifier(keys: KeyStore) -> CapabilityVerifier:
    public = keys.public(CAPABILITY)
    assert public is not None
    return CapabilityVerifier(public)


def scope(**changes: str) -> CapabilityScope:
    base = CapabilityScope(
        tenant="acme",
        workflow_id="run-acme-1",
        run_id="r-1",
        step_id="put",
        operation="records.put",
        args_hash="a" * 64,
        idempotency_key="run-acme-1/put",
        decision_id="d-1",
    )
    return base.model_copy(update=changes)


def flip_a_byte(token: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def test_a_token_verifies_on_a_machine_holding_only_the_public_key(
    authority: CapabilityAuthority, keys: KeyStore, tmp_path: Path
) -> None:
    edge = KeyStore(tmp_path / "edge-keys")
    edge.directory.mkdir()
    shutil.copy(keys.public_path(CAPABILITY), edge.public_path(CAPABILITY))
    assert edge.private(CAPABILITY) is None
    public = edge.public(CAPABILITY)
    assert public is not None
    token = authority.sign(scope()).token
    claims = CapabilityVerifier(public).verify(token, scope())
    assert claims.scope == scope()
    assert claims.expires_at - claims.issued_at <= MAX_TTL


def test_an_edge_worker_with_only_the_public_key_can_verify_but_not_mint(
    stack: Settings, pool: asyncpg.Pool, keys: KeyStore, tmp_path: Path
) -> None:
    shutil.copy(keys.public_path(CAPABILITY), tmp_path / "capability.pub")
    trust = open_trust(settings_for(stack.home, keys_dir=tmp_path), pool)
    assert trust.authority is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["capability.pub"]


def test_a_tampered_token_fails_its_signature(
    authority: CapabilityAuthority, verifier: CapabilityVerifier
) -> None:
    token = authority.sign(scope()).token
    with pytest.raises(CapabilityInvalid, match="signature"):
        verifier.verify(flip_a_byte(token), scope())


def test_a_token_signed_by_another_key_is_refused(
    pool: asyncpg.Pool, verifier: CapabilityVerifier
) -> None:
    forger = CapabilityAuthority(KeyPair().private_key, pool)
    with pytest.raises(CapabilityInvalid, match="signature"):
        verifier.verify(forger.sign(scope()).token, scope())


def test_an_expired_token_is_refused(
    keys: KeyStore, pool: asyncpg.Pool, verifier: CapabilityVerifier
) -> None:
    private = keys.private(CAPABILITY)
    assert private is not None
    earlier = CapabilityAuthority(private, pool, clock=lambda: utcnow() - timedelta(minutes=10))
    with pytest.raises(CapabilityExpired):
        verifier.verify(earlier.sign(scope()).token, scope())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenant", "globex"),
        ("workflow_id", "run-acme-2"),
        ("run_id", "r-2"),
        ("step_id", "delete"),
        ("operation", "records.get"),
        ("args_hash", "b" * 64),
        ("idempotency_key", "run-acme-1/delete"),
        ("decision_id", "d-2"),
    ],
)
def test_a_token_grants_nothing_outside_its_scope(
    authority: CapabilityAuthority, verifier: CapabilityVerifier, field: str, value: str
) -> None:
    token = authority.sign(scope()).token
    with pytest.raises(CapabilityMismatch) as refused:
        verifier.verify(token, scope(**{field: value}))
    assert refused.value.fields == (field,)


def test_attenuation_cannot_reaim_a_token_at_another_step(
    authority: CapabilityAuthority, keys: KeyStore, verifier: CapabilityVerifier
) -> None:
    public = keys.public(CAPABILITY)
    assert public is not None
    token = Biscuit.from_base64(authority.sign(scope()).token, public)
    other = scope(step_id="delete", idempotency_key="run-acme-1/delete")
    block = BlockBuilder(
        "capability({tenant}, {workflow_id}, {run_id}, {step_id}, {operation});"
        " effect({args_hash}, {idempotency_key}, {decision_id});",
        other.model_dump(),
    )
    widened = token.append(block).to_base64()
    with pytest.raises(CapabilityMismatch):
        verifier.verify(widened, other)
    assert verifier.verify(widened, scope()).step_id == "put"


def test_checks_a_holder_appends_still_bind(
    authority: CapabilityAuthority, keys: KeyStore, verifier: CapabilityVerifier
) -> None:
    public = keys.public(CAPABILITY)
    assert public is not None
    token = Biscuit.from_base64(authority.sign(scope()).token, public)
    narrowed = token.append(
        BlockBuilder("check if time($t), $t <= {past};", {"past": utcnow() - timedelta(hours=1)})
    )
    with pytest.raises(CapabilityInvalid, match="failed its own checks"):
        verifier.verify(narrowed.to_base64(), scope())


def test_a_lifetime_above_five_minutes_is_refused_even_when_signed(
    keys: KeyStore, verifier: CapabilityVerifier
) -> None:
    private = keys.private(CAPABILITY)
    assert private is not None
    issued = utcnow().replace(microsecond=0)
    long_lived = BiscuitBuilder(
        AUTHORITY_BLOCK,
        {
            **scope().model_dump(),
            "token_id": "t-long",
            "issued_at": issued,
            "expires_at": issued + timedelta(hours=1),
        },
    ).build(private)
    with pytest.raises(CapabilityInvalid, match="lifetime"):
        verifier.verify(long_lived.to_base64(), scope())


def test_the_authority_will_not_sign_for_more_than_five_minutes(
    authority: CapabilityAuthority,
) -> None:
    with pytest.raises(ValueError, match="ttl"):
        authority.sign(scope(), ttl=timedelta(minutes=6))


def test_a_principal_token_is_not_a_capability(
    keys: KeyStore, verifier: CapabilityVerifier
) -> None:
    private = keys.private(CAPABILITY)
    assert private is not None
    principal = PrincipalTokenIssuer(private).issue("acme", "user:bob").token
    with pytest.raises(CapabilityInvalid, match="claim sets"):
        verifier.verify(principal, scope())


def test_key_files_are_private_and_in_biscuit_text_form(keys: KeyStore) -> None:
    assert keys.private_path(CAPABILITY).stat().st_mode & 0o077 == 0
    text = keys.public_path(CAPABILITY).read_text().strip()
    assert text.startswith("ed25519/")
    PublicKey(text)

"""The shape check a cancel's token passes before it may enter history (no keys, no I/O)."""

from __future__ import annotations

from biscuit_auth import KeyPair

from stead.contracts.approval_token import ApprovalScope, exposed_revocation_ids
from stead.contracts.cancel_token import cancel_narrowing_problem, cancel_scope
from stead.identity.tokens import PrincipalTokenIssuer, scope_to_approval, scope_to_cancel

KEYS = KeyPair()
BARE = PrincipalTokenIssuer(KEYS.private_key).issue("acme", "user:bob").token
HERE = cancel_scope("run-acme-1", "wrong day")


def test_only_a_token_narrowed_to_this_run_and_reason_passes() -> None:
    narrowed = scope_to_cancel(BARE, KEYS.public_key, HERE)
    assert cancel_narrowing_problem(narrowed, HERE) is None
    assert "not narrowed to this cancel" in (cancel_narrowing_problem(BARE, HERE) or "")
    other_run = scope_to_cancel(BARE, KEYS.public_key, cancel_scope("run-acme-2", "wrong day"))
    assert "run-acme-2" in (cancel_narrowing_problem(other_run, HERE) or "")
    other_reason = scope_to_cancel(BARE, KEYS.public_key, cancel_scope("run-acme-1", "other"))
    assert "another reason" in (cancel_narrowing_problem(other_reason, HERE) or "")
    assert "not URL-safe" in (cancel_narrowing_problem("a b", HERE) or "")


def test_an_approval_token_is_no_cancel_token() -> None:
    approval = ApprovalScope(workflow_id="run-acme-1", step_id="s", plan_hash="h", verdict="reject")
    narrowed = scope_to_approval(BARE, KEYS.public_key, approval)
    assert cancel_narrowing_problem(narrowed, HERE) is not None


def test_burning_a_lifted_cancel_token_spares_the_principals_own_token() -> None:
    narrowed = scope_to_cancel(BARE, KEYS.public_key, HERE)
    authority = exposed_revocation_ids(BARE)[0]
    burned = exposed_revocation_ids(narrowed)
    assert burned and authority not in burned

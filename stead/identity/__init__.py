"""Identity: the directory of tenants, principals and groups, and the principal tokens
approvers present so an approval is attributable to someone Stead authenticated."""

from stead.contracts.approval_token import ApprovalScope
from stead.identity.admission import admit_run
from stead.identity.approvals import ApprovalAuthenticator
from stead.identity.directory import Principal, Tenant
from stead.identity.errors import DirectoryError, PrincipalTokenRefused
from stead.identity.tokens import (
    PrincipalClaims,
    PrincipalTokenIssuer,
    PrincipalTokenVerifier,
    scope_to_approval,
)

__all__ = [
    "ApprovalAuthenticator",
    "ApprovalScope",
    "DirectoryError",
    "Principal",
    "PrincipalClaims",
    "PrincipalTokenIssuer",
    "PrincipalTokenRefused",
    "PrincipalTokenVerifier",
    "Tenant",
    "admit_run",
    "scope_to_approval",
]

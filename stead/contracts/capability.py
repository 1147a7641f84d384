"""Contracts of the capability authority's activity: a grant *reference*, never a token.

A step routed to an edge worker (which holds only the public key) needs a token minted
elsewhere. The workflow asks the authority's worker for a grant and passes its id to
the edge; the token stays in Postgres, so workflow history holds no capability at all.
"""

from __future__ import annotations

from datetime import datetime

from stead.contracts.base import Closed


class CapabilityGrant(Closed):
    token_id: str
    expires_at: datetime

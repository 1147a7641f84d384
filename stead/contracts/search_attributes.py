"""The run's search attributes: what ``stead runs``, ``stead pending``, the Temporal UI and
the pending-approvals gauge filter on.

A starter sets them on the start request (``start_search_attributes``), where Temporal
Cloud does not bill them, instead of the run upserting them in its first workflow task
(one Action per run). They are labels for finding runs, never an authority: nothing
decides a step, an approval or a tenant's rows from them, and the run compares them
with its own request when it opens and overwrites any that differ, so a start with
forged values is listed exactly as one without them.
"""

from __future__ import annotations

from typing import Final

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from stead.contracts.run import RunRequest, RunState

SA_TENANT: Final = SearchAttributeKey.for_keyword("SteadTenant")
SA_STATUS: Final = SearchAttributeKey.for_keyword("SteadStatus")
SA_PENDING: Final = SearchAttributeKey.for_bool("SteadPendingApproval")
# What a fresh run's attributes say until it has a plan.
OPENING_STATUS: Final[RunState] = "planning"


def start_search_attributes(request: RunRequest) -> TypedSearchAttributes:
    """The attributes a fresh run of ``request`` opens with, for ``start_workflow``."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(SA_TENANT, request.tenant),
            SearchAttributePair(SA_STATUS, OPENING_STATUS),
            SearchAttributePair(SA_PENDING, False),
        ]
    )

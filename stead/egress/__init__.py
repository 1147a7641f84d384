"""Where a step sends data: normalised destinations and the allow-list grammar.

Invariant 10 ("nothing leaves without policy") needs one vocabulary for *where* a step
reaches, shared by three readers: the operation that computes its destinations from
its resolved arguments (``stead/operations/base.py``), OPA's step policy that checks them
against the tenant's ``egress`` list, and the secret store that checks them against
the destinations a secret reference declares. The grammar of a list entry lives in
``allowlist.py`` and, for OPA, in ``policies/stead/step.rego`` (same rules, tested on
both sides).
"""

from stead.egress.allowlist import EgressEntryError, allowed_by, check_entry, matches
from stead.egress.destination import (
    Destination,
    DestinationError,
    mail_destinations,
    normalise_host,
    url_destination,
)

__all__ = [
    "Destination",
    "DestinationError",
    "EgressEntryError",
    "allowed_by",
    "check_entry",
    "mail_destinations",
    "matches",
    "normalise_host",
    "url_destination",
]

"""The base of every contract: closed to unknown fields and immutable.

Closed because these models cross trust boundaries (Temporal payloads, step arguments,
policy inputs, rows read back): a field nobody declared is a mistake or an attack, never
something to carry along silently. Frozen because a contract is a value: a workflow's
carry or a decision must not change after it was hashed, logged or sent.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Closed(BaseModel):
    """A pydantic model that refuses unknown fields and cannot be mutated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

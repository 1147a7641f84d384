"""The Temporal priority every run starts with: its tenant is the fairness key.

Temporal's matching service dispatches a backlogged task queue fairly between fairness
keys (stride scheduling by weight) when ``matching.enableFairness`` is on, instead of
first in, first out. With the tenant as the key, one tenant's burst of hundreds of runs
waits behind itself, not in front of every other tenant's next step. Activities and the
workflow's own tasks inherit the priority the workflow was started with (the run
workflow sets none of its own), so one setting at the start covers every step.

Weights come from ``STEAD_FAIRNESS_WEIGHTS`` (tenant -> weight, default 1): a tenant of
weight 2 gets about twice the dispatches of a tenant of weight 1 while both are backlogged.
They are read by whoever starts the run (CLI, webhook), so every starter needs the same map.
"""

from __future__ import annotations

from collections.abc import Mapping

from temporalio.common import Priority

DEFAULT_WEIGHT = 1.0


def run_priority(tenant: str, weights: Mapping[str, float]) -> Priority:
    """The priority of a run of ``tenant``: fairness key the tenant, weight from ``weights``."""
    return Priority(fairness_key=tenant, fairness_weight=weights.get(tenant, DEFAULT_WEIGHT))

"""Planning: turn a run request into a validated :class:`~stead.contracts.run.Plan`.

Two planners share one validator: playbooks (deterministic YAML templates) and the
LLM planner. ``refs`` is pure and safe to import from workflow code; the LLM planner
lives in ``stead.planning.llm`` and is not imported here, so importing this package
never loads litellm.
"""

from stead.planning.playbooks import (
    Playbook,
    PlaybookError,
    PlaybookNotFound,
    available_playbooks,
    expand,
    load_playbook,
    parse_playbook,
)
from stead.planning.refs import RefError, find_refs, resolve_refs
from stead.planning.validate import PlanRejected, build_plan, validate_plan

__all__ = [
    "PlanRejected",
    "Playbook",
    "PlaybookError",
    "PlaybookNotFound",
    "RefError",
    "available_playbooks",
    "build_plan",
    "expand",
    "find_refs",
    "load_playbook",
    "parse_playbook",
    "resolve_refs",
    "validate_plan",
]

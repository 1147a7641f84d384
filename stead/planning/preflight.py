"""Checks a run request before a workflow is started, and finds the playbook it names.

Here, in the core, because both sides need it: the CLI and the MCP server refuse what
would only fail inside the run (``preflight``), and the planning activity loads the same
playbook the same way (``request_playbook``), so what preflight lets through is what the
worker plans.
"""

from __future__ import annotations

from stead.contracts.run import RunRequest
from stead.errors import ConfigError
from stead.operations.catalog import Catalog
from stead.planning.llm import NO_PLANNER_MODEL
from stead.planning.playbooks import Playbook, expand, load_playbook, parse_playbook
from stead.planning.validate import PlanRejected, validate_plan
from stead.settings import Settings

INLINE_ORIGIN = "--playbook-file"


def preflight(
    request: RunRequest,
    settings: Settings,
    *,
    origin: str | None = None,
    catalog: Catalog | None = None,
) -> None:
    """Catch what would only fail inside the run, before a workflow is started.

    Checks that a goal has a planner model, and that a playbook exists, parses,
    accepts the given inputs and makes a plan whose structure can run (step ids,
    dependencies, cycles, ``$ref``s, the step budget). With ``catalog`` (the one the
    caller's process loads) an operation it lacks is refused too; the full catalog
    checks (argument schemas, routing) still happen on the worker that runs the plan.
    ``origin`` names a ``--playbook-file`` in messages.
    """
    if request.goal is not None:
        if settings.planner_model is None:
            raise ConfigError(NO_PLANNER_MODEL)
        return
    try:
        steps = expand(request_playbook(request, settings, origin), request.inputs)
    except PlanRejected as exc:
        raise ConfigError(str(exc)) from None
    problems = validate_plan(steps, None, request.budget)
    if problems:
        raise ConfigError(str(PlanRejected(problems)))
    if catalog is not None:
        unknown = sorted({s.operation for s in steps if s.operation not in catalog})
        if unknown:
            raise ConfigError(
                f"operation {', '.join(unknown)} is not in the adapter catalog "
                "(built-ins and the `stead.adapters` plugins installed here; see "
                "`stead catalog list`); if a worker offers it through a plugin, install "
                "that plugin where you run `stead` too"
            )


def request_playbook(
    request: RunRequest, settings: Settings, origin: str | None = None
) -> Playbook:
    """The playbook a request runs: by name from ``playbook_dir``, or its inline source."""
    if request.playbook is not None:
        return load_playbook(request.playbook, settings.playbook_dir)
    if request.playbook_source is not None:
        return parse_playbook(request.playbook_source, origin or INLINE_ORIGIN)
    raise PlanRejected(["the request names neither a goal nor a playbook"])

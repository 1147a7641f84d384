"""The SDK's workflow sandbox, with its glue code compiled once instead of per call.

The sandbox runs every activation, and every serialization-context lookup the SDK makes
while converting a payload (several per activation: each command's and each result's
payloads), as ``exec`` of a short source string inside the sandbox's importer. ``exec``
of a string compiles it each time: ~0.1-0.2 ms per call on this machine, more than a
millisecond of worker CPU per express step (bench/README.md, issue 16). Compiling each
distinct string once and executing the code object runs exactly the same code in the
same globals, under the same importer and restrictions: the sandbox and its run-time
guard are unchanged (tests/test_worker_sandbox.py).

``_Instance`` is the SDK's private per-run sandbox; ``SandboxedWorkflowRunner`` builds it
in ``create_instance``, the one thing this runner overrides. If an SDK upgrade changes
``_Instance._run_code``, ``tests/test_worker_sandbox.py`` and every workflow test fail.
"""

from __future__ import annotations

from types import CodeType
from typing import Any

from temporalio.worker import WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance

# Source string -> code object. The SDK's strings are a handful of constants plus one
# import line per workflow class; the bound keeps a surprise from growing without end.
_COMPILED: dict[str, CodeType] = {}
_MAX_COMPILED = 256


def _compiled(source: str) -> CodeType:
    code = _COMPILED.get(source)
    if code is None:
        # The filename exec() gives a string, so tracebacks read as before.
        code = compile(source, "<string>", "exec")
        if len(_COMPILED) < _MAX_COMPILED:
            _COMPILED[source] = code
    return code


class _CompiledInstance(_Instance):
    def _run_code(self, code: str, **extra_globals: Any) -> None:
        # exec() takes the code object where the SDK passes its source.
        super()._run_code(_compiled(code), **extra_globals)  # type: ignore[arg-type]


class CompiledSandboxRunner(SandboxedWorkflowRunner):
    """``SandboxedWorkflowRunner`` whose per-run sandboxes reuse compiled glue code."""

    def create_instance(self, det: WorkflowInstanceDetails) -> _Instance:
        return _CompiledInstance(det, self.runner_class, self.restrictions)

"""The worker's workflow sandbox: the SDK's default restrictions, built cheaper on a cache miss.

Every run the worker has not cached (each new run's first workflow task, and each parked
run evicted from a full cache once its approval arrives) gets a fresh sandbox, which
re-executes every module under ``workflows/``. That re-execution is what gives the
sandbox its run-time guard: the workflow code then sees the sandbox's restricted
``time``, ``random``, ``os`` and ``open``, and a workflow reading the clock has its
task failed (tests/test_worker_sandbox.py). Passing the workflow modules through
would skip it and lose the guard, so they stay re-executed.

What a sandbox does not need to redo is finding, reading and compiling those modules:
the SDK's importer goes through the ordinary path finder for each of them, every time,
and without bytecode on disk (``PYTHONDONTWRITEBYTECODE``, a read-only checkout) it
compiled all 17 from source for every cache miss, about a third of its CPU here
(bench/sandbox_cost.py). ``WorkerSandbox`` serves ``workflows/`` modules to its own
sandboxes from code objects compiled once per process. Code objects are immutable, so
each sandbox still executes the module body afresh and gets module state of its own;
only the source-to-code step is shared. It also pins the workflow code a running
worker replays with to what it loaded first: editing a file under a running worker no
longer changes the code its next cache miss runs (temporalio/sdk-python#607).

And on every workflow task, cached or not, the worker asks the instance which
serialization context applies to each payload sequence of the activation and of the
completion (six visitor passes). The SDK's sandbox answers each question by exec-ing a
code string inside the sandbox with its importer applied, ~100 µs apiece, ~60 times in
a 63-event replay. The answer is the SDK's own bookkeeping (its pending activities by
command sequence number), not workflow code, so ``WorkerSandbox`` reads it straight from
the instance inside the sandbox; activations still run only inside it.
"""

from __future__ import annotations

import copy
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import CodeType, ModuleType

import temporalio.converter
import temporalio.workflow
from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.converter import StorageDriverStoreContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker._command_aware_visitor import CommandInfo
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

WORKFLOW_PACKAGES = ("workflows",)
"""Packages whose modules hold workflow code: re-executed in each sandbox, compiled once."""

_serving = threading.local()
_CODES: dict[str, CodeType] = {}


def _served(fullname: str) -> bool:
    packages: tuple[str, ...] = getattr(_serving, "packages", ())
    return any(fullname == p or fullname.startswith(p + ".") for p in packages)


class _CompiledOnce(importlib.machinery.SourceFileLoader):
    """A source loader whose code object is compiled (or unmarshalled) once per process."""

    def get_code(self, fullname: str) -> CodeType:
        code = _CODES.get(self.path)
        if code is None:
            found = super().get_code(fullname)
            if found is None:  # a source loader always has code; keep the type honest
                raise ImportError(f"no code for {fullname}", name=fullname)
            code = _CODES.setdefault(self.path, found)
        return code


class _WorkflowSources(importlib.abc.MetaPathFinder):
    """Finds a served module once, then hands each sandbox a copy of its spec."""

    def __init__(self) -> None:
        self.specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not _served(fullname):
            return None
        spec = self.specs.get(fullname)
        if spec is None:
            found = importlib.machinery.PathFinder.find_spec(fullname, path, target)
            loader = found.loader if found else None
            if found is None or not isinstance(loader, importlib.machinery.SourceFileLoader):
                return found
            found.loader = _CompiledOnce(loader.name, loader.path)
            spec = self.specs.setdefault(fullname, found)
        # A spec of its own per sandbox: the import machinery marks it while loading.
        fresh = copy.copy(spec)
        if spec.submodule_search_locations is not None:
            fresh.submodule_search_locations = list(spec.submodule_search_locations)
        return fresh


_FINDER = _WorkflowSources()


@contextmanager
def _compiled(packages: tuple[str, ...]) -> Iterator[None]:
    """While a sandbox is built on this thread, ``packages`` come from the finder."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    before = getattr(_serving, "packages", ())
    _serving.packages = packages
    try:
        yield
    finally:
        _serving.packages = before


class _DirectContexts(WorkflowInstance):
    """A sandboxed instance whose serialization contexts are read without entering it."""

    def __init__(self, sandboxed: WorkflowInstance, inside: WorkflowInstance) -> None:
        self.sandboxed = sandboxed
        self.inside = inside

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        return self.sandboxed.activate(act)

    def get_info(self) -> temporalio.workflow.Info:
        return self.sandboxed.get_info()

    def get_thread_id(self) -> int | None:
        return self.sandboxed.get_thread_id()

    def get_serialization_context(
        self, command_info: CommandInfo | None
    ) -> temporalio.converter.SerializationContext | None:
        return self.inside.get_serialization_context(command_info)

    def get_external_store_context(
        self, command_info: CommandInfo | None
    ) -> StorageDriverStoreContext:
        return self.inside.get_external_store_context(command_info)


def _direct(sandboxed: WorkflowInstance) -> WorkflowInstance:
    """``sandboxed``, with its contexts read directly when this SDK's sandbox allows it.

    The instance inside is reached through the sandbox's globals (SDK internals, checked by
    tests/test_worker_sandbox.py); if a later SDK moves it, the SDK's own path is kept.
    """
    globals_ = getattr(sandboxed, "globals_and_locals", None)
    in_sandbox = globals_.get("__temporal_in_sandbox") if isinstance(globals_, dict) else None
    inside = getattr(in_sandbox, "instance", None)
    if not isinstance(inside, WorkflowInstance):
        return sandboxed
    return _DirectContexts(sandboxed, inside)


@dataclass(frozen=True)
class WorkerSandbox(SandboxedWorkflowRunner):
    """The SDK's sandbox with its default restrictions; workflow modules compiled once.

    The Worker builds one sandbox per workflow type at construction (its validation),
    so the code of the workflows it registers is compiled, and pinned, when it starts.
    """

    workflow_packages: tuple[str, ...] = WORKFLOW_PACKAGES
    direct_contexts: bool = True
    """Serialization contexts read from the instance inside, not by entering the sandbox."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        with _compiled(self.workflow_packages):
            instance = super().create_instance(det)
        return _direct(instance) if self.direct_contexts else instance

"""The architecture in the folder table of DESIGN.md, guarded by reading the source.

Static checks with ``ast``, so they see imports inside functions too (a lazy
``import litellm`` counts) and need no services:

* workflow code, and every first-party module it imports however indirectly, uses no
  I/O library and no environment variables: replay must not depend on the machine;
* every activity has an explicit dotted name, because the SDK's default (the bare
  function name) changes on a rename and strands parked runs;
* only ``stead/settings.py`` reads the environment (STYLE.md: settings in one place);
* imports point one way (docs/architecture.md, "Layers"): core ``stead`` ← ``adapters``
  ← ``activities`` ← ``workers`` ← ``stead.cli``, with ``workflows`` on pure ``stead``
  modules only; plugins of this repository (``examples/stead-cases``) on top, imported by
  nothing; and no import cycles between first-party modules.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from stead.contracts import activity_names

REPO = Path(__file__).resolve().parents[1]
RUNTIME_PACKAGES = ("stead", "workflows", "activities", "adapters", "workers")
# Plugin packages kept in this repository but installed on their own: top-level package ->
# the folder that holds it. The core installs and runs without them.
PLUGIN_ROOTS = {"stead_cases": REPO / "examples" / "stead-cases"}
FIRST_PARTY = (*RUNTIME_PACKAGES, *PLUGIN_ROOTS)

# Modules that reach the network, a database, another process or the model providers.
IO_MODULES = frozenset(
    {
        "aiohttp",
        "asyncpg",
        "http.client",
        "httpx",
        "litellm",
        "psycopg",
        "psycopg2",
        "qdrant_client",
        "qdrant_edge",
        "requests",
        "socket",
        "subprocess",
        "urllib.request",
        "urllib3",
    }
)
ENV_NAMES = frozenset({"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"})
ACTIVITY_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")

# Environment access outside stead/settings.py, each with the reason it is not a setting.
# Keyed by file and the exact source line, so a new access in the same file still fails.
ENV_ALLOWED: dict[tuple[str, str], str] = {
    (
        "stead/litellm_offline.py",
        'os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")',
    ): "a write, not a read: litellm takes its offline switches only from the environment, "
    "at import time; setdefault keeps an operator's own choice",
    (
        "stead/litellm_offline.py",
        'os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")',
    ): "same as above",
    (
        "stead/cli/demo.py",
        'env = {**os.environ, "STEAD_HOME": str(settings.home), "STEAD_TASK_QUEUE": task_queue}',
    ): "copied whole for the `stead worker` child, which reads its settings through Settings",
    (
        "stead/devstack/opa.py",
        'env={**os.environ, "GOBIN": str(target.resolve())},',
    ): "copied whole for the `go install` child, which needs PATH, HOME and Go's own variables",
    (
        "stead/devstack/opa.py",
        "env = {**SERVER_ENV, **os.environ}",
    ): "copied whole for the OPA child: its runtime tuning (GOGC=400) is a default under the "
    "environment, so an operator's own GOGC or GOMAXPROCS wins; not a Stead setting",
    (
        "stead/machine_cache.py",
        'base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")',
    ): "the XDG base-directory convention for the per-machine cache (the OPA binary, the "
    "built embedding model), a platform location like $HOME (which Path.home() reads), "
    "not a Stead setting",
    (
        "stead/devstack/cluster.py",
        '"PATH": os.environ.get("PATH", ""),',
    ): "only PATH is passed to temporal-sql-tool, whose SQL_* settings (password included) "
    "are set in its environment rather than argv; not a Stead setting",
    (
        "stead/devstack/cluster.py",
        'env = {k: v for k, v in os.environ.items() if not k.startswith(("STEAD_", "TEMPORAL_"))}',
    ): "copied for the `stead temporal setup` child without STEAD_/TEMPORAL_ variables, so "
    "the developer's own settings cannot point it at another cluster",
}


# Which layers each layer may import (docs/architecture.md, "Layers: what may import what").
LAYERS_ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "adapters": frozenset({"core", "adapters"}),
    "activities": frozenset({"core", "adapters", "activities"}),
    "workflows": frozenset({"core", "workflows"}),
    "workers": frozenset({"core", "adapters", "activities", "workflows", "workers"}),
    "cli": frozenset({"core", "adapters", "activities", "workflows", "workers", "cli"}),
    # A plugin builds on the SDK, the generic adapters and the CLI's helpers; no layer
    # imports a plugin: the core reaches it only through its entry points.
    "plugins": frozenset({"core", "adapters", "cli", "plugins"}),
}

# Imports that still point the wrong way, keyed by (importing module, imported module),
# each with why it is there and how it goes away. The test fails on a new one and on a
# listed one that no longer occurs, so the list stays true. None today: keep it that way.
LAYER_EXCEPTIONS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Use:
    """One import or environment access found in a module."""

    path: Path
    line: int
    what: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"

    @property
    def source_line(self) -> str:
        return self.path.read_text().splitlines()[self.line - 1].strip()


def module_path(name: str) -> Path | None:
    """The file that executes on ``import name``, for first-party modules."""
    top = name.split(".")[0]
    if top not in FIRST_PARTY:
        return None
    base = PLUGIN_ROOTS.get(top, REPO).joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    root = next((r for r in PLUGIN_ROOTS.values() if path.is_relative_to(r)), REPO)
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, except the bodies of ``if TYPE_CHECKING:`` (never executed)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for stmt in node.orelse for n in [stmt, *runtime_nodes(stmt)])
            continue
        yield node
        yield from runtime_nodes(node)


def imported_modules(path: Path) -> list[Use]:
    """Modules an import of ``path`` loads: parents included, since their __init__ runs."""
    found: list[Use] = []
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in runtime_nodes(parse(path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            # `from pkg import name` loads pkg.name too when that is a module.
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            for depth in range(1, len(parts) + 1):
                found.append(Use(path, node.lineno, ".".join(parts[:depth])))
    return found


def env_accesses(path: Path) -> list[Use]:
    """``os.environ``, ``os.getenv`` and friends, however ``os`` or the name was imported."""
    tree = parse(path)
    os_aliases = {"os"}
    direct: set[str] = set()
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import):
            os_aliases |= {a.asname or a.name for a in node.names if a.name == "os"}
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            direct |= {a.asname or a.name for a in node.names if a.name in ENV_NAMES}
    found = []
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Attribute):
            hit = node.attr in ENV_NAMES and ast.unparse(node.value) in os_aliases
        else:
            hit = isinstance(node, ast.Name) and node.id in direct
        if hit:
            found.append(Use(path, getattr(node, "lineno", 0), ast.unparse(node)))
    return found


def workflow_closure() -> dict[str, list[str]]:
    """First-party modules loaded by importing workflows/, each with the chain that loads it."""
    roots = sorted((REPO / "workflows").rglob("*.py"))
    chains: dict[str, list[str]] = {module_name(p): [module_name(p)] for p in roots}
    queue = list(chains)
    while queue:
        current = queue.pop()
        path = module_path(current)
        assert path is not None, current
        for use in imported_modules(path):
            if use.what not in chains and module_path(use.what) is not None:
                chains[use.what] = [*chains[current], use.what]
                queue.append(use.what)
    return chains


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def plugin_folders() -> list[str]:
    return [(root / top).relative_to(REPO).as_posix() for top, root in PLUGIN_ROOTS.items()]


# ------------------------------------------------------------------ workflows


def test_the_import_closure_of_workflows_follows_first_party_modules() -> None:
    closure = workflow_closure()
    # The walk must reach the contracts the workflows really use, or it checks nothing.
    assert {"workflows.run", "stead.contracts.run", "stead.planning.refs"} <= set(closure)


def test_workflow_code_and_everything_it_imports_does_no_io() -> None:
    problems = []
    for name, chain in sorted(workflow_closure().items()):
        path = module_path(name)
        assert path is not None
        for use in imported_modules(path):
            if use.what in IO_MODULES:
                problems.append(f"{use.where} imports {use.what} (via {' → '.join(chain)})")
        for use in env_accesses(path):
            problems.append(f"{use.where} uses {use.what} (via {' → '.join(chain)})")
    assert not problems, "workflow code must stay deterministic:\n" + "\n".join(problems)


# ----------------------------------------------------------------- activities


Definition = tuple[Path, ast.AsyncFunctionDef | ast.FunctionDef, ast.expr]


def activity_definitions() -> Iterator[Definition]:
    for path in python_files("activities"):
        for node in ast.walk(parse(path)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if ast.unparse(target) in {"activity.defn", "temporalio.activity.defn", "defn"}:
                    yield path, node, decorator


def activity_name(value: ast.expr) -> object:
    """A literal name, or ``names.X`` from ``stead.contracts.activity_names``, which the
    workflow's stubs call by the same constant."""
    if isinstance(value, ast.Constant):
        return value.value
    if isinstance(value, ast.Attribute) and ast.unparse(value.value) == "names":
        return getattr(activity_names, value.attr, None)
    return None


def test_every_activity_has_an_explicit_dotted_name() -> None:
    found, problems = [], []
    for path, func, decorator in activity_definitions():
        where = f"{path.relative_to(REPO)}:{func.lineno} {func.name}"
        names = [
            activity_name(kw.value)
            for kw in (decorator.keywords if isinstance(decorator, ast.Call) else [])
            if kw.arg == "name"
        ]
        if not names or not isinstance(names[0], str) or not ACTIVITY_NAME.match(names[0]):
            problems.append(f'{where}: use @activity.defn(name="<area>.<action>")')
        else:
            found.append(names[0])
    assert not problems, "\n".join(problems)
    assert found, "no activities found under activities/"
    assert len(found) == len(set(found)), f"an activity name is used twice: {sorted(found)}"


def test_every_activity_a_workflow_calls_is_defined() -> None:
    defined = set()
    for _, _, decorator in activity_definitions():
        if isinstance(decorator, ast.Call):
            defined |= {
                kw.value.value
                for kw in decorator.keywords
                if kw.arg == "name" and isinstance(kw.value, ast.Constant)
            }
    called = {}
    for path in python_files("workflows"):
        for node in ast.walk(parse(path)):
            # execute_activity, start_local_activity, and the workflows' typed wrappers.
            if (
                isinstance(node, ast.Call)
                and ast.unparse(node.func).endswith("activity")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                called[node.args[0].value] = f"{path.relative_to(REPO)}:{node.lineno}"
    assert called, "found no activity calls in workflows/"
    missing = {name: where for name, where in called.items() if name not in defined}
    assert not missing, f"workflows call activities nobody defines: {missing}"


# --------------------------------------------------------------------- settings


def test_only_settings_reads_the_environment() -> None:
    seen: set[tuple[str, str]] = set()
    problems = []
    for path in python_files(*RUNTIME_PACKAGES):
        relative = path.relative_to(REPO).as_posix()
        if relative == "stead/settings.py":
            continue
        for use in env_accesses(path):
            key = (relative, use.source_line)
            if key in ENV_ALLOWED:
                seen.add(key)
            else:
                problems.append(f"{use.where}: {use.source_line}")
    assert not problems, "read settings through stead.settings.Settings, not os.environ:\n" + (
        "\n".join(problems)
    )
    stale = sorted(set(ENV_ALLOWED) - seen)
    assert not stale, f"allow-list entries that no longer match any code; remove them: {stale}"


# ----------------------------------------------------------------------- layers


def layer(module: str) -> str:
    """The layer a first-party module belongs to: ``stead.cli`` is the entry point, the rest
    of ``stead`` is the core, a plugin package is a plugin, and every other top-level
    package is its own layer."""
    if module == "stead.cli" or module.startswith("stead.cli."):
        return "cli"
    top = module.split(".")[0]
    if top in PLUGIN_ROOTS:
        return "plugins"
    return "core" if top == "stead" else top


def import_edges() -> dict[tuple[str, str], str]:
    """(importer, imported) for every first-party import, with one place it happens.

    A package an importer lives in is left out: Python has it loaded (or loading) before
    the importer runs, so it is no dependency of the importer's own."""
    edges: dict[tuple[str, str], str] = {}
    for path in python_files(*RUNTIME_PACKAGES, *plugin_folders()):
        importer = module_name(path)
        for use in imported_modules(path):
            target = use.what
            if target == importer or importer.startswith(f"{target}."):
                continue
            if module_path(target) is not None:
                edges.setdefault((importer, target), use.where)
    return edges


def test_imports_point_one_way_between_layers() -> None:
    wrong = {
        (importer, target): where
        for (importer, target), where in import_edges().items()
        if layer(target) not in LAYERS_ALLOWED[layer(importer)]
    }
    # `import adapters.registry` loads the package `adapters` too: name only the module.
    deepest = {
        edge: where
        for edge, where in wrong.items()
        if not any(o[0] == edge[0] and o[1].startswith(f"{edge[1]}.") for o in wrong)
    }
    problems = [
        f"{where}: {importer} ({layer(importer)}) imports {target}"
        for (importer, target), where in sorted(deepest.items())
        if (importer, target) not in LAYER_EXCEPTIONS
    ]
    assert not problems, (
        "an import points the wrong way (docs/architecture.md, Layers); move the code "
        "down a layer instead:\n" + "\n".join(problems)
    )
    stale = sorted(set(LAYER_EXCEPTIONS) - set(deepest))
    assert not stale, f"listed layer exceptions that no longer occur; remove them: {stale}"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_strongly_connected_finds_a_cycle_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert strongly_connected(graph) == [["a", "b", "c"]]


def test_first_party_modules_import_no_cycles() -> None:
    edges = import_edges()
    graph: dict[str, set[str]] = {}
    for importer, target in edges:
        graph.setdefault(importer, set()).add(target)
    cycles = strongly_connected(graph)
    described = []
    for component in cycles:
        inside = [
            f"  {edges[e]}: {e[0]} → {e[1]}" for e in sorted(edges) if set(e) <= set(component)
        ]
        described.append(" ↔ ".join(component) + "\n" + "\n".join(inside))
    assert not cycles, "first-party import cycles (move what both sides share down):\n" + (
        "\n".join(described)
    )


# ---------------------------------------------------------------------- plugins


def test_the_core_never_imports_the_field_cases_plugin() -> None:
    """The core installs and runs without ``examples/stead-cases``: no runtime module, not
    even lazily inside a function, imports it; entry points are the only way in."""
    found = [
        f"{use.where}: imports {use.what}"
        for path in python_files(*RUNTIME_PACKAGES)
        for use in imported_modules(path)
        if use.what.split(".")[0] in PLUGIN_ROOTS or use.what.split(".")[0] == "examples"
    ]
    assert not found, "reach a plugin through its entry points instead:\n" + "\n".join(found)


def test_the_plugin_edges_are_seen() -> None:
    """The layer test reads the plugin too, or it would check nothing there."""
    edges = import_edges()
    assert ("stead_cases.content", "stead_cases.llm") in edges
    assert any(layer(a) == "plugins" and layer(b) == "cli" for a, b in edges)

"""References from one step's arguments to an earlier step's output.

A reference is a JSON object whose only key is ``"$ref"``, whose value reads
``steps.<step id>.output[.<key or list index>...]``. Plans carry references
unresolved so the plan hash is known before anything runs; the workflow resolves
them just before a step executes. Everything here is pure (no I/O, no clocks), so
deterministic workflow code may import it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any, TypeGuard

from pydantic import JsonValue

REF_KEY = "$ref"
_REF = re.compile(r"^steps\.([A-Za-z0-9][A-Za-z0-9_-]{0,63})\.output((?:\.[^.]+)*)$")


class RefError(ValueError):
    """A reference is malformed or points at nothing; ``ref`` is the offending string."""

    def __init__(self, ref: str, problem: str) -> None:
        self.ref = ref
        self.problem = problem
        super().__init__(f"reference {ref!r}: {problem}")


def is_ref(value: object) -> TypeGuard[dict[str, Any]]:
    """True for ``{"$ref": ...}`` and nothing else: an object with more keys is plain data."""
    return isinstance(value, dict) and len(value) == 1 and REF_KEY in value


def parse_ref(ref: object) -> tuple[str, tuple[str, ...]]:
    """Split ``steps.<id>.output.a.0.b`` into ``("<id>", ("a", "0", "b"))``."""
    if not isinstance(ref, str):
        raise RefError(str(ref), 'the value of "$ref" must be a string like "steps.<id>.output"')
    match = _REF.match(ref)
    if match is None:
        raise RefError(ref, 'expected "steps.<step id>.output" followed by optional ".<key>" parts')
    step_id, path = match.groups()
    return step_id, tuple(path.split(".")[1:]) if path else ()


def find_refs(args: Mapping[str, Any]) -> set[str]:
    """Step ids referenced anywhere in ``args``; raises :class:`RefError` on a malformed ref."""
    found: set[str] = set()
    _walk(args, found)
    return found


def contains_ref(value: object) -> bool:
    """True when a reference occurs anywhere inside ``value``."""
    if is_ref(value):
        return True
    if isinstance(value, dict):
        return any(contains_ref(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(contains_ref(v) for v in value)
    return False


def ref_locations(value: object, here: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Paths (keys and list indices) at which references sit inside ``value``."""
    if is_ref(value):
        return [here]
    if isinstance(value, dict):
        return [loc for k, v in value.items() for loc in ref_locations(v, (*here, k))]
    if isinstance(value, list | tuple):
        return [loc for i, v in enumerate(value) for loc in ref_locations(v, (*here, i))]
    return []


def resolve_refs(args: Mapping[str, Any], outputs: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
    """A copy of ``args`` with every reference replaced by the value it points at.

    Values are deep-copied so a later step mutating its arguments cannot change the
    recorded output of an earlier one.
    """
    return {key: _resolve(value, outputs) for key, value in args.items()}


def lookup(ref: str, outputs: Mapping[str, JsonValue]) -> JsonValue:
    """The value ``ref`` points at; :class:`RefError` says which part of the path is missing."""
    step_id, path = parse_ref(ref)
    if step_id not in outputs:
        raise RefError(ref, f"step {step_id!r} has no output (it has not run, or it failed)")
    current: JsonValue = outputs[step_id]
    walked = f"steps.{step_id}.output"
    for part in path:
        if isinstance(current, dict):
            if part not in current:
                keys = ", ".join(sorted(current)) or "none"
                raise RefError(ref, f"{walked} has no key {part!r} (keys: {keys})")
            current = current[part]
        elif isinstance(current, list):
            if not part.isdigit():
                raise RefError(ref, f"{walked} is a list; {part!r} is not an index")
            index = int(part)
            if index >= len(current):
                raise RefError(ref, f"{walked} has {len(current)} items; no index {index}")
            current = current[index]
        else:
            raise RefError(ref, f"{walked} is {type(current).__name__}, not an object or list")
        walked = f"{walked}.{part}"
    return copy.deepcopy(current)


def _walk(value: object, found: set[str]) -> None:
    if is_ref(value):
        found.add(parse_ref(value[REF_KEY])[0])
    elif isinstance(value, dict):
        for item in value.values():
            _walk(item, found)
    elif isinstance(value, list | tuple):
        for item in value:
            _walk(item, found)


def _resolve(value: Any, outputs: Mapping[str, JsonValue]) -> JsonValue:
    if is_ref(value):
        return lookup(value[REF_KEY], outputs)
    if isinstance(value, dict):
        return {key: _resolve(item, outputs) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_resolve(item, outputs) for item in value]
    result: JsonValue = value
    return result

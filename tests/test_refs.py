"""References between steps: found anywhere in nested args, resolved by path, loud when missing."""

from __future__ import annotations

import copy

import pytest
from pydantic import JsonValue

from stead.planning.refs import RefError, find_refs, resolve_refs

OUTPUTS: dict[str, JsonValue] = {
    "put": {"key": "k1", "version": 3},
    "search": {"items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 0}], "total": 2},
    "count": 7,
}


def ref(path: str) -> dict[str, JsonValue]:
    return {"$ref": path}


def test_find_refs_walks_nested_objects_and_lists() -> None:
    args: dict[str, JsonValue] = {
        "key": ref("steps.put.output.key"),
        "lines": [{"sku": ref("steps.search.output.items.0.sku")}, "plain"],
        "deep": {"a": {"b": [ref("steps.count.output")]}},
    }
    assert find_refs(args) == {"put", "search", "count"}


def test_find_refs_ignores_objects_with_more_keys_than_ref() -> None:
    args: dict[str, JsonValue] = {"schema": {"$ref": "#/definitions/x", "type": "object"}}
    assert find_refs(args) == set()


def test_find_refs_rejects_a_malformed_ref() -> None:
    with pytest.raises(RefError, match=r"steps\.<step id>\.output"):
        find_refs({"key": ref("put.output.key")})
    with pytest.raises(RefError, match="must be a string"):
        find_refs({"key": {"$ref": 3}})


def test_resolve_replaces_refs_with_values_and_keeps_the_rest() -> None:
    args: dict[str, JsonValue] = {
        "key": ref("steps.put.output.key"),
        "sku": ref("steps.search.output.items.1.sku"),
        "all": ref("steps.search.output.items"),
        "n": ref("steps.count.output"),
        "note": "unchanged",
        "nested": [{"v": ref("steps.put.output.version")}],
    }
    assert resolve_refs(args, OUTPUTS) == {
        "key": "k1",
        "sku": "B-2",
        "all": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 0}],
        "n": 7,
        "note": "unchanged",
        "nested": [{"v": 3}],
    }


def test_resolved_values_are_copies_of_the_outputs() -> None:
    resolved = resolve_refs({"all": ref("steps.search.output.items")}, OUTPUTS)
    items = resolved["all"]
    assert isinstance(items, list)
    before = copy.deepcopy(OUTPUTS)
    items.clear()
    assert before == OUTPUTS


def test_resolve_leaves_args_without_refs_equal_and_untouched() -> None:
    args: dict[str, JsonValue] = {"a": [1, {"b": None}], "$ref-like": {"$ref": "x", "y": 1}}
    assert resolve_refs(args, {}) == args


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("steps.missing.output", "step 'missing' has no output"),
        ("steps.put.output.nope", "steps.put.output has no key 'nope' (keys: key, version)"),
        ("steps.search.output.items.5.sku", "steps.search.output.items has 2 items; no index 5"),
        ("steps.search.output.items.first", "is a list; 'first' is not an index"),
        ("steps.count.output.x", "steps.count.output is int, not an object or list"),
    ],
)
def test_a_missing_path_raises_an_error_naming_the_ref(path: str, problem: str) -> None:
    with pytest.raises(RefError) as caught:
        resolve_refs({"arg": ref(path)}, OUTPUTS)
    assert caught.value.ref == path
    assert path in str(caught.value)
    assert problem in str(caught.value)

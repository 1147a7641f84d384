"""Playbooks: deterministic plan templates for known intents, written in YAML.

A playbook declares typed inputs and a list of steps whose arguments may use
``${inputs.<name>}``. Expansion is pure and deterministic, so the same playbook
with the same inputs always yields the same plan hash. See ``playbooks/README.md``
for the format.

A step may carry ``on_reject``: the steps that redo the work a reviewer turned
down. When the step is rejected and the run replans, :func:`expand_replan` adds
them under new ids (``<id>_<attempt>``) with ``${failure.comment}`` filled in, and
points the steps still to run at the redone ones. The same playbook, inputs,
failure and completed steps always give the same plan.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from stead.contracts.activities import PlanFailure
from stead.contracts.base import Closed
from stead.contracts.run import Step, StepId
from stead.planning.playbook_dirs import search_path
from stead.planning.refs import REF_KEY, is_ref
from stead.planning.validate import PlanRejected

NAME = re.compile(r"^[A-Za-z0-9_-]+$")
SUFFIX = ".yaml"
_PLACEHOLDER = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_INPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_INPUT = re.compile(rf"^inputs\.({_INPUT_NAME.pattern})$")
_FAILURE = re.compile(r"^failure\.([a-z_]+)$")
FAILURE_FIELDS = ("step", "operation", "state", "reason", "approver", "comment", "attempt")
_REDONE = re.compile(r"^(.+)_(\d+)$")

_INVALID = "invalid playbook"
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

InputType = Literal["string", "integer", "number", "boolean", "object", "array"]


class PlaybookError(PlanRejected):
    """A playbook cannot be loaded or expanded; ``reasons`` names each problem."""


class PlaybookNotFound(PlaybookError):
    """No playbook file by that name; the message lists the ones that exist."""


class PlaybookInput(Closed):
    type: InputType = "string"
    required: bool = False
    default: JsonValue = None
    description: str = ""

    @model_validator(mode="after")
    def _required_has_no_default(self) -> PlaybookInput:
        if self.required and "default" in self.model_fields_set:
            raise ValueError("a required input cannot have a default")
        if self.default is not None:
            _, problem = _coerce(self.default, self.type)
            if problem:
                raise ValueError(f"the default {problem}")
        return self

    @property
    def has_default(self) -> bool:
        return "default" in self.model_fields_set


class RedoStep(Step):
    """A step of an ``on_reject`` block; ``replaces`` names the playbook step it redoes,
    so the steps still to run use its output instead."""

    replaces: StepId | None = None


class PlaybookStep(Step):
    on_reject: tuple[RedoStep, ...] = Field(
        default=(),
        max_length=20,
        description="Steps added (ids suffixed _<attempt>) when this step is rejected and "
        "the run replans; needs on_failure: replan.",
    )


@dataclass(frozen=True)
class Failure:
    """What ``${failure.<field>}`` fills in: the rejected step and the reviewer's word."""

    step: str
    operation: str = ""
    state: str = "rejected"
    reason: str = ""
    approver: str = ""
    comment: str = ""

    def values(self, attempt: int) -> dict[str, JsonValue]:
        return {
            "step": self.step,
            "operation": self.operation,
            "state": self.state,
            "reason": self.reason,
            "approver": self.approver,
            "comment": self.comment,
            "attempt": attempt,
        }


class Playbook(Closed):
    """A parsed playbook; ``steps`` are templates until :func:`expand` fills them in."""

    name: str = Field(pattern=NAME.pattern, max_length=100)
    description: str = ""
    inputs: dict[str, PlaybookInput] = {}
    steps: tuple[PlaybookStep, ...]

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, inputs: dict[str, PlaybookInput]) -> dict[str, PlaybookInput]:
        bad = [name for name in inputs if not _INPUT_NAME.fullmatch(name)]
        if bad:
            raise ValueError(
                f"input names must be letters, digits, '_' or '-', starting with a letter or"
                f" '_': {', '.join(bad)}"
            )
        return inputs

    @field_validator("steps")
    @classmethod
    def _has_steps(cls, steps: tuple[Step, ...]) -> tuple[Step, ...]:
        # A validator rather than min_length, which would also fire when a step is invalid.
        if not steps:
            raise ValueError("a playbook needs at least one step")
        return steps

    @model_validator(mode="after")
    def _redo_blocks(self) -> Playbook:
        main = {s.id for s in self.steps}
        problems: list[str] = []
        seen: set[str] = set()
        for step in self.steps:
            if step.on_reject and step.on_failure != "replan":
                problems.append(f"step {step.id!r} has on_reject, which needs on_failure: replan")
            for redo in step.on_reject:
                where = f"step {step.id!r} on_reject {redo.id!r}"
                if redo.id in main or redo.id in seen:
                    problems.append(f"{where}: the id is already used; give each its own")
                if _REDONE.match(redo.id):
                    problems.append(f"{where}: ids ending in _<number> are for the redone steps")
                if redo.replaces is not None and redo.replaces not in main:
                    problems.append(f"{where}: replaces {redo.replaces!r}, not a playbook step")
                seen.add(redo.id)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def available_playbooks(playbook_dir: Path, *, plugins: bool = True) -> list[str]:
    """Names of the playbooks in ``playbook_dir`` and, unless ``plugins`` is False, in
    the folders installed plugins add (``stead.playbooks``), sorted."""
    names: set[str] = set()
    for folder in search_path(playbook_dir, plugins=plugins):
        if folder.is_dir():
            names.update(p.stem for p in folder.glob(f"*{SUFFIX}") if NAME.match(p.stem))
    return sorted(names)


def playbook_path(name: str, playbook_dir: Path, *, plugins: bool = True) -> Path:
    """The file a playbook name maps to; raises :class:`PlaybookNotFound` if absent.

    ``playbook_dir`` is searched first, then the installed plugins' folders. The name is
    checked against a strict pattern first, so it can never walk out of a folder
    (``../secrets`` is not a playbook name).
    """
    if not NAME.match(name):
        raise PlaybookNotFound(
            [f"{name!r} is not a playbook name (letters, digits, '_' and '-' only)"],
            summary="unknown playbook",
        )
    for folder in search_path(playbook_dir, plugins=plugins):
        path = folder / f"{name}{SUFFIX}"
        if path.is_file():
            return path
    known = available_playbooks(playbook_dir, plugins=plugins)
    listing = ", ".join(known) if known else "none"
    where = f"{playbook_dir} or an installed plugin" if plugins else str(playbook_dir)
    raise PlaybookNotFound(
        [f"no playbook {name!r} in {where} (available: {listing})"],
        summary="unknown playbook",
    )


def load_playbook(name: str, playbook_dir: Path, *, plugins: bool = True) -> Playbook:
    """Read and parse ``<name>.yaml`` from ``playbook_dir`` or a plugin's folder; its
    ``name`` must match the file."""
    path = playbook_path(name, playbook_dir, plugins=plugins)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlaybookError([f"{path}: cannot be read ({exc.strerror})"]) from None
    playbook = parse_playbook(source, str(path))
    if playbook.name != name:
        raise PlaybookError([f"{path}: declares name {playbook.name!r}; rename it to {name!r}"])
    return playbook


@functools.lru_cache(maxsize=64)
def parse_playbook(source: str, origin: str) -> Playbook:
    """Parse playbook YAML; ``origin`` (a path or ``--playbook-file``) prefixes each error.

    Every playbook run parses its playbook in ``plan.create_decided``; the same text always gives
    the same (frozen) playbook, so recent ones are kept, and libyaml's C loader is used
    when PyYAML was built with it (~10x faster than the pure-Python one).
    """
    try:
        data = yaml.load(source, Loader=_YAML_LOADER)  # a safe loader (no arbitrary objects)
    except yaml.YAMLError as exc:
        raise PlaybookError(
            [f"{origin}: invalid YAML: {_yaml_problem(exc)}"], summary=_INVALID
        ) from None
    if not isinstance(data, dict):
        problem = f"{origin}: expected a mapping with name, inputs and steps"
        raise PlaybookError([problem], summary=_INVALID)
    try:
        return Playbook.model_validate(data)
    except ValidationError as exc:
        raise PlaybookError(
            [f"{origin}: {_where(err['loc'], data)}: {err['msg']}" for err in exc.errors()],
            summary=_INVALID,
        ) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message names the parsed text ``"<unicode string>"``: say line and column
    (1-based, as editors count) and the problem instead; the caller names the file."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return str(exc)
    mark = exc.problem_mark
    parts = [f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem or 'syntax error'}"]
    if exc.context:
        context = exc.context_mark
        where = f" (line {context.line + 1})" if context is not None else ""
        parts.append(f"{exc.context}{where}")
    return "; ".join(parts)


def expand(playbook: Playbook, inputs: Mapping[str, JsonValue]) -> list[Step]:
    """The playbook's steps with every ``${inputs.x}`` filled in.

    A placeholder that is the whole string takes the input's JSON value (so an
    integer stays an integer); inside a longer string it is interpolated as text.
    Undeclared inputs, missing required ones and values of the wrong type are all
    reported together.
    """
    steps, _ = _expand_all(playbook, inputs, Failure(step=""), attempt=2)
    return steps


def expand_replan(
    playbook: Playbook,
    inputs: Mapping[str, JsonValue],
    *,
    attempt: int,
    failure: Failure | None,
    completed: Collection[str],
) -> list[Step]:
    """The steps of plan ``attempt`` (2+) after ``failure``, given the steps that succeeded.

    Without an ``on_reject`` block for a rejected step this is the playbook's steps that
    have not completed. With one, its steps are added as ``<id>_<attempt>``, and every
    step still to run depends on and refers to the newest version of each replaced step
    (a redo from this round, else one completed in an earlier round). Inside the block,
    a reference to another block step means its new version, and a reference to a
    playbook step means its newest completed version: what the reviewer saw.
    """
    main, blocks = _expand_all(playbook, inputs, failure or Failure(step=""), attempt=attempt)
    origin = _origin(playbook, failure.step) if failure is not None else None
    block = (
        blocks.get(origin or "", []) if failure is not None and failure.state == "rejected" else []
    )
    redo_of = {r.id: r.replaces for s in playbook.steps for r in s.on_reject if r.replaces}
    newest: dict[str, tuple[int, str]] = {}
    for sid in completed:
        match = _REDONE.match(sid)
        if match and redo_of.get(match.group(1)):
            target, n = str(redo_of[match.group(1)]), int(match.group(2))
            if n > newest.get(target, (0, ""))[0]:
                newest[target] = (n, sid)
    before = {target: sid for target, (_, sid) in newest.items()}
    ids = {redo.id: f"{redo.id}_{attempt}" for redo, _ in block}
    after = {**before, **{str(r.replaces): ids[r.id] for r, _ in block if r.replaces}}
    steps = [_renamed(step, {**before, **ids}, new_id=ids[redo.id]) for redo, step in block]
    steps += [
        _renamed(step, after) for step in main if step.id not in completed and step.id not in after
    ]
    return [s for s in steps if s.id not in completed]


def failure_of(detail: PlanFailure | None) -> Failure | None:
    """The :class:`Failure` a replan's ``PlanFailure`` describes."""
    if detail is None:
        return None
    return Failure(
        step=detail.step_id,
        operation=detail.operation,
        state=detail.state,
        reason=detail.reason,
        approver=detail.approver or "",
        comment=detail.comment,
    )


def _expand_all(
    playbook: Playbook, inputs: Mapping[str, JsonValue], failure: Failure, *, attempt: int
) -> tuple[list[Step], dict[str, list[tuple[RedoStep, Step]]]]:
    """Every step filled in: the playbook's, and each on_reject block's with ``failure``.

    Blocks are expanded on every plan, the first included, so a bad placeholder in
    one fails the run at its start rather than after a reviewer's rejection.
    """
    values, reasons = _bind_inputs(playbook, inputs)
    fill = _Fill(values=values, declared=playbook.inputs.keys(), reasons=reasons)
    steps: list[Step] = []
    blocks: dict[str, list[tuple[RedoStep, Step]]] = {}
    for step in playbook.steps:
        fill.where, fill.failure = f"step {step.id!r}", None
        steps.append(_filled(step, fill, exclude={"on_reject"}))
        fill.failure = failure.values(attempt)
        for redo in step.on_reject:
            fill.where = f"step {step.id!r} on_reject {redo.id!r}"
            blocks.setdefault(step.id, []).append((redo, _filled(redo, fill, {"replaces"})))
    if reasons:
        raise PlaybookError(reasons, summary=f"playbook {playbook.name!r} cannot be expanded")
    return steps, blocks


def _filled(step: Step, fill: _Fill, exclude: set[str]) -> Step:
    data = step.model_dump(exclude=exclude)
    data["args"] = fill.walk(step.args)
    rationale = fill.text(step.rationale)
    data["rationale"] = rationale if isinstance(rationale, str) else json.dumps(rationale)
    return Step.model_validate(data)


def _origin(playbook: Playbook, failed: str) -> str | None:
    """The playbook step whose on_reject applies: the failed step, or the one it redoes."""
    if any(s.id == failed for s in playbook.steps):
        return failed
    match = _REDONE.match(failed)
    if match is None:
        return None
    for step in playbook.steps:
        for redo in step.on_reject:
            if redo.id == match.group(1):
                return redo.replaces
    return None


def _renamed(step: Step, names: Mapping[str, str], *, new_id: str | None = None) -> Step:
    """``step`` with its id, dependencies and ``$ref``s pointed through ``names``."""
    return step.model_copy(
        update={
            "id": new_id or step.id,
            "depends_on": tuple(dict.fromkeys(names.get(d, d) for d in step.depends_on)),
            "args": _rename_refs(step.args, names),
        }
    )


def _rename_refs(value: Any, names: Mapping[str, str]) -> Any:
    if is_ref(value):
        ref = value[REF_KEY]
        if isinstance(ref, str) and ref.startswith("steps."):
            sid, dot, rest = ref[len("steps.") :].partition(".")
            if sid in names:
                return {REF_KEY: f"steps.{names[sid]}{dot}{rest}"}
        return value
    if isinstance(value, dict):
        return {k: _rename_refs(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename_refs(v, names) for v in value]
    return value


def _bind_inputs(
    playbook: Playbook, given: Mapping[str, JsonValue]
) -> tuple[dict[str, JsonValue], list[str]]:
    reasons = [
        f"input {name!r} is not declared by playbook {playbook.name!r}"
        f" (declared: {', '.join(sorted(playbook.inputs)) or 'none'})"
        for name in sorted(set(given) - set(playbook.inputs))
    ]
    values: dict[str, JsonValue] = {}
    for name, spec in playbook.inputs.items():
        if name in given:
            value, problem = _coerce(given[name], spec.type)
            if problem:
                reasons.append(f"input {name!r} {problem}")
            else:
                values[name] = value
        elif spec.has_default:
            # Checked at parse time; coerced here so a default of "5" is 5 like a given "5".
            values[name] = (
                spec.default if spec.default is None else _coerce(spec.default, spec.type)[0]
            )
        elif spec.required:
            reasons.append(f"input {name!r} is required")
    return values, reasons


def _coerce(value: JsonValue, kind: InputType) -> tuple[JsonValue, str | None]:
    """Check ``value`` against the declared type.

    Strings are accepted for integer, number and boolean inputs when they spell one,
    because command lines (``--input count=3``) carry only text.
    """
    if isinstance(value, str) and kind in ("integer", "number", "boolean"):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value
        value = parsed
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
    }[kind]
    if not ok:
        article = "an" if kind[0] in "aeiou" else "a"
        return None, f"must be {article} {kind}, got {json.dumps(value)}"
    return value, None


@dataclass
class _Fill:
    """What substitution needs to know, and where it collects problems."""

    values: Mapping[str, JsonValue]
    declared: Collection[str]
    reasons: list[str]

    where: str = ""
    # ``${failure.<field>}`` values inside an on_reject block; None elsewhere.
    failure: Mapping[str, JsonValue] | None = None

    def walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.walk(v) for v in value]
        return value

    def text(self, text: str) -> JsonValue:
        whole = _PLACEHOLDER.fullmatch(text)
        if whole and whole.group(1) is not None:
            return self.value(whole.group(1))

        def replace(match: re.Match[str]) -> str:
            if match.group(1) is None:  # "$${" escapes a literal "${"
                return "${"
            value = self.value(match.group(1))
            return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

        return _PLACEHOLDER.sub(replace, text)

    def value(self, expr: str) -> JsonValue:
        failure = _FAILURE.match(expr.strip())
        if failure is not None:
            if self.failure is None:
                self.reasons.append(
                    f"{self.where}: ${{{expr}}} is only available in on_reject steps"
                )
                return None
            if failure.group(1) not in self.failure:
                self.reasons.append(
                    f"{self.where}: unknown ${{{expr}}}; failure has " + ", ".join(FAILURE_FIELDS)
                )
                return None
            return self.failure[failure.group(1)]
        match = _INPUT.match(expr.strip())
        if match is None:
            self.reasons.append(
                f"{self.where}: unsupported placeholder ${{{expr}}};"
                " only ${inputs.<name>} is allowed (write $${ for a literal ${)"
                + ("; in on_reject also ${failure.<field>}" if self.failure is not None else "")
            )
            return None
        name = match.group(1)
        if name in self.values:
            return self.values[name]
        if name in self.declared:
            if any(r.startswith(f"input {name!r} ") for r in self.reasons):
                return None  # already reported as missing or invalid; once is enough
            self.reasons.append(f"{self.where}: input {name!r} is not given and has no default")
        else:
            known = ", ".join(sorted(self.declared)) or "none"
            self.reasons.append(
                f"{self.where}: ${{inputs.{name}}} names an undeclared input (declared: {known})"
            )
        return None


def _where(loc: tuple[int | str, ...], data: Mapping[str, Any]) -> str:
    """A readable location: ``steps[1] (get).args`` rather than ``steps.1.args``."""
    parts: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, int) and loc[:i] == ("steps",):
            steps = data.get("steps")
            entry = steps[part] if isinstance(steps, list) else None
            step_id = entry.get("id") if isinstance(entry, dict) else None
            parts.append(f"[{part}]" + (f" ({step_id})" if step_id else ""))
        else:
            parts.append(f".{part}" if parts else str(part))
    return "".join(parts) or "(root)"

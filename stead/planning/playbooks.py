"""Playbooks: deterministic plan templates for known intents, written in YAML.

A playbook declares typed inputs and a list of steps whose arguments may use
``${inputs.<name>}``. Expansion is pure and deterministic, so the same playbook
with the same inputs always yields the same plan hash. See ``playbooks/README.md``
for the format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from stead.contracts.run import Step
from stead.planning.validate import PlanRejected

NAME = re.compile(r"^[A-Za-z0-9_-]+$")
SUFFIX = ".yaml"
_PLACEHOLDER = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_INPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_INPUT = re.compile(rf"^inputs\.({_INPUT_NAME.pattern})$")

_INVALID = "invalid playbook"

InputType = Literal["string", "integer", "number", "boolean", "object", "array"]


class PlaybookError(PlanRejected):
    """A playbook cannot be loaded or expanded; ``reasons`` names each problem."""


class PlaybookNotFound(PlaybookError):
    """No playbook file by that name; the message lists the ones that exist."""


class PlaybookInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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


class Playbook(BaseModel):
    """A parsed playbook; ``steps`` are templates until :func:`expand` fills them in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME.pattern, max_length=100)
    description: str = ""
    inputs: dict[str, PlaybookInput] = {}
    steps: tuple[Step, ...]

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


def available_playbooks(playbook_dir: Path) -> list[str]:
    """Names of the playbooks in ``playbook_dir``, sorted."""
    if not playbook_dir.is_dir():
        return []
    return sorted(p.stem for p in playbook_dir.glob(f"*{SUFFIX}") if NAME.match(p.stem))


def playbook_path(name: str, playbook_dir: Path) -> Path:
    """The file a playbook name maps to; raises :class:`PlaybookNotFound` if absent.

    The name is checked against a strict pattern first, so it can never walk out of
    ``playbook_dir`` (``../secrets`` is not a playbook name).
    """
    if not NAME.match(name):
        raise PlaybookNotFound(
            [f"{name!r} is not a playbook name (letters, digits, '_' and '-' only)"],
            summary="unknown playbook",
        )
    path = playbook_dir / f"{name}{SUFFIX}"
    if not path.is_file():
        known = available_playbooks(playbook_dir)
        listing = ", ".join(known) if known else "none"
        raise PlaybookNotFound(
            [f"no playbook {name!r} in {playbook_dir} (available: {listing})"],
            summary="unknown playbook",
        )
    return path


def load_playbook(name: str, playbook_dir: Path) -> Playbook:
    """Read and parse ``<playbook_dir>/<name>.yaml``; its ``name`` must match the file."""
    path = playbook_path(name, playbook_dir)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlaybookError([f"{path}: cannot be read ({exc.strerror})"]) from None
    playbook = parse_playbook(source, str(path))
    if playbook.name != name:
        raise PlaybookError([f"{path}: declares name {playbook.name!r}; rename it to {name!r}"])
    return playbook


def parse_playbook(source: str, origin: str) -> Playbook:
    """Parse playbook YAML; ``origin`` (a path or ``--playbook-file``) prefixes each error."""
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise PlaybookError([f"{origin}: invalid YAML: {exc}"], summary=_INVALID) from None
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


def expand(playbook: Playbook, inputs: Mapping[str, JsonValue]) -> list[Step]:
    """The playbook's steps with every ``${inputs.x}`` filled in.

    A placeholder that is the whole string takes the input's JSON value (so an
    integer stays an integer); inside a longer string it is interpolated as text.
    Undeclared inputs, missing required ones and values of the wrong type are all
    reported together.
    """
    values, reasons = _bind_inputs(playbook, inputs)
    fill = _Fill(values=values, declared=playbook.inputs.keys(), reasons=reasons)
    steps: list[Step] = []
    for step in playbook.steps:
        fill.where = f"step {step.id!r}"
        data = step.model_dump()
        data["args"] = fill.walk(step.args)
        rationale = fill.text(step.rationale)
        data["rationale"] = rationale if isinstance(rationale, str) else json.dumps(rationale)
        steps.append(Step.model_validate(data))
    if reasons:
        raise PlaybookError(reasons, summary=f"playbook {playbook.name!r} cannot be expanded")
    return steps


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
        match = _INPUT.match(expr.strip())
        if match is None:
            self.reasons.append(
                f"{self.where}: unsupported placeholder ${{{expr}}};"
                " only ${inputs.<name>} is allowed (write $${ for a literal ${)"
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

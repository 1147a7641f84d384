"""Stead's search attributes in a Temporal namespace: find what is missing, register it.

Runs are listed by tenant, status and "waiting for approval" through these attributes;
on a namespace without them every ``stead.run`` workflow task fails. The dev server
registers them at start; any other cluster needs ``stead temporal setup`` once, and
the worker refuses to start (naming that command) until it has run.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from stead.errors import ConfigError

SEARCH_ATTRIBUTES: dict[str, str] = {
    "SteadTenant": "Keyword",
    "SteadStatus": "Keyword",
    "SteadPendingApproval": "Bool",
}
_KINDS = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
}
# A namespace just registered is unknown to the frontend's cache for a few seconds.
_NEW_NAMESPACE_WAIT = timedelta(seconds=30)


def fix_command(namespace: str) -> str:
    return f"stead temporal setup --namespace {namespace}"


async def missing_search_attributes(client: Client, namespace: str) -> list[str]:
    """Stead's attributes the namespace lacks, as ``Name(Kind)``; a wrong kind is an error."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise ConfigError(
                f"Temporal namespace {namespace!r} does not exist; create it and Stead's "
                f"search attributes with `{fix_command(namespace)}`"
            ) from None
        raise
    have = {**listed.system_attributes, **listed.custom_attributes}
    missing = []
    for name, kind in SEARCH_ATTRIBUTES.items():
        if name not in have:
            missing.append(f"{name}({kind})")
        elif have[name] != _KINDS[kind]:
            raise ConfigError(
                f"search attribute {name} in namespace {namespace!r} is "
                f"{IndexedValueType.Name(have[name])}, Stead needs {kind}; remove it "
                f"(temporal operator search-attribute remove --name {name}) and run "
                f"`{fix_command(namespace)}`"
            )
    return missing


async def ensure_namespace(client: Client, namespace: str, retention: timedelta) -> bool:
    """Register the namespace unless it exists; True when this call created it."""
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace)
        )
        return False
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    period = Duration()
    period.FromTimedelta(retention)
    try:
        await client.workflow_service.register_namespace(
            RegisterNamespaceRequest(
                namespace=namespace, workflow_execution_retention_period=period
            )
        )
    except RPCError as taken:
        if taken.status != RPCStatusCode.ALREADY_EXISTS:
            raise
        return False
    return True


async def register_search_attributes(client: Client, namespace: str) -> list[str]:
    """Add whatever is missing (idempotent); returns what this call added."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _NEW_NAMESPACE_WAIT.total_seconds()
    while True:
        try:
            missing = await missing_search_attributes(client, namespace)
            break
        except ConfigError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)
    if not missing:
        return []
    names = [entry.split("(")[0] for entry in missing]
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=namespace,
            search_attributes={name: _KINDS[SEARCH_ATTRIBUTES[name]] for name in names},
        )
    )
    return missing


def cloud_steps(namespace: str) -> list[str]:
    """What an operator runs for Temporal Cloud, where the namespace API is tcld's."""
    attributes = " ".join(
        f"--search-attribute {name}={kind}" for name, kind in SEARCH_ATTRIBUTES.items()
    )
    return [
        "# Temporal Cloud: namespaces and search attributes are managed with tcld "
        "(or the Cloud UI), not the cluster API",
        f"tcld namespace create --namespace {namespace} --region <region> "
        "--retention-days 7   # skip if it exists",
        f"tcld namespace search-attributes add --namespace {namespace}.<account-id> {attributes}",
        f"export STEAD_TEMPORAL_NAMESPACE={namespace}.<account-id>",
    ]

"""Typed errors: one class per condition, each message names the thing and the fix."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    CONFIG = "config"
    STACK = "stack"
    BINARY_MISSING = "binary_missing"
    PORT_IN_USE = "port_in_use"
    SERVICE_CRASHED = "service_crashed"
    SERVICE_NOT_READY = "service_not_ready"
    MIGRATION = "migration"
    APPROVAL_REFUSED = "approval_refused"
    CANCEL_REFUSED = "cancel_refused"
    INVALID_INPUT = "invalid_input"
    TEMPORAL_UNAVAILABLE = "temporal_unavailable"
    TEMPORAL_REFUSED = "temporal_refused"
    DEPLOYMENT_NOT_READY = "deployment_not_ready"


class SteadError(Exception):
    """Base class: carries a stable code so callers and the CLI can branch on it."""

    code: ErrorCode = ErrorCode.STACK

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(SteadError):
    code = ErrorCode.CONFIG


class StackError(SteadError):
    code = ErrorCode.STACK


class BinaryMissing(StackError):
    code = ErrorCode.BINARY_MISSING


class PortInUse(StackError):
    code = ErrorCode.PORT_IN_USE


class ServiceCrashed(StackError):
    code = ErrorCode.SERVICE_CRASHED


class ServiceNotReady(StackError):
    code = ErrorCode.SERVICE_NOT_READY


class MigrationError(StackError):
    code = ErrorCode.MIGRATION


class UpdateNotTaken(ConfigError):
    """Temporal, not the run, refused an update (the run's workflow task failed or timed
    out twice in a row): whether it was recorded is unknown; re-list, then send again."""


class ApprovalRefused(SteadError):
    """The run refused an approval (``stead approve`` exits 1); the message says why."""

    code = ErrorCode.APPROVAL_REFUSED


class ApprovalRepeated(ApprovalRefused):
    """Refused as a repeat: the run already holds this approver's vote on the step, or
    is writing its audit row. For a resend after an unknown outcome that means the
    first one was recorded (``stead approve-all`` counts it so)."""


class CancelRefused(SteadError):
    """The run refused a cancel (``stead cancel`` exits 1) and keeps going; the message says why."""

    code = ErrorCode.CANCEL_REFUSED


class TemporalUnavailable(SteadError):
    """Temporal did not answer (refused, timed out, restarting): the CLI exits 4.

    Its own class so a pipeline can tell "try again later" from a failed run or a
    refused request: nothing was decided, the run (if any) goes on without us.
    """

    code = ErrorCode.TEMPORAL_UNAVAILABLE


class TemporalRefused(SteadError):
    """Temporal answered but refused this client's credential (API key, JWT or certificate).

    Not an outage (exit 4): retrying will not help until the credential is fixed.
    """

    code = ErrorCode.TEMPORAL_REFUSED


class DeploymentNotReady(SteadError):
    """A build cannot be made current yet: Temporal has seen no worker of it polling.

    Promoting a build no worker runs would strand every new task; the fix is to start
    its workers (or wait for them to connect) and promote again.
    """

    code = ErrorCode.DEPLOYMENT_NOT_READY

"""Loopback ports: pick free ones at runtime, refuse taken ones with a clear error."""

from __future__ import annotations

import socket

from stead.errors import PortInUse

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def is_free(port: int) -> bool:
    """Whether a server of ours could listen on ``port`` now.

    The probe binds the way our servers do (Go, Postgres and OPA set ``SO_REUSEADDR``):
    without it a port whose last connections linger in TIME_WAIT, as after any client
    ran against the stack, looks taken and a restart would move the service.
    A port another process listens on is still refused.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def claim(service: str, wanted: int | None, previous: int | None = None) -> int:
    """An explicit port must be free; otherwise reuse last run's port if free, else any free one.

    Reusing the previous port keeps the Temporal UI bookmark and client configs stable
    across ``down``/``up``, but never at the cost of colliding with something else.
    """
    if wanted:
        if not is_free(wanted):
            raise PortInUse(
                f"port {wanted} for {service} on {LOOPBACK} is in use by another process; "
                f"stop that process or choose another port (or omit it to pick a free one)"
            )
        return wanted
    if previous and is_free(previous):
        return previous
    return free_port()

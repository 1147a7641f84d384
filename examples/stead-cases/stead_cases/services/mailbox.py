"""The example mailbox: a real SMTP server (aiosmtpd) that keeps what it receives.

It stands in for the creator's newsletter service. Messages are kept in order with
their ``Message-ID``, so a test can tell one delivery of a step from two: the
``email.send`` adapter derives the Message-ID from the step's idempotency key.

Run it alone with ``python -m stead_cases.services.mailbox --port 8625``.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Mailbox:
    """Messages received, in order; thread-safe."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(
            envelope.original_content or envelope.content, policy=policy.default
        )
        assert isinstance(parsed, EmailMessage)
        body = parsed.get_body(("plain",))
        with self._lock:
            self.messages.append(
                {
                    "message_id": str(parsed["Message-ID"]),
                    "from": envelope.mail_from,
                    "to": list(envelope.rcpt_tos),
                    "subject": str(parsed["Subject"]),
                    "text": body.get_content() if body is not None else "",
                }
            )
        return "250 Message accepted for delivery"

    def message_ids(self) -> list[str]:
        with self._lock:
            return [m["message_id"] for m in self.messages]


@contextmanager
def serve(mailbox: Mailbox, port: int = 0) -> Iterator[tuple[str, int]]:
    """Run an SMTP server for ``mailbox`` on 127.0.0.1; yields (host, port)."""
    controller = Controller(mailbox, hostname="127.0.0.1", port=port or _free_port())
    controller.start()
    try:
        yield controller.hostname, controller.port
    finally:
        controller.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=8625)
    mailbox = Mailbox()
    with serve(mailbox, parser.parse_args().port) as (host, port):
        print(f"mailbox listening on smtp://{host}:{port}", flush=True)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()

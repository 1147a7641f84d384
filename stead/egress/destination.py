"""A destination as policy sees it: ``{kind, scheme, host, port}``, normalised on the worker.

Normalising is what makes an allow-list mean something: ``API.Example.COM.``,
``api.example.com`` and ``https://api.example.com:443`` are one place, and a Unicode
host is compared in its IDNA (punycode) form, so a look-alike spelling cannot match a
listed name by accident or slip past one on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal
from urllib.parse import urlsplit

import idna

from stead.contracts.base import Closed

DEFAULT_PORTS = {"http": 80, "https": 443}


class DestinationError(ValueError):
    """A URL or address whose destination cannot be stated; the step must not run."""


class Destination(Closed):
    """One place a step sends bytes to. ``label`` is what refusals name."""

    kind: Literal["url", "mail"]
    host: str
    scheme: str | None = None
    port: int | None = None

    @property
    def label(self) -> str:
        if self.kind == "mail":
            return f"mail:{self.host}"
        return f"{self.scheme}://{_bracketed(self.host)}:{self.port}"

    def as_policy_input(self) -> dict[str, object]:
        """The JSON OPA gets in ``input.step.destinations``."""
        return {
            "kind": self.kind,
            "scheme": self.scheme,
            "host": self.host,
            "port": self.port,
            "label": self.label,
        }


def normalise_host(host: str) -> str:
    """Lowercase, no trailing dot, IDNA (punycode) for non-ASCII names; IPs unchanged."""
    name = host.strip().rstrip(".").lower()
    if not name:
        raise DestinationError(f"{host!r} names no host")
    if ":" in name or name.isascii():
        return name  # an IPv6 literal, or already ASCII (IDNA leaves those alone)
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise DestinationError(f"{host!r} is not a valid host name ({exc})") from None


def url_destination(url: str) -> Destination:
    """``https://API.example.com./x`` → ``{url, https, api.example.com, 443}``."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not parts.hostname:
        raise DestinationError(f"{url!r} names no host")
    try:
        port = parts.port
    except ValueError:
        raise DestinationError(f"{url!r} has an invalid port") from None
    if port is None:
        port = DEFAULT_PORTS.get(scheme)
    if port is None:
        raise DestinationError(f"{url!r}: scheme {scheme!r} has no default port; state one")
    return Destination(kind="url", scheme=scheme, host=normalise_host(parts.hostname), port=port)


def mail_destinations(addresses: Iterable[str]) -> list[Destination]:
    """One destination per distinct recipient domain, in first-seen order."""
    seen: dict[str, Destination] = {}
    for address in addresses:
        _, _, domain = address.rpartition("@")
        host = normalise_host(domain)
        seen.setdefault(host, Destination(kind="mail", host=host))
    return list(seen.values())


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host

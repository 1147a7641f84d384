"""The grammar of an egress entry, shared by tenant egress lists and secret destinations.

=============================  ===============================================
entry                          matches
=============================  ===============================================
``api.example.com``            that host, any scheme, any port
``*.example.org``              any subdomain of example.org (not example.org)
``https://hooks.example.com``  that scheme and host on the scheme's default port
``https://h.example.com:8443``  that scheme, host and port
``mail:example.com``           mail to recipients at example.com
``mail:*.example.com``         mail to recipients at any subdomain of it
``*``                          anything (an explicit opt-out, never a default)
=============================  ===============================================

Hosts in entries are compared lowercase without a trailing dot; write non-ASCII names
in punycode (``xn--…``). ``policies/stead/step.rego`` implements the same rules for the
tenant list; ``tests/test_egress_unit.py`` and ``step_test.rego`` pin both.
"""

from __future__ import annotations

from collections.abc import Iterable

from stead.egress.destination import DEFAULT_PORTS, Destination


class EgressEntryError(ValueError):
    """An entry that cannot be read; a list holding one allows nothing it would not name."""


def check_entry(entry: str) -> str:
    """``entry`` unchanged if it is well formed, else ``EgressEntryError`` saying why."""
    text = entry.strip()
    if not text:
        raise EgressEntryError("an empty egress entry matches nothing; remove it")
    if text == "*":
        return text
    if text.startswith("mail:"):
        _check_host(entry, text[len("mail:") :])
        return text
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme not in DEFAULT_PORTS:
            raise EgressEntryError(f"{entry!r}: scheme must be http or https")
        host, _, port = rest.partition(":")
        _check_host(entry, host)
        if port and not port.isdigit():
            raise EgressEntryError(f"{entry!r}: the port must be a number")
        return text
    _check_host(entry, text)
    return text


def matches(entry: str, destination: Destination) -> bool:
    """Whether one entry admits ``destination`` (a malformed entry admits nothing)."""
    text = entry.strip().lower()
    if text == "*":
        return True
    if text.startswith("mail:"):
        return destination.kind == "mail" and _host_matches(text[len("mail:") :], destination.host)
    if destination.kind != "url":
        return False
    if "://" in text:
        scheme, _, rest = text.partition("://")
        host, _, port = rest.rstrip("/").partition(":")
        wanted = int(port) if port.isdigit() else DEFAULT_PORTS.get(scheme)
        return (
            scheme == destination.scheme
            and wanted == destination.port
            and _host_matches(host, destination.host)
        )
    return _host_matches(text, destination.host)


def allowed_by(entries: Iterable[str], destination: Destination) -> bool:
    return any(matches(entry, destination) for entry in entries)


def _host_matches(pattern: str, host: str) -> bool:
    pattern = pattern.rstrip(".")
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return host.endswith(suffix) and len(host) > len(suffix)
    return pattern == host


def _check_host(entry: str, host: str) -> None:
    name = host[2:] if host.startswith("*.") else host
    if not name or "*" in name or "/" in name or "@" in name:
        raise EgressEntryError(f"{entry!r}: expected a host like api.example.com or *.example.org")

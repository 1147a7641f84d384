"""The one check of a URL that a step's arguments name: absolute http(s), no credentials.

Credentials in a URL would travel in step arguments, history and audit in the clear;
the worker resolves secrets itself (``secret://`` references), so a URL carrying a user
or password is refused rather than stripped, and the message says who resolves them.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def absolute_http_url(value: str, *, resolver: str) -> str:
    """``value`` unchanged if it is an absolute http(s) URL without credentials.

    ``resolver`` finishes the refusal for credentials, e.g. ``"the adapter resolves them"``.
    Raises ``ValueError`` (a pydantic field error when called from a validator).
    """
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an absolute http:// or https:// URL, got {value!r}")
    if parts.username or parts.password:
        raise ValueError(f"credentials in the URL are refused; {resolver}")
    return value

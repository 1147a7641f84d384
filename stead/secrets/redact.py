"""Keeping a resolved value out of what an adapter returns or raises.

An adapter's result and error text go into workflow history. A peer that echoes
request headers (httpbin's ``/headers``, a debugging proxy, an error page quoting
the request) or a library error quoting a header would carry the credential there,
so adapters pass both through these helpers before handing them back.
"""

from __future__ import annotations

from pydantic import JsonValue, SecretStr

REDACTED = "[redacted]"


def redact(text: str, *secrets: SecretStr) -> str:
    """``text`` with every occurrence of each secret value replaced by ``[redacted]``."""
    for secret in secrets:
        value = secret.get_secret_value()
        if value and value in text:
            text = text.replace(value, REDACTED)
    return text


def redact_json(value: JsonValue, *secrets: SecretStr) -> JsonValue:
    """``value`` with every string (keys included) passed through ``redact``."""
    if not secrets:
        return value
    if isinstance(value, str):
        return redact(value, *secrets)
    if isinstance(value, list):
        return [redact_json(item, *secrets) for item in value]
    if isinstance(value, dict):
        return {redact(key, *secrets): redact_json(item, *secrets) for key, item in value.items()}
    return value

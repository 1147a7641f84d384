"""Keeping a resolved value out of what an adapter returns or raises, in any common encoding.

An adapter's result and error text go into workflow history, the effect ledger and
the CLI's output. A peer that echoes request headers (httpbin's ``/headers``, a
debugging proxy, an error page quoting the request) or a library error quoting a
header would carry the credential there, and rarely verbatim: a JSON encoder writes
``/`` as ``\\/`` or non-ASCII as ``\\u00e9``, a redirect URL percent-encodes it, a
debug endpoint base64- or hex-encodes it. So each secret is masked in every form
below, computed once per value (``_variants`` is cached) so redaction stays a few
substring searches:

* plain;
* JSON string bodies as ``json.dumps`` writes them (``ensure_ascii`` on and off),
  each also with ``/`` escaped as ``\\/``, with ``<``, ``>``, ``&`` escaped as Go
  does, and with every character ``\\u``-escaped (lower- and upper-case hex);
* URL-encoded: ``quote`` (``/`` kept or encoded) and ``quote_plus``, with upper- and
  lower-case hex digits;
* base64, standard and URL-safe, padded and unpadded, and inside a longer encoded
  string at each of the three byte alignments: there the stable middle of the
  encoding (the groups made of the secret's bytes only) is masked, which leaves at
  most two characters of partial bits on either side;
* hex, lower- and upper-case.

Not covered: encodings stacked on each other (base64 of a JSON-escaped value), other
encodings (base32, quoted-printable), and a value the peer transformed (case-folded,
truncated, split). Variants shorter than four characters other than the value itself
are skipped, so a tiny secret does not mask unrelated text.
"""

from __future__ import annotations

import base64
import json
import re
from functools import lru_cache
from urllib.parse import quote, quote_plus

from pydantic import JsonValue, SecretStr

REDACTED = "[redacted]"
MIN_VARIANT = 4
_PERCENT = re.compile(r"%[0-9A-F]{2}")
_GO_HTML = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def redact(text: str, *secrets: SecretStr) -> str:
    """``text`` with every occurrence of each secret value, in each encoding, replaced."""
    for secret in secrets:
        value = secret.get_secret_value()
        if not value:
            continue
        for variant in _variants(value):
            if variant in text:
                text = text.replace(variant, REDACTED)
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


def encoded_forms(value: str) -> tuple[str, ...]:
    """Every form ``redact`` masks for ``value``, longest first (for tests and audits)."""
    return _variants(value)


@lru_cache(maxsize=512)
def _variants(value: str) -> tuple[str, ...]:
    forms = {value}
    forms.update(_json_forms(value))
    forms.update(_url_forms(value))
    raw = value.encode("utf-8")
    forms.update(_base64_forms(raw))
    forms.update({raw.hex(), raw.hex().upper()})
    kept = {f for f in forms if f == value or len(f) >= MIN_VARIANT}
    # Longest first: a shorter form inside a longer one must not break the longer's match.
    return tuple(sorted(kept, key=lambda f: (-len(f), f)))


def _json_forms(value: str) -> set[str]:
    forms: set[str] = set()
    for ascii_only in (True, False):
        body = json.dumps(value, ensure_ascii=ascii_only)[1:-1]
        go = "".join(_GO_HTML.get(ch, ch) for ch in body)
        forms.update({body, body.replace("/", "\\/"), go, go.replace("/", "\\/")})
    every = "".join(f"\\u{ord(ch):04x}" for ch in value if ord(ch) < 0x10000)
    if len(every) == 6 * len(value):
        forms.update({every, every.upper().replace("\\U", "\\u")})
    return forms


def _url_forms(value: str) -> set[str]:
    forms = {quote(value, safe=""), quote(value), quote_plus(value), quote_plus(value, safe="/")}
    return forms | {_PERCENT.sub(lambda m: m.group(0).lower(), f) for f in forms}


def _base64_forms(raw: bytes) -> set[str]:
    forms: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode("ascii")
        forms.update({whole, whole.rstrip("=")})
        for align in (0, 1, 2):
            # Preceded by ``align`` bytes (mod 3): the groups made only of the secret's
            # bytes encode the same whatever surrounds them.
            encoded = encode(b"\0" * align + raw).decode("ascii")
            start = 4 if align else 0
            end = 4 * ((align + len(raw)) // 3)
            if end - start >= 4:
                forms.add(encoded[start:end])
    return forms

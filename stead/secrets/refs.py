"""``secret://<tenant>/<adapter>/<name>``: how a plan names a credential without holding it.

A reference is safe to show anywhere (step args, workflow history, OPA input, logs):
it says *which* secret, never what it is. The grammar is deliberately narrow so that
every backend can map a reference to its own namespace one-to-one: lowercase only
(environment variable names are upper-cased), no ``__`` inside a part and no leading
``_`` (``__`` separates the parts of an environment variable name), no ``/`` or
``..`` (a file path). Two different references therefore never land on the same
variable or file, which is what keeps one tenant from reading another's secret
through a naming collision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

from stead.secrets.errors import InvalidSecretRef

SCHEME = "secret://"
# Same alphabet as a TenantId; a part may not contain "__" (see the module docstring).
_TENANT = re.compile(r"^[a-z0-9](?:[a-z0-9-]|_(?!_)){0,62}$")
_ADAPTER = re.compile(r"^[a-z](?:[a-z0-9]|_(?!_)){0,62}$")
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]|_(?!_)){0,127}$")
EXAMPLE = "secret://acme/http/api_token"


@dataclass(frozen=True)
class SecretRef:
    """A parsed reference; ``str(ref)`` gives the canonical ``secret://`` form back."""

    tenant: str
    adapter: str
    name: str

    @classmethod
    def parse(cls, value: str | SecretRef) -> SecretRef:
        """Parse ``secret://<tenant>/<adapter>/<name>``; the error shows the expected form."""
        if isinstance(value, SecretRef):
            return value
        if not isinstance(value, str) or not value.startswith(SCHEME):
            raise InvalidSecretRef(
                f"{value!r} is not a secret reference; expected the form {EXAMPLE}"
            )
        parts = value[len(SCHEME) :].split("/")
        if len(parts) != 3:
            raise InvalidSecretRef(
                f"{value!r} must have exactly three parts after {SCHEME}: "
                f"<tenant>/<adapter>/<name>, as in {EXAMPLE}"
            )
        tenant, adapter, name = parts
        for label, part, pattern, rule in (
            ("tenant", tenant, _TENANT, "lowercase letters, digits, '-' and '_'"),
            ("adapter", adapter, _ADAPTER, "a lowercase letter, then letters, digits and '_'"),
            ("name", name, _NAME, "lowercase letters, digits, '-' and '_'"),
        ):
            if not pattern.match(part):
                raise InvalidSecretRef(
                    f"{value!r}: the {label} {part!r} must be {rule}, start with a letter or "
                    "digit, and not contain '__'"
                )
        return cls(tenant=tenant, adapter=adapter, name=name)

    def __str__(self) -> str:
        return f"{SCHEME}{self.tenant}/{self.adapter}/{self.name}"


def _checked(value: str) -> str:
    try:
        return str(SecretRef.parse(value))
    except InvalidSecretRef as exc:
        raise ValueError(exc.message) from None


SecretRefStr = Annotated[str, AfterValidator(_checked)]
"""A pydantic field type for a reference in an adapter's args (validated, kept as text)."""

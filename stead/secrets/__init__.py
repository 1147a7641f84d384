"""Secrets by reference: plans name ``secret://<tenant>/<adapter>/<name>``, workers resolve it.

Values never cross a Temporal boundary. They are looked up on the worker that runs
the step, from the backends it was configured with (environment, files, or a Vault
backend implementing ``SecretBackend``), checked against the step's tenant first, and
held as ``pydantic.SecretStr`` so a stray ``repr``, log line or f-string shows
``**********``.
"""

from pydantic import SecretStr

from stead.secrets.env import ENV_PREFIX, EnvSecretBackend, env_name
from stead.secrets.errors import (
    InvalidSecretRef,
    SecretError,
    SecretNotBound,
    SecretNotFound,
    SecretRefused,
    SecretUnreadable,
)
from stead.secrets.factory import open_secret_store
from stead.secrets.files import FileSecretBackend
from stead.secrets.redact import REDACTED, redact, redact_json
from stead.secrets.refs import SecretRef, SecretRefStr
from stead.secrets.store import SecretBackend, Secrets, SecretStore

__all__ = [
    "ENV_PREFIX",
    "REDACTED",
    "EnvSecretBackend",
    "FileSecretBackend",
    "InvalidSecretRef",
    "SecretBackend",
    "SecretError",
    "SecretNotBound",
    "SecretNotFound",
    "SecretRef",
    "SecretRefStr",
    "SecretRefused",
    "SecretStore",
    "SecretStr",
    "SecretUnreadable",
    "Secrets",
    "env_name",
    "open_secret_store",
    "redact",
    "redact_json",
]

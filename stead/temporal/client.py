"""The Temporal client every Stead process uses, with the credential it is configured for.

Settings arrive already resolved (``stead.settings``: ``STEAD_TEMPORAL_*`` over Temporal's
own environment configuration, ``TEMPORAL_*`` and ``temporal.toml`` profiles, over the
dev stack's ``stack.json``); this module turns them into ``Client.connect`` arguments and
turns a refused or unreachable server into one line that says what to check.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr
from temporalio.client import Client
from temporalio.client import Interceptor as ClientInterceptor
from temporalio.runtime import Runtime
from temporalio.service import RetryConfig, TLSConfig

from stead.codec import data_converter
from stead.errors import ConfigError, SteadError, TemporalRefused, TemporalUnavailable
from stead.settings import Settings


async def connect(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    retry_config: RetryConfig | None = None,
) -> Client:
    """A client presenting the configured credential: a bearer API key/JWT and/or mTLS.

    A cluster with an authorizer answers only callers whose JWT grants the namespace;
    an mTLS frontend only callers with a certificate its CA signed; the embedded dev
    server needs neither. The connect is bounded by ``temporal_connect_timeout``, so a
    blackholed address fails in seconds with TemporalUnavailable rather than hanging.
    """
    api_key = settings.temporal_api_key
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            api_key=api_key.get_secret_value() if api_key is not None else None,
            tls=temporal_tls(settings),
            rpc_metadata={k: v.get_secret_value() for k, v in settings.temporal_grpc_meta.items()},
            interceptors=tracing_interceptors(settings),
            runtime=runtime,
            retry_config=retry_config,
            connect_timeout=timedelta(seconds=settings.temporal_connect_timeout),
            # Pydantic payloads, AES-GCM encrypted when STEAD_CODEC_KEYRING is set.
            data_converter=data_converter(settings),
        )
    except RuntimeError as exc:
        raise _connect_error(settings, exc) from None


# What the SDK's connect error says when the server answered but refused us: the TLS
# alert or gRPC status inside its text is the only signal, so match it and say the fix.
_REFUSALS = (
    (
        "CertificateRequired",
        "requires a client certificate and none was presented; set "
        "TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH (or the profile's "
        "client_cert_path/client_key_path)",
    ),
    (
        "UnknownCA",
        "did not accept this client certificate: a CA it does not trust signed it",
    ),
    (
        "BadCertificate",
        "did not accept this client certificate",
    ),
    (
        "InvalidCertificate",
        "presented a certificate this client does not trust; set "
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH to the CA that signed it (and "
        "TEMPORAL_TLS_SERVER_NAME if it names another host)",
    ),
    (
        "PermissionDenied",
        "refused the API key: check TEMPORAL_API_KEY and that its issuer and permissions "
        "are the ones the server accepts for this namespace",
    ),
    (
        "Unauthenticated",
        "refused the API key: check TEMPORAL_API_KEY",
    ),
)


def _connect_error(settings: Settings, exc: RuntimeError) -> SteadError:
    """Refused (a credential problem, exit 1) or unavailable (try later, exit 4)."""
    text = str(exc)
    for marker, what in _REFUSALS:
        if marker in text:
            return TemporalRefused(f"Temporal at {settings.temporal_address} {what} ({marker})")
    return TemporalUnavailable(
        f"cannot reach Temporal at {settings.temporal_address}: {_reason(exc)}. {_hint(settings)}"
    )


def _reason(exc: RuntimeError) -> str:
    """The first line of the SDK's error, without the gRPC status noise around it."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.rstrip(".")


def _hint(settings: Settings) -> str:
    tls = temporal_tls(settings)
    if tls in (None, False) and settings.temporal_api_key is None:
        return (
            "Is `stead dev up` running, is TEMPORAL_ADDRESS / STEAD_TEMPORAL_ADDRESS right, "
            "and does the server want TLS (TEMPORAL_TLS=true)?"
        )
    # A TLS 1.3 server that refuses a client certificate may just close the connection
    # before its alert is read: then this is all we can tell, so name both causes.
    if isinstance(tls, TLSConfig) and tls.client_cert is not None:
        return (
            "Check the address, and that the server accepts this client certificate "
            "(signed by a CA it trusts)"
        )
    return (
        "Check the address; if the server requires a client certificate (mTLS), set "
        "TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH"
    )


def temporal_tls(settings: Settings) -> TLSConfig | bool | None:
    """TLS to Temporal from the resolved certificate settings; one clear error when broken.

    Each PEM comes from a file (``*_PATH``/``STEAD_TEMPORAL_TLS_CERT``…) or inline data
    (``*_DATA``), never both. With no TLS material at all the answer is the plain
    on/off setting, and ``None`` lets the SDK decide: TLS with an API key, else off.
    """
    cert = _pem("client certificate", settings.temporal_tls_cert, settings.temporal_tls_cert_data)
    key = _pem("client key", settings.temporal_tls_key, settings.temporal_tls_key_data)
    ca = _pem("server CA", settings.temporal_tls_ca, settings.temporal_tls_ca_data)
    server_name = settings.temporal_tls_server_name
    if cert is None and key is None and ca is None and server_name is None:
        return settings.temporal_tls
    if settings.temporal_tls is False:
        raise ConfigError(
            "Temporal TLS is turned off (STEAD_TEMPORAL_TLS/TEMPORAL_TLS=false) but TLS "
            "certificates or a server name are set; unset one"
        )
    if (cert is None) != (key is None):
        raise ConfigError(
            "a Temporal client certificate and its private key go together "
            "(TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH, or "
            "STEAD_TEMPORAL_TLS_CERT and STEAD_TEMPORAL_TLS_KEY); set both or neither"
        )
    return TLSConfig(
        server_root_ca_cert=ca, client_cert=cert, client_private_key=key, domain=server_name
    )


def _pem(what: str, path: Path | None, data: SecretStr | None) -> bytes | None:
    if path is not None and data is not None:
        raise ConfigError(
            f"the Temporal TLS {what} is set both as a file ({path}) and inline; keep one"
        )
    if data is not None:
        return data.get_secret_value().encode()
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"the Temporal TLS {what} {path} cannot be read ({exc.strerror}); fix the path"
        ) from None


def tracing_interceptors(settings: Settings) -> list[ClientInterceptor]:
    """Temporal's OpenTelemetry interceptor when STEAD_OTLP_ENDPOINT is set, else none."""
    if settings.otlp_endpoint is None:
        return []
    # Imported only when tracing is on: the rest of Stead never loads OpenTelemetry.
    from stead.observability.tracing import otlp_interceptor

    return [otlp_interceptor(settings.otlp_endpoint)]

"""A real Temporal server with a TLS frontend, for the connection tests.

The Temporal CLI's dev server has no TLS flags, so this starts Temporal's own server
binary (all services in one process, in-memory SQLite) with a frontend that either
requires client certificates (mTLS) or checks bearer JWTs with the server's default
authorizer and claim mapper against a JWKS the test serves. Certificates and keys
are made here with ``cryptography``; nothing is read from the developer's machine
except the server binary, built once per machine like OPA.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from temporalio.client import Client
from temporalio.service import TLSConfig

from stead.devstack.cluster_config import single_cluster_metadata
from stead.devstack.ports import LOOPBACK, free_port
from tests.conftest import REPO

SERVER_BIN = Path.home() / ".cache" / "stead" / "bin" / "temporal-server"
SERVER_NAME = "localhost"
READY_SECONDS = 120.0


def server_binary() -> Path:
    """Temporal's server binary, built once per machine by ``make temporal-cluster-bin``."""
    if not SERVER_BIN.exists():
        subprocess.run(["make", "temporal-cluster-bin"], cwd=REPO, check=False, timeout=1800)
    if not SERVER_BIN.exists():
        raise AssertionError(
            f"no Temporal server binary at {SERVER_BIN}: `make temporal-cluster-bin` builds it "
            "(go install go.temporal.io/server/cmd/server@v1.32.2, GOTOOLCHAIN=go1.27.3)"
        )
    return SERVER_BIN


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """A CA, the frontend's certificate, and client certificates it did or did not sign."""

    ca: Path
    server: Pem
    client: Pem
    system_worker: Pem
    stranger: Pem  # a client certificate from another CA


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("Stead test CA")
    other_key, other_cert = _ca("Someone else's CA")
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return Pki(
        ca=directory / "ca.pem",
        server=_leaf(directory, "server", ca_key, ca_cert, server=True),
        client=_leaf(directory, "client", ca_key, ca_cert),
        system_worker=_leaf(directory, "system-worker", ca_key, ca_cert),
        stranger=_leaf(directory, "stranger", other_key, other_cert),
    )


def _ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _builder(subject, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    directory: Path,
    name: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    server: bool = False,
) -> Pem:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = _builder(subject, ca_cert.subject, key.public_key()).add_extension(
        x509.ExtendedKeyUsage([usage]), critical=False
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    pem = Pem(directory / f"{name}.pem", directory / f"{name}.key")
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pem


def _builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


@dataclass(frozen=True)
class Issuer:
    """An identity provider of one RSA key: its JWKS document and the JWTs it signs."""

    key: rsa.RSAPrivateKey
    kid: str = "stead-test"

    @classmethod
    def new(cls) -> Issuer:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwks(self) -> bytes:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return json.dumps(
            {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}
        ).encode()

    def token(self, *permissions: str) -> str:
        """A JWT whose ``permissions`` claim Temporal's default claim mapper reads."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": "stead-test",
            "permissions": list(permissions),
            "iat": now,
            "exp": now + 3600,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})


@dataclass(frozen=True)
class TlsServer:
    address: str
    pki: Pki


def server_config(directory: Path, pki: Pki, *, mtls: bool, jwks_url: str | None) -> Path:
    """One process, every service, in-memory SQLite; TLS on the frontend only."""
    ports = {name: (free_port(), free_port()) for name in _SERVICES}
    sqlite = {
        "sql": {
            "pluginName": "sqlite",
            "databaseName": "stead",
            "connectAddr": "localhost",
            "connectProtocol": "tcp",
            "connectAttributes": {"mode": "memory", "cache": "private"},
            "maxConns": 1,
            "maxIdleConns": 1,
            "maxConnLifetime": "1h",
        }
    }
    frontend = f"{LOOPBACK}:{ports['frontend'][0]}"
    global_config: dict[str, Any] = {
        "membership": {"maxJoinDuration": "30s", "broadcastAddress": LOOPBACK},
        "tls": {
            "frontend": {
                "server": {
                    "certFile": str(pki.server.cert),
                    "keyFile": str(pki.server.key),
                    "requireClientAuth": mtls,
                    "clientCaFiles": [str(pki.ca)],
                },
                "client": {"serverName": SERVER_NAME, "rootCaFiles": [str(pki.ca)]},
            },
            # Temporal's own system workers reach the frontend with their own certificate.
            "systemWorker": {
                "certFile": str(pki.system_worker.cert),
                "keyFile": str(pki.system_worker.key),
                "client": {"serverName": SERVER_NAME, "rootCaFiles": [str(pki.ca)]},
            },
        },
    }
    services: dict[str, Any] = {
        name: {"rpc": {"grpcPort": grpc, "membershipPort": member, "bindOnLocalHost": True}}
        for name, (grpc, member) in ports.items()
    }
    if jwks_url is not None:
        global_config["authorization"] = {
            "jwtKeyProvider": {"keySourceURIs": [jwks_url], "refreshInterval": "1m"},
            "permissionsClaimName": "permissions",
            "authorizer": "default",
            "claimMapper": "default",
        }
        # System workers call the internal frontend, which has no authorizer, as in
        # docker-compose.yml; callers from outside only ever reach the public one.
        internal = (free_port(), free_port())
        services["internal-frontend"] = {
            "rpc": {"grpcPort": internal[0], "membershipPort": internal[1], "bindOnLocalHost": True}
        }
    dynamic = directory / "dynamic.yaml"
    dynamic.write_text(
        yaml.safe_dump({"system.forceSearchAttributesCacheRefreshOnRead": [{"value": True}]})
    )
    config = {
        "log": {"stdout": True, "level": "warn"},
        "persistence": {
            "defaultStore": "sqlite-default",
            "visibilityStore": "sqlite-visibility",
            "numHistoryShards": 1,
            "datastores": {"sqlite-default": sqlite, "sqlite-visibility": sqlite},
        },
        "global": global_config,
        "services": services,
        "clusterMetadata": single_cluster_metadata(frontend),
        "dcRedirectionPolicy": {"policy": "noop"},
        "dynamicConfigClient": {"filepath": str(dynamic), "pollInterval": "10s"},
    }
    path = directory / "temporal.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


_SERVICES = ("frontend", "history", "matching", "worker")


@contextmanager
def tls_temporal(
    directory: Path, *, mtls: bool, jwks_url: str | None = None, admin_jwt: str | None = None
) -> Iterator[TlsServer]:
    """A running server, stopped (SIGTERM, then SIGKILL) when the block ends."""
    pki = make_pki(directory / "pki")
    config = server_config(directory, pki, mtls=mtls, jwks_url=jwks_url)
    services = [*_SERVICES, *(["internal-frontend"] if jwks_url else [])]
    frontend = yaml.safe_load(config.read_text())["services"]["frontend"]["rpc"]["grpcPort"]
    log = (directory / "server.log").open("w")
    child = subprocess.Popen(
        [str(server_binary()), "--config-file", str(config), "--allow-no-auth", "start"]
        + [arg for name in services for arg in ("--service", name)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=directory,
    )
    server = TlsServer(f"{LOOPBACK}:{frontend}", pki)
    try:
        asyncio.run(_wait_ready(server, child, directory / "server.log", admin_jwt))
        yield server
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)
        log.close()


async def _wait_ready(
    server: TlsServer, child: subprocess.Popen[bytes], log: Path, admin_jwt: str | None
) -> None:
    """Until the frontend answers a TLS client with a certificate (bounded)."""
    tls = TLSConfig(
        server_root_ca_cert=server.pki.ca.read_bytes(),
        client_cert=server.pki.client.cert.read_bytes(),
        client_private_key=server.pki.client.key.read_bytes(),
        domain=SERVER_NAME,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_SECONDS
    last: Exception | None = None
    while loop.time() < deadline:
        if child.poll() is not None:
            raise AssertionError(
                f"temporal server exited {child.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            client = await Client.connect(server.address, tls=tls, api_key=admin_jwt)
            await client.service_client.check_health()
            return
        except Exception as exc:  # not up yet: connection refused, handshake, unavailable
            last = exc
            await asyncio.sleep(0.5)
    raise AssertionError(
        f"temporal server not ready in {READY_SECONDS} s: {last}\n{log.read_text()[-3000:]}"
    )

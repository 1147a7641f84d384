"""``stead codec-server`` over real HTTP: the remote codec protocol, its token check and CORS."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.contrib.pydantic import pydantic_data_converter

from stead.codec import AesGcmCodec, Keyring, add_key, load_keyring
from stead.codec.server import BearerTokenAuthorizer, codec_app, serve_codec
from tests.conftest import REPO

TOKEN = "operator-token-" + "x" * 24
UI = "http://127.0.0.1:8233"
PLAINTEXT = "invoice-9931-plaintext-marker"
KEYRING = Keyring({"a": os.urandom(32)}, "a")


@dataclass(frozen=True)
class CodecServer:
    url: str
    codec: AesGcmCodec


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[CodecServer]:
    codec = AesGcmCodec(KEYRING)
    app = codec_app(codec, BearerTokenAuthorizer([SecretStr(TOKEN)]), [UI])
    async with serve_codec(app, "127.0.0.1", 0) as url:
        yield CodecServer(url, codec)


def _body(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


def _payloads(response: httpx.Response) -> list[Payload]:
    return list(json_format.Parse(response.text, Payloads()).payloads)


async def _sealed(server: CodecServer, value: object) -> Payload:
    [payload] = pydantic_data_converter.payload_converter.to_payloads([value])
    [sealed] = await server.codec.encode([payload])
    return sealed


async def _post(
    server: CodecServer, path: str, body: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{server.url}{path}",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Namespace": "default",
                **(headers or {}),
            },
        )


def _bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_decode_with_the_operator_token_returns_plaintext(server: CodecServer) -> None:
    sealed = await _sealed(server, {"invoice": PLAINTEXT})
    response = await _post(server, "/decode", _body(sealed), _bearer())
    assert response.status_code == 200
    [decoded] = _payloads(response)
    assert decoded.metadata["encoding"] == b"json/plain"
    assert json.loads(decoded.data) == {"invoice": PLAINTEXT}


async def test_the_wire_format_is_proto3_json_with_base64_bytes(server: CodecServer) -> None:
    sealed = await _sealed(server, PLAINTEXT)
    response = await _post(server, "/decode", _body(sealed), _bearer())
    [raw] = response.json()["payloads"]
    assert base64.b64decode(raw["metadata"]["encoding"]) == b"json/plain"
    assert PLAINTEXT in base64.b64decode(raw["data"]).decode()


async def test_encode_then_decode_round_trips(server: CodecServer) -> None:
    [plain] = pydantic_data_converter.payload_converter.to_payloads([{"n": PLAINTEXT}])
    encoded = await _post(server, "/encode", _body(plain), _bearer())
    [sealed] = _payloads(encoded)
    assert sealed.metadata["encoding"] == b"binary/encrypted"
    decoded = await _post(server, "/decode", encoded.text, _bearer())
    assert _payloads(decoded) == [plain]


async def test_decode_without_a_token_is_401_and_reveals_nothing(server: CodecServer) -> None:
    sealed = await _sealed(server, PLAINTEXT)
    response = await _post(server, "/decode", _body(sealed))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert PLAINTEXT not in response.text


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ],
)
async def test_decode_with_a_wrong_token_is_403(
    server: CodecServer, headers: dict[str, str]
) -> None:
    sealed = await _sealed(server, PLAINTEXT)
    response = await _post(server, "/decode", _body(sealed), headers)
    assert response.status_code == 403
    assert PLAINTEXT not in response.text


async def test_another_scheme_is_treated_as_no_token(server: CodecServer) -> None:
    basic = base64.b64encode(f"op:{TOKEN}".encode()).decode()
    response = await _post(server, "/decode", _body(), {"Authorization": f"Basic {basic}"})
    assert response.status_code == 401


async def test_a_payload_under_an_unknown_key_is_422_naming_the_key(server: CodecServer) -> None:
    [foreign] = await AesGcmCodec(Keyring({"z": os.urandom(32)}, "z")).encode(
        pydantic_data_converter.payload_converter.to_payloads([PLAINTEXT])
    )
    response = await _post(server, "/decode", _body(foreign), _bearer())
    assert response.status_code == 422
    assert "key 'z'" in response.json()["error"]


async def test_a_malformed_body_is_400(server: CodecServer) -> None:
    response = await _post(server, "/decode", '{"payloads": "nope"}', _bearer())
    assert response.status_code == 400
    assert "payloads" in response.json()["error"]


async def test_the_ui_origin_passes_the_preflight_without_a_token(server: CodecServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.options(
            f"{server.url}/decode",
            headers={
                "Origin": UI,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
            },
        )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == UI
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert {"authorization", "content-type", "x-namespace"} <= {
        h.strip() for h in allowed.split(",")
    }


async def test_another_origin_fails_the_preflight(server: CodecServer) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.options(
            f"{server.url}/decode",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_cors_headers_echo_only_the_ui_origin(server: CodecServer) -> None:
    sealed = await _sealed(server, PLAINTEXT)
    ok = await _post(server, "/decode", _body(sealed), {**_bearer(), "Origin": UI})
    assert ok.headers["Access-Control-Allow-Origin"] == UI
    refused = await _post(server, "/decode", _body(sealed), {"Origin": UI})
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == UI  # so the UI can show why
    other = await _post(server, "/decode", _body(sealed), {**_bearer(), "Origin": "http://x.test"})
    assert "Access-Control-Allow-Origin" not in other.headers


def _cli(*args: str) -> list[str]:
    """The commands as `stead` registers them (``stead.cli.codec.register``)."""
    program = (
        "import typer; from stead.cli import codec; app = typer.Typer(); codec.register(app); app()"
    )
    return [sys.executable, "-c", program, *args]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEAD_")}
    return {**env, "STEAD_HOME": str(tmp_path / "home"), **extra}


def test_the_cli_refuses_to_serve_without_a_token(tmp_path: Path) -> None:
    add_key(tmp_path / "keys.json", "a")
    env = _env(tmp_path, STEAD_CODEC_KEYRING=str(tmp_path / "keys.json"))
    done = subprocess.run(
        _cli("codec-server", "--port", "0"),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "STEAD_CODEC_SERVER_TOKEN is not set" in done.stderr


def test_keygen_then_codec_server_decode_through_the_cli(tmp_path: Path) -> None:
    keyring = tmp_path / "keys.json"
    env = _env(tmp_path, STEAD_CODEC_KEYRING=str(keyring), STEAD_CODEC_SERVER_TOKEN=TOKEN)
    made = subprocess.run(
        _cli("codec", "keygen", "--key-id", "k1"),
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert "added key k1" in made.stdout
    child = subprocess.Popen(
        _cli("codec-server", "--port", "0", "--cors-origin", UI),
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert "stead codec server listening on" in line, line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        [plain] = pydantic_data_converter.payload_converter.to_payloads([PLAINTEXT])
        sealed = AesGcmCodec(load_keyring(keyring)).encrypt(plain)
        response = httpx.post(f"{url}/decode", content=_body(sealed), headers=_bearer())
        assert response.status_code == 200
        assert _payloads(response) == [plain]
        assert httpx.post(f"{url}/decode", content=_body(sealed)).status_code == 401
    finally:
        child.terminate()
        child.wait(timeout=20)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == 0


async def test_a_browser_session_from_login_lets_the_ui_decode(server: CodecServer) -> None:
    sealed = await _sealed(server, PLAINTEXT)
    async with httpx.AsyncClient(base_url=server.url) as browser:
        form = await browser.get("/login")
        assert form.status_code == 200 and 'name="token"' in form.text
        refused = await browser.post("/login", data={"token": "wrong"})
        assert refused.status_code == 403
        assert "stead_codec_session" not in browser.cookies
        signed_in = await browser.post("/login", data={"token": TOKEN})
        assert signed_in.status_code == 200
        cookie = signed_in.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert TOKEN not in cookie
        decoded = await browser.post(
            "/decode", content=_body(sealed), headers={"Origin": UI, "X-Namespace": "default"}
        )
    assert decoded.status_code == 200
    assert json.loads(_payloads(decoded)[0].data) == PLAINTEXT


@pytest.mark.parametrize("cookie", ["1.deadbeef", "99999999999.deadbeef", "garbage"])
async def test_a_forged_or_expired_session_is_refused(server: CodecServer, cookie: str) -> None:
    sealed = await _sealed(server, PLAINTEXT)
    response = await _post(
        server, "/decode", _body(sealed), {"Cookie": f"stead_codec_session={cookie}"}
    )
    assert response.status_code in (401, 403)
    assert PLAINTEXT not in response.text

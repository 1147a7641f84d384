"""``stead codec-server`` and ``stead codec keygen``: payload encryption for operators."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stead.cli._common import console, fails_cleanly, settings
from stead.errors import ConfigError
from stead.settings import Settings

if TYPE_CHECKING:
    from aiohttp import web

app = typer.Typer(help="Payload encryption keys.")


def register(root: typer.Typer) -> None:
    root.command("codec-server")(codec_server)
    root.add_typer(app, name="codec")


@fails_cleanly
def codec_server(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = 8089,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            help="Browser origin allowed to call (the Temporal UI); repeatable. Default: "
            "STEAD_CODEC_CORS_ORIGINS, else the embedded stack's UI.",
        ),
    ] = None,
) -> None:
    """Decode and encode payloads for the Temporal UI and CLI, for holders of the codec token."""
    from stead.codec.aesgcm import AesGcmCodec
    from stead.codec.keyring import load_keyring
    from stead.codec.server import BearerTokenAuthorizer, codec_app

    cfg = settings()
    if cfg.codec_keyring is None:
        raise ConfigError(
            "STEAD_CODEC_KEYRING is not set, so there is nothing to decode with; point it at "
            "the keyring the workers use"
        )
    if cfg.codec_server_token is None:
        raise ConfigError(
            "STEAD_CODEC_SERVER_TOKEN is not set: without it the codec server would decrypt "
            "every history for anyone who can reach it. Set it to a long random string "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    keyring = load_keyring(cfg.codec_keyring, cfg.codec_active_key)
    origins = [*cfg.codec_cors_origins, *(cors_origin or [])] or _embedded_ui_origins(cfg)
    application = codec_app(
        AesGcmCodec(keyring), BearerTokenAuthorizer([cfg.codec_server_token]), origins
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(_serve(application, host, port, keyring.ids, origins))


async def _serve(
    application: web.Application, host: str, port: int, key_ids: tuple[str, ...], origins: list[str]
) -> None:
    from stead.codec.server import serve_codec

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve_codec(application, host, port) as url:
        print(
            f"stead codec server listening on {url} (keys: {', '.join(key_ids)}; "
            f"CORS origins: {', '.join(origins) or 'none'})",
            flush=True,
        )
        await stop.wait()


def _embedded_ui_origins(cfg: Settings) -> list[str]:
    """The dev stack's Temporal UI, under both names a browser may use for loopback."""
    from stead.devstack.stack import read_state

    state = read_state(cfg.home.resolve())
    if state is None or state.temporal_ui is None:
        return []
    return [state.temporal_ui, state.temporal_ui.replace("127.0.0.1", "localhost")]


@app.command()
@fails_cleanly
def keygen(
    keyring: Annotated[
        Path | None, typer.Option(help="Keyring file (default: STEAD_CODEC_KEYRING).")
    ] = None,
    key_id: Annotated[str | None, typer.Option(help="Id of the new key (default: dated).")] = None,
    activate: Annotated[
        bool, typer.Option(help="Encrypt new payloads with the new key right away.")
    ] = True,
) -> None:
    """Add a random AES-256 key to the keyring (created 0600); old keys stay to decrypt history."""
    from stead.codec.keyring import add_key, new_key_id

    path = keyring or settings().codec_keyring
    if path is None:
        raise ConfigError("give --keyring PATH or set STEAD_CODEC_KEYRING")
    new_id = key_id or new_key_id()
    result = add_key(path, new_id, activate=activate)
    console.print(
        f"added key {new_id} to {path}; keys {', '.join(result.ids)}; active {result.active}",
        highlight=False,
    )

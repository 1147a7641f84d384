"""The embedded Temporal UI is told where the codec server is, so it can decode history."""

from __future__ import annotations

from pathlib import Path

import httpx

from stead.devstack import proc, temporal
from stead.devstack.ports import LOOPBACK, free_port


def test_temporal_ui_gets_the_codec_endpoint(tmp_path: Path) -> None:
    ports = temporal.TemporalPorts(
        grpc=free_port(), ui=free_port(), http=free_port(), metrics=free_port()
    )
    endpoint = f"http://{LOOPBACK}:{free_port()}"
    record = temporal.start(tmp_path, ports, "default", codec_endpoint=endpoint)
    try:
        settings = httpx.get(f"http://{LOOPBACK}:{ports.ui}/api/v1/settings", timeout=10).json()
    finally:
        proc.stop(record)
    assert settings["Codec"]["Endpoint"] == endpoint

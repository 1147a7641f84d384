"""``stead dev up --temporal-address``: Postgres and OPA beside a Temporal someone else runs.

The external cluster here is the session stack's Temporal; the point is that this
stack starts no server of its own and that every command reading ``$STEAD_HOME``
(settings, ``stead dev env``) then talks to the external one, on its namespace.
"""

from __future__ import annotations

import json
from pathlib import Path

from stead.devstack.stack import read_state
from stead.settings import Settings, load_settings
from tests.test_devstack import home, stead

__all__ = ["home"]  # the fixture, imported so this module can use it


def test_dev_up_with_an_external_temporal_starts_no_server_and_points_everything_at_it(
    home: Path, stack: Settings
) -> None:
    up = stead(
        home,
        "dev",
        "up",
        "--temporal-address",
        stack.temporal_address,
        "--temporal-namespace",
        "agents",
        "--json",
    )
    assert up.returncode == 0, up.stderr
    report = json.loads(up.stdout)
    assert set(report["services"]) == {"postgres", "opa"}
    assert report["endpoints"]["temporal_address"] == stack.temporal_address
    state = read_state(home)
    assert state is not None and state.temporal_ui is None

    settings = load_settings(_env_file=None, home=home)
    assert (settings.temporal_address, settings.temporal_namespace) == (
        stack.temporal_address,
        "agents",
    )
    exports = stead(home, "dev", "env").stdout.splitlines()
    assert f"export TEMPORAL_ADDRESS={stack.temporal_address}" in exports
    assert 'export STEAD_TEMPORAL_NAMESPACE="agents"' in exports
    assert 'export TEMPORAL_NAMESPACE="agents"' in exports

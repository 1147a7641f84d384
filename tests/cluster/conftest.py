"""The cluster tier: the suite's fixtures, with Temporal a real multi-service cluster.

``stack`` is overridden so every fixture and helper of the parent conftest (workers,
``subprocess_env``) talks to a ``TemporalCluster``: frontend, history, matching and
worker as separate processes on PostgreSQL, started once per session. Tests here are
marked ``cluster`` and left out of the default run (pyproject ``addopts``); run them
with ``pytest -m cluster tests/cluster`` (``make test-cluster``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from stead.devstack.cluster import TemporalCluster
from stead.devstack.stack import ExternalTemporal
from stead.settings import Settings
from tests.conftest import running_stack

_timings: dict[str, float] = {}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalCluster]:
    started = time.monotonic()
    cluster = TemporalCluster(home=tmp_path_factory.mktemp("temporal-cluster"))
    cluster.start()
    _timings["temporal cluster start (s)"] = time.monotonic() - started
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def stack(cluster: TemporalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    external = ExternalTemporal(cluster.address, cluster.namespace)
    with running_stack(tmp_path_factory.mktemp("stead-home"), external) as settings:
        yield settings


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for label, seconds in _timings.items():
        terminalreporter.write_line(f"{label}: {seconds:.1f}")

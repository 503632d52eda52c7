"""Shared fixtures: the built-in simulator over real loopback sockets."""

from __future__ import annotations

import pytest

from flora_nb import FloraClient
from flora_nb.sim import FloraSimulator


@pytest.fixture(autouse=True, scope="session")
def _private_home(tmp_path_factory):
    """Keep ledgers and caches out of the real ~/.flora_nb."""
    home = tmp_path_factory.mktemp("flora_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLORA_NB_HOME", str(home))
        mp.setenv("FLORA_NB_SIM_PERSIST", "0")  # each Flora.simulated() a fresh account unless a test says so
        mp.delenv("FLORA_API_KEY", raising=False)
        mp.delenv("FLORA_BASE_URL", raising=False)
        mp.delenv("FLORA_WORKSPACE_ID", raising=False)
        yield home


@pytest.fixture(scope="session")
def shared_sim():
    """One fault-free simulator for tests that only read or add independent runs."""
    with FloraSimulator(speed=100.0, seed=0) as sim:
        yield sim


@pytest.fixture
def sim():
    """A fresh simulator per test, for tests that set faults or count requests."""
    with FloraSimulator(speed=100.0, seed=1) as sim:
        yield sim


def make_client(sim, **options) -> FloraClient:
    """A client of ``sim`` (faster backoff than the defaults, so retry tests stay short)."""
    options.setdefault("max_retry_wait", 5.0)
    return FloraClient(api_key=sim.api_key, base_url=sim.base_url, **options)


@pytest.fixture
def client(sim):
    with make_client(sim) as c:
        yield c


@pytest.fixture
def shared_client(shared_sim):
    with make_client(shared_sim) as c:
        yield c

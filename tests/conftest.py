"""Shared fixtures: the built-in simulator over real loopback sockets. And how the suite runs in parallel.

``make test`` runs it with pytest-xdist (``-n 5 --dist loadgroup``: on 2 cores, 5 workers finished first,
since many tests mostly wait on the simulator's clock). What makes that safe:

- every worker is its own process with its own ``FLORA_NB_HOME`` (``_private_home``, under the
  worker's own ``tmp_path_factory`` base), its own simulators (port 0, held while serving) and its
  own ``tmp_path``s: no ledger, port or file is shared between workers;
- the browser tests (JupyterLab + Chromium, the heaviest by far) run one after another on one
  worker, beside the other workers (``pytest_xdist_make_scheduler``); they carry the ``browser`` marker;
- tests sharing an expensive module fixture run on one worker, so it is built once;
- the slowest modules are handed out first, so no worker starts a two-minute test at the end.
"""

from __future__ import annotations

import os
import uuid

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


def _postgres_url() -> str:
    """The suite's throwaway cluster (``make test`` runs the suite inside ``scripts/with-postgres``, which
    starts it and sets FLORA_NB_TEST_POSTGRES). Without it a test skips, except in CI (CI=true): it fails."""
    url = os.environ.get("FLORA_NB_TEST_POSTGRES")
    if not url:
        reason = "no PostgreSQL for the tests: run them through `make test` (scripts/with-postgres)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return url


class Schemas:
    """Fresh, empty schemas of the suite's PostgreSQL cluster, one per name, dropped at the end."""

    def __init__(self, url: str):
        self.url, self.made = url, {}

    def __call__(self, name: str = "ledger") -> str:
        """A connection string whose tables live in this test's schema called ``name``."""
        if name not in self.made:
            import psycopg

            schema = f"t_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
            separator = "&" if "?" in self.url else "?"
            self.made[name] = (schema, f"{self.url}{separator}options=-csearch_path%3D{schema}")
        return self.made[name][1]

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            for schema, _ in self.made.values():
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def postgres_schema():
    """A connection string to a fresh, empty schema of the suite's throwaway PostgreSQL cluster (dropped after)."""
    schemas = Schemas(_postgres_url())
    yield schemas()
    schemas.drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_at(request, tmp_path):
    """Where a test's ledgers live, once on each backend: ``ledger_at(name)`` is a file of ``tmp_path``, or
    a fresh schema of the suite's PostgreSQL; the same name gives the same ledger (two sessions sharing one)."""
    if request.param == "sqlite":
        yield lambda name="ledger": tmp_path / f"{name}.sqlite"
        return
    schemas = Schemas(_postgres_url())
    yield schemas
    schemas.drop()


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


# -------------------------------------------------------------------- parallel runs (pytest-xdist)

BROWSER_MODULES = ("test_browser.py", "test_browser_form.py", "test_browser_notebooks.py", "test_newuser_browser.py")
# Modules whose tests share one expensive module-scoped fixture: kept on one worker, so it is built once.
SHARED_FIXTURE_GROUPS = {"test_notebook.py": "executed-notebook"}
# Handed out first, in this order (whole modules, so a serial run keeps each module's tests together): the
# slowest first, so none starts late. Right after the binder test (minutes), a module of instant tests: a worker
# always holds the next test it will run, and what waits behind the binder test on its worker should be short.
HANDED_OUT_FIRST = ("test_binder.py", "test_models.py", "test_sweep_rate_limit.py", "test_soak.py", "test_notebooks.py",
                    "test_readme.py", "test_binding_invariants.py", "test_kernel_kill.py", "test_durable_sweeps.py",
                    "test_ledger.py", "test_sweep_crash.py", "test_crash.py", "test_magic.py", "test_newuser.py",
                    "test_session.py", "test_sim_shared.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in BROWSER_MODULES:
            item.add_marker(pytest.mark.browser)
    rank = {name: n for n, name in enumerate(HANDED_OUT_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def _group_of(nodeid: str) -> str:
    """The unit of work a test is handed out in: the browser tests together, a shared fixture's tests together,
    any other test alone."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    if module in BROWSER_MODULES:
        return "browser"
    return SHARED_FIXTURE_GROUPS.get(module, nodeid)


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: absent with -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup`` with the groups of ``_group_of``, each handed out whole, biggest first.

    The grouping is done here because pytest-xdist's own ``xdist_group`` marker groups nothing under
    pytest 9 (xdist 3.8 tags a test's node id through an attribute pytest 9 no longer reads).
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Grouped(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group_of(nodeid)

        def _reschedule(self, node) -> None:  # one unit waiting per worker, not two: less stuck behind a long test
            if not node.shutting_down and self.workqueue and self._pending_of(self.assigned_work[node]) > 1:
                return
            super()._reschedule(node)

    return Grouped(config, log)

"""Endless listings end early (hardening round 2, item 11): a server that sends a new cursor forever
is stopped when a page brings nothing new, or when the listing runs past its time limit."""

from __future__ import annotations

import pytest

import flora_nb as fnb
from flora_nb import Flora, FloraClient

from .hostile import KEY, WS, FakeFlora, Reply, run_json
from .waiting import FakeClock


@pytest.fixture
def api():
    server = FakeFlora()
    yield server
    server.close()


def _forever(api: FakeFlora, fresh: bool, on_page=None) -> None:
    """Every page of techniques and run history comes with a new cursor; its items are the same
    two every time, or (``fresh``) new ones every time."""
    def page(req):
        n = len(api.hits(req.path))
        ids = (2 * n, 2 * n + 1) if fresh else (0, 1)
        if on_page is not None:
            on_page()
        if req.path.endswith("/technique-runs"):
            return Reply(200, {"technique_runs": [run_json(f"run_{i:04d}") for i in ids],
                               "meta": {"next_cursor": f"c{n}"}})
        return Reply(200, {"techniques": [{"technique_id": f"tech_{i}", "name": f"T{i}", "run_cost": 0.1,
                                           "inputs": [], "outputs": []} for i in ids],
                           "meta": {"next_cursor": f"c{n}"}})
    api.on_list = page
    api.on_other = lambda req: page(req) if req.path.endswith("/techniques") else Reply(404, {})


def test_new_cursors_to_the_same_techniques_stop_after_two_pages(api, tmp_path):
    _forever(api, fresh=False)
    with Flora(api_key=KEY, base_url=api.base_url, workspace=WS, ledger_path=tmp_path / "l.sqlite",
               resume=False, max_retries=0) as fl:
        with pytest.raises(fnb.InvalidResponseError, match="nothing not seen before.*never end"):
            fl.techniques()
    assert len(api.hits("/api/v1/techniques")) == 2  # was 1,000 pages (44 s)


def test_new_cursors_to_the_same_runs_stop_the_history_after_two_pages(api):
    _forever(api, fresh=False)
    with FloraClient(api_key=KEY, base_url=api.base_url, max_retries=0) as client:
        with pytest.raises(fnb.InvalidResponseError, match="nothing not seen before"):
            list(client.technique_runs(workspace_id=WS))
    assert len(api.hits("/api/v1/technique-runs")) == 2


def test_a_listing_of_new_items_forever_stops_at_its_time_limit(api):
    clock = FakeClock()
    _forever(api, fresh=True, on_page=lambda: clock.advance(7.0))  # every page takes 7 s of fake time
    with FloraClient(api_key=KEY, base_url=api.base_url, max_retries=0) as client:
        client.max_listing_seconds = 60.0
        with pytest.raises(fnb.InvalidResponseError, match=r"still paging after 60 s \(9 pages\).*max_listing_seconds"):
            list(client.paginate("/techniques", "techniques", clock=clock))
    assert len(api.hits("/api/v1/techniques")) == 9  # 63 s of pages: the ninth crossed the limit


def test_an_honest_listing_that_ends_is_read_whole(api):
    def page(req):
        n = len(api.hits(req.path))
        cursor = f"c{n}" if n < 5 else None
        return Reply(200, {"technique_runs": [run_json(f"run_{n}_{i}") for i in range(3)], "meta": {"next_cursor": cursor}})
    api.on_list = page
    with FloraClient(api_key=KEY, base_url=api.base_url, max_retries=0) as client:
        assert len(list(client.technique_runs(workspace_id=WS))) == 15

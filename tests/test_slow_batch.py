"""A slow batch listing no longer freezes every run (hardening round 2, item 9): when
``GET /technique-runs`` trickles (a slow proxy), single polls take over at once and the batch
route is left alone for a while, the wait doubling while it keeps failing."""

from __future__ import annotations

import threading

import pytest

from flora_nb import Flora

from .hostile import KEY, TECH, WS, FakeFlora, Reply, run_json
from .waiting import PollerTime, until


class Trickle:
    """A batch answer that never ends: headers, then one byte every 50 ms until the client hangs up."""

    def __init__(self) -> None:
        self.stop = threading.Event()

    def __call__(self, req):
        h = req.handler
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        try:
            while not self.stop.wait(0.05):  # the hostile server's pace, not a test's wait
                h.wfile.write(b" ")
                h.wfile.flush()
        except OSError:
            pass
        h.close_connection = True
        return None


@pytest.fixture
def api():
    server = FakeFlora()
    trickle = Trickle()
    server.on_list = trickle
    yield server
    trickle.stop.set()
    server.close()


def _session(api: FakeFlora, tmp_path, poll_interval: tuple[float, float]) -> Flora:
    fl = Flora(api_key=KEY, base_url=api.base_url, workspace=WS, ledger_path=tmp_path / "l.sqlite", resume=False,
               poll_interval=poll_interval, max_retries=3)
    fl.client.poll_deadline = 0.5  # the poll limit: a batch page that has not arrived by then is given up on
    return fl


def _listings(api: FakeFlora) -> int:
    return len(api.hits("/api/v1/technique-runs"))


def test_runs_complete_by_single_polls_while_the_batch_listing_trickles(api, tmp_path):
    with _session(api, tmp_path, (0.05, 0.2)) as fl:
        runs = [fl.run(TECH, {"prompt": f"p{i}"}) for i in range(20)]
        for run in runs:
            run.wait(30)  # was: every run pending for good (each batch try retried, then the whole cycle failed)
        status = fl.status()
        assert [r.status for r in runs] == ["completed"] * 20
        assert status["batch_fallbacks"] >= 1 and status["requests_single"] >= 20
    # One batch try, not retried after it got no answer in time; then the route is left alone for 30 s
    # (a second try only if this test took longer than that).
    assert 1 <= _listings(api) <= 2


def test_the_batch_route_is_tried_again_after_a_backoff_that_doubles(api, tmp_path):
    api.on_run = lambda req, run_id: Reply(200, run_json(run_id, status="running"))  # tracked for good
    api.on_start = lambda req: Reply(201, {"run_id": f"run_{len(api.hits('/api/v1/runs/technique')):04d}",
                                           "estimated_seconds": 1000})  # looked at every 20 s while running
    with _session(api, tmp_path, (2.0, 5.0)) as fl:
        # 200 s of the poller's own time: a batch try at its start; the route is then left alone for
        # 30 s, then 60 s, then 120 s: tries at the cycles after 0, 30 and 90 s, three in all.
        # Without a backoff every cycle (one each 20 s) tries it.
        stretch = PollerTime(fl.poller, 200.0, snapshot=lambda: _listings(api),
                             start_when=lambda: _listings(api) >= 1)
        for prompt in ("a", "b"):
            fl.run(TECH, {"prompt": prompt})
        until(stretch.closed.is_set, what="200 s of the poller's time to pass")
        assert stretch.seen == 3
        assert fl.status()["requests_single"] >= 2 * 9  # the runs were polled one by one all along

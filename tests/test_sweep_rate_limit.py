"""A 429 on a start means "not now": under an 8 requests/s limit every variation of a 300-run sweep runs once."""

from __future__ import annotations

import collections

from flora_nb import Flora
from flora_nb.sim import Faults


def test_300_runs_under_8_requests_per_second_all_run_exactly_once(tmp_path):
    prompts = [f"p{i:03d}" for i in range(300)]
    with Flora.simulated(speed=1000.0, seed=12, faults=Faults(rate_limit=8), poll_interval=(1.0, 2.0),
                         max_retries=1,  # so 429s reach the start path often, not only the client's retries
                         ledger_path=tmp_path / "l.sqlite") as fl:
        fl.client.throttle.learn = False  # a learnt rate would keep 429s away from the start path tested here
        sweep = fl.sweep("tech_a1poster", grid={"prompt": prompts}, max_concurrency=300, confirm=True)
        eta_while_limited = []
        while not sweep.done:
            before = sweep.rate_limit_wait
            eta = sweep.eta_seconds
            wait = sweep.rate_limit_wait  # read after: the wait only shrinks meanwhile...
            # ...unless a parallel start met a fresh 429 between the reads and set a longer wait
            if 0 < wait <= before and not sweep.done:
                eta_while_limited.append((wait, eta))
            _wait_a_little(sweep)
        stats = fl.simulator.stats()
        records = fl.simulator.run_records()
        assert sweep.counts == {"completed": 300}
        assert stats["responses_by_status"].get("429", 0) > 0, "the limit was hit"
        assert fl.rate_limited_starts > 0, "some starts got 429 even after the client's own retries"
        per_prompt = collections.Counter(r["inputs"]["prompt"] for r in records)
        assert per_prompt == collections.Counter(prompts)  # one server run per variation, none twice
        assert len({r["idempotency_key"] for r in records}) == 300
        assert eta_while_limited and all(eta >= wait for wait, eta in eta_while_limited)  # the ETA shows the wait


def _wait_a_little(sweep) -> None:
    try:
        sweep.wait(0.2)
    except TimeoutError:
        pass


def test_a_single_run_that_never_gets_past_429_is_skipped_not_failed(tmp_path, monkeypatch):
    import pytest

    import flora_nb as fnb
    from flora_nb import _engine

    monkeypatch.setattr(_engine, "RATE_LIMIT_PATIENCE", 0.0)  # give up at once (default: 60 s)
    with Flora.simulated(speed=100.0, max_retries=0, ledger_path=tmp_path / "l.sqlite") as fl:
        fl.technique("tech_a1poster"), fl.workspace_id
        fl.simulator.faults = Faults(rate_limit=0.01)  # one request now, the next in 100 s
        first = fl.run("tech_a1poster", {"prompt": "in"})
        with pytest.raises(fnb.RateLimitError):
            fl.run("tech_a1poster", {"prompt": "not now"})
        frame = fl.runs()
        refused = frame[frame["input.prompt"] == "not now"].iloc[0]
        assert (refused["status"], refused["error_code"], refused["charged_cost"]) == ("skipped", "rate_limited", 0.0)
        assert first.id is not None and fl.simulator.stats()["runs_created"] == 1

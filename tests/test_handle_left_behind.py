"""Two kernels on one ledger: a start one kernel lost is bound by the other at the moment the first
gives up on it. No start leaves the poller's care without its handle being brought up to date."""

from __future__ import annotations

from flora_nb import Flora
from flora_nb._ledger import Ledger
from flora_nb._states import LOST, STARTING


def test_give_up_on_a_start_another_kernel_bound_brings_the_handle_up_to_date(tmp_path):
    path = tmp_path / "l.sqlite"
    with Flora.simulated(speed=50.0, ledger_path=path, poll_interval=(0.02, 0.05)) as fl:
        tech = fl.technique("tech_a1poster")
        (run,) = fl.engine.queue(tech, fl.engine.catalog.workspace_id, [{"inputs": {"prompt": "left"}}])
        fl.engine.update(run, status=STARTING, error_code=LOST, window_low=1.0, window_high=2.0)
        real = fl.run(tech.technique_id, {"prompt": "other"}).wait(30)  # a run FLORA made, for kernel B to bind
        other = Ledger(path)  # kernel B: binds kernel A's lost start and sees it finish
        try:
            other.update(run.local_id, note="reconciled", status="completed", error_code=None, charged_cost=0.04,
                         run_id=real.id + "-b")
        finally:
            other.close()
        assert run.status == STARTING  # kernel A's handle has not heard of it yet
        fl.engine.give_up(run)  # A's grace ends at that moment
        assert run.status == "completed" and run.id == real.id + "-b" and run.done

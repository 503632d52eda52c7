"""The start window: few starts of one technique out without an answer after a loss, so groups stay rare."""

from __future__ import annotations

import threading

from flora_nb import Flora
from flora_nb._window import INITIAL, PATIENCE, StartWindow
from flora_nb.sim import Faults, FloraSimulator
from tests.invariants import check
from tests.waiting import until

POSTER = "poster-studio"


def test_the_window_opens_with_answers_and_falls_to_one_after_a_loss():
    window = StartWindow()
    assert [window.take() for _ in range(INITIAL)] == [False] * INITIAL  # room at once
    for _ in range(INITIAL):
        window.answered()
    assert window.size == 2 * INITIAL and window.out == 0  # one more start per answer
    window.take()
    window.lost()
    assert window.size == 1 and window.out == 0
    for _ in range(1 + PATIENCE - 1):
        window.take(), window.answered()
    assert window.size == 1  # after a loss it opens only after a full window of answers and PATIENCE more
    window.take(), window.answered()
    assert window.size == 2


def test_a_start_waits_for_room_and_a_shrink_holds_the_next_one():
    window = StartWindow(initial=1)
    assert window.take() is False
    window.shrink()  # the first start's attempt went unanswered: nothing more goes out
    taken = threading.Event()
    waiter = threading.Thread(target=lambda: (window.take(), taken.set()))
    waiter.start()
    assert not taken.wait(0.3)  # no room: the second start waits (a bounded wait, not a timing claim)
    window.lost()
    assert taken.wait(10)
    waiter.join(10)
    assert window.take(stop=lambda: True) is None  # a closed session takes nothing


def test_forty_prompts_with_forty_percent_of_answers_lost_rarely_share_a_group(tmp_path):
    # Before the window: 10 to 15 of these 40 rows ended in a group whose inputs differ.
    with FloraSimulator(speed=50.0, seed=5, faults=Faults(drop_rate=0.4)) as sim:
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=tmp_path / "l.sqlite",
                   poll_interval=(0.02, 0.05), reconcile_grace=1.0, confirm_above=None) as fl:
            sweep = fl.sweep(POSTER, grid={"prompt": [f"e{i:02d}" for i in range(40)]}, max_concurrency=40)
            sweep.wait(180)
            sim.faults = Faults()
            fl.resume()
            until(lambda: all(r.done and (r.charged_cost is not None or r.status == "skipped")
                              for r in fl.engine.tracked_runs()), 60, "every run to be final", fail=False)
            rows = fl.ledger.rows(fl.endpoint)
        stats = sim.stats()
        report = check(tmp_path / "l.sqlite", sim.run_records(), stats)
    mixed = [r.local_id for r in rows if (r.pairing or "").startswith("unknown") and "inputs differ" in r.pairing]
    assert stats["drops"] >= 10 and len(rows) == 40
    assert report.ok, report  # every row presented as exact carries the run its own inputs made
    assert len(mixed) <= 4, f"{len(mixed)} of 40 rows in groups of unequal inputs: {mixed}"


def test_a_row_bound_in_a_group_of_unequal_inputs_is_marked_wherever_its_outputs_show(tmp_path):
    import dataclasses

    from flora_nb._display import RunPanel, _caption

    with Flora.simulated(speed=100.0, ledger_path=tmp_path / "l.sqlite") as fl:
        run = fl.run(POSTER, prompt="fox").wait(60)
        assert not run.pairing_doubtful and "flora-doubt" not in RunPanel(run).render()
        doubtful = "unknown among local ids 1,2 (inputs differ: this row's run may carry another row's inputs)"
        row = run.snapshot
        run.apply_row(dataclasses.replace(row, pairing=doubtful, updated_at=row.updated_at + 1))
        assert run.pairing_doubtful
        assert "flora-doubt" in RunPanel(run).render() and "another start" in RunPanel(run).render()
        assert "may be another variation" in _caption(run, ["prompt"]).value
        same = "unknown among local ids 1,2 (same inputs: which run id went with which start is unknown)"
        run.apply_row(dataclasses.replace(row, pairing=same, updated_at=row.updated_at + 2))
        assert not run.pairing_doubtful  # equal inputs: the outputs are right whichever run it is


def test_a_start_left_over_in_a_group_is_never_told_to_pay_again():
    from flora_nb._engine import _resolution
    from flora_nb._matching import Binding

    grouped = _resolution(None, Binding(3, None, group=(3, 4), same_inputs=False), None, None)
    assert grouped["status"] == "skipped" and "never received" not in grouped["error_message"]
    assert "not known" in grouped["error_message"] and "3, 4" in grouped["error_message"]
    assert "run it again" not in grouped["error_message"] and "call fl.run" not in grouped["error_message"]
    exact = _resolution(None, Binding(5, None), None, None)
    assert "never received" in exact["error_message"]  # proved: the only start that could have made a run


def test_frames_carry_the_pairing_and_compare_leaves_doubtful_rows_out(tmp_path):
    with Flora.simulated(speed=100.0, ledger_path=tmp_path / "l.sqlite") as fl:
        sweep = fl.sweep(POSTER, grid={"prompt": ["a", "b", "c"]}).wait(60)
        doubtful = "unknown among local ids 1,2 (inputs differ: this row's run may carry another row's inputs)"
        fl.ledger.update(sweep.runs[0].local_id, pairing=doubtful)
        fl.ledger.update(sweep.runs[1].local_id, pairing="exact")
        frame = fl.runs()
        assert list(frame["outputs_doubtful"]) == [True, False, False]
        assert frame["pairing"].iloc[1] == "exact" and frame["pairing"].isna().iloc[2]
        compared = sweep.compare(values="charged_cost")
        assert "a" not in compared.index and {"b", "c"} <= set(compared.index)  # never shown as a's own

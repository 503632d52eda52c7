"""Cost figures never say $0 for money still to come (Money safety, item 8).

FLORA reports ``charged_cost`` late: a run can be completed with its charge unknown (NaN in the
ledger). The cost table counts such charges (``pending_charges``), keeps their estimate in what may
still be charged, and ``%flora costs`` and the run panels say "pending" where a sum or a cell would
otherwise read $0 or silently leave them out. The simulator makes the late charges
(``FloraSimulator.cost_lag``), and ``%flora connect --sim`` keeps the persisted account's balance
unless ``--credits`` is given.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

import flora_nb as fnb
from flora_nb._frames import STATUSES, cost_table, money_table
from flora_nb._look import charged_so_far, run_cost, usd
from flora_nb._magic import FloraMagics
from flora_nb.sim import Faults, FloraSimulator
from tests.waiting import until

POSTER, JINGLE = "poster-studio", "jingle-writer"
MONEY = ["charged_usd", "open_estimate_usd", "usd_per_completed"]


@pytest.fixture
def shell():
    shell = InteractiveShell.instance()
    shell.register_magics(FloraMagics(shell=shell))
    return shell


def _done(fl: fnb.Flora, technique: str, prompt: str) -> fnb.Run:
    run = fl.run(technique, {"prompt": prompt, **({"style": "jazz"} if technique == JINGLE else {})}).wait(30)
    assert run.status == "completed"
    return run


def test_late_charges_read_pending_in_the_costs_and_the_panels_never_zero(tmp_path, shell):
    with fnb.Flora.simulated(speed=100.0, ledger_path=tmp_path / "l.sqlite") as fl:
        fnb.session(fl)
        known = _done(fl, JINGLE, "sea")
        until(lambda: fl.runs()["charged_cost"].notna().all(), what="the first charge to be known")
        fl.simulator.cost_lag = 3600.0  # from now on FLORA reports every charge an hour late
        late = [_done(fl, JINGLE, "city"), _done(fl, POSTER, "a"), _done(fl, POSTER, "b")]
        assert [r.charged_cost for r in late] == [None, None, None]
        assert fl.runs()["charged_cost"].isna().sum() == 3  # the raw figures stay NaN

        costs = fl.costs()
        assert costs["pending_charges"].tolist() == [1, 2, 3]  # jingle, poster, total
        assert costs.loc["Jingle Writer", "charged_usd"] == pytest.approx(known.charged_cost)
        assert math.isnan(costs.loc["Poster Studio", "charged_usd"])
        assert costs.loc["Poster Studio", "open_estimate_usd"] == pytest.approx(2 * late[1].estimated_cost)
        assert costs["usd_per_completed"].isna().all()  # a share of a sum that is not all in yet
        assert fl.costs(detail=True)["cost_per_completed_usd"].isna().all()

        shown = money_table(shell.run_line_magic("flora", "costs"))
        assert shown.loc["Poster Studio", "charged_usd"] == "2 pending"
        assert shown.loc["Jingle Writer", "charged_usd"] == f"{usd(known.charged_cost)} + 1 pending"
        assert shown.loc["total", "charged_usd"].endswith("+ 3 pending")
        assert set(shown["usd_per_completed"]) == {"pending"}
        assert not any(cell.startswith("$0.00") for column in MONEY for cell in shown[column])

        assert run_cost(late[1]) == "charge pending (est. $0.04)" and run_cost(known).startswith("$")
        assert charged_so_far(known.charged_cost, 3).endswith(" + 3 pending")

        fl.simulator.cost_lag = 0.0  # the charges come in
        until(lambda: fl.runs()["charged_cost"].notna().all(), what="every charge to be known")
        settled = fl.costs()
        assert settled["pending_charges"].tolist() == [0, 0, 0] and settled["usd_per_completed"].notna().all()
        assert settled.loc["total", "open_estimate_usd"] == 0.0
        assert settled.loc["total", "charged_usd"] == pytest.approx(fl.simulator.stats()["total_charged"])
        assert not any("pending" in cell for cell in money_table(settled)["charged_usd"])


def _frame(rows: list[tuple[str, str, float, float | None]]) -> pd.DataFrame:
    """A runs frame with what the cost table reads: technique, status, estimate, charge (None: unknown)."""
    return pd.DataFrame({
        "technique_name": [r[0] for r in rows],
        "status": pd.Categorical([r[1] for r in rows], categories=STATUSES),
        "estimated_cost": [r[2] for r in rows],
        "charged_cost": [math.nan if r[3] is None else r[3] for r in rows],
        "run_seconds": [1.0] * len(rows), "reused_from": pd.array([None] * len(rows), dtype="string"),
    })


def test_a_pending_refund_and_a_run_in_flight_are_not_money_charged():
    frame = _frame([("T", "failed", 0.5, None), ("T", "running", 0.5, None), ("U", "skipped", 0.5, 0.0)])
    table = cost_table(frame, "technique_name")
    assert table.loc["T", "pending_charges"] == 1 and table.loc["T", "open_estimate_usd"] == 0.5  # the run in flight
    shown = money_table(table)
    assert shown.loc["T", "charged_usd"] == "1 pending" and shown.loc["T", "usd_per_completed"] == "-"
    assert shown.loc["U", "charged_usd"] == "$0.00" and shown.loc["U", "usd_per_completed"] == "-"


def test_connect_sim_keeps_the_persisted_balance_unless_credits_is_given(tmp_path, monkeypatch, shell):
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    monkeypatch.delenv("FLORA_NB_SIM_PERSIST", raising=False)  # the account is kept in $FLORA_NB_HOME/sim

    def connect(options: str) -> fnb.Flora:
        return shell.run_line_magic("flora", f"connect --sim --speed 100 {options}")

    def balance(fl: fnb.Flora) -> float:
        return fl.simulator.stats()["credits_remaining"]

    fl = connect("--credits 1")
    _done(fl, POSTER, "one")
    assert balance(fl) == pytest.approx(0.96)
    fl = connect("")
    assert balance(fl) == pytest.approx(0.96) and fl.simulator.faults.credits == 1.0  # kept, not reset
    fl = connect("--seed 3 --latency 0")  # other simulator options leave the balance alone too
    assert balance(fl) == pytest.approx(0.96)
    fl = connect("--credits 1")  # the same value as before sets it again: only --credits sets it
    assert balance(fl) == pytest.approx(1.0)
    fl = connect("--credits 0.05")
    _done(fl, POSTER, "two")
    with pytest.raises(fnb.InsufficientCreditsError):
        _done(fl, POSTER, "three")
    fl = connect("")
    assert balance(fl) == pytest.approx(0.01)
    fl.close()


def test_a_simulator_kept_in_a_file_sets_the_balance_only_when_credits_is_given(tmp_path):
    state = tmp_path / "acct.json"
    with FloraSimulator(speed=100.0, faults=Faults(credits=2.0), state_path=state):
        pass
    with FloraSimulator(speed=100.0, state_path=state) as kept:
        assert kept.stats()["credits_remaining"] == 2.0 and kept.faults.credits == 2.0
    with FloraSimulator(speed=100.0, faults=Faults(credits=0.5), state_path=state) as reset:
        assert reset.stats()["credits_remaining"] == 0.5
    with FloraSimulator(speed=100.0, faults=Faults(latency=0.0), state_path=state) as again:
        assert again.stats()["credits_remaining"] == 0.5
    with pytest.raises(ValueError, match="cost_lag"):
        FloraSimulator().cost_lag = math.nan


def test_cards_and_panels_say_pending_not_zero_for_charges_still_to_come(tmp_path):
    from flora_nb._display import SweepPanel

    with fnb.Flora.simulated(speed=100.0, cost_lag=600.0, ledger_path=tmp_path / "l.sqlite") as fl:  # charges come late
        sweep = fl.sweep("poster-studio", grid={"prompt": ["a", "b"]}).wait(60)
        assert all(r.charged_cost is None for r in sweep.runs) and sweep.pending_charges == 2
        assert "2 charges pending spent" in SweepPanel(sweep).render()
        assert "2 charges pending" in dict(sweep._summary_rows())["spent"]
        assert fl.status()["pending_charges"] == 2 and "2 charges pending of simulated money" in fl._repr_html_()

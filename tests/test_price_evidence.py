"""A budget holds whatever the listed price: the highest charge seen, one run at a time until one is known."""

from __future__ import annotations

import pytest

import flora_nb as fnb
from flora_nb import Flora


def _free_but_charging(listed) -> dict:
    return {"technique_id": "tech_free", "name": "Listed Free", "description": "x", "run_cost": listed, "charge": 0.10,
            "inputs": [{"id": "prompt", "name": "Prompt", "type": "text"}],
            "outputs": [{"id": "image", "name": "Image", "type": "imageUrl"}], "duration_seconds": 1}


@pytest.mark.parametrize("where", ["session", "sweep"])
def test_a_technique_listed_at_zero_that_charges_never_overruns_a_budget(where, tmp_path):
    # Before: 12 runs started against $1.00 and $1.20 was charged (nothing was held for a $0 price).
    session_budget = 1.0 if where == "session" else None
    with Flora.simulated(speed=100.0, catalog=[_free_but_charging(0.0)], ledger_path=tmp_path / "l.sqlite",
                         budget=session_budget) as fl:
        sweep = fl.sweep("tech_free", grid={"prompt": [f"p{i}" for i in range(12)]}, max_concurrency=6,
                         budget=1.0 if where == "sweep" else None)
        sweep.wait(120)
        charged = fl.simulator.stats()["total_charged"]
        assert charged <= 1.0 + 1e-9, f"${charged:.2f} charged against a $1.00 budget"
        assert charged >= 0.9 - 1e-9  # the budget is still used: 9 or 10 runs of $0.10
        assert fl.runs()["charged_cost"].sum() == pytest.approx(charged)
        skipped = [r for r in sweep.runs if r.status == "skipped"]
        assert skipped and all(r.error_code == "budget" for r in skipped)


def test_the_highest_charge_seen_is_held_for_every_later_run(tmp_path):
    with Flora.simulated(speed=100.0, catalog=[_free_but_charging(0.0)], ledger_path=tmp_path / "l.sqlite") as fl:
        fl.run("tech_free", prompt="first").wait(60)
        until_charged = fl.find_run(fl.runs()["run_id"].iloc[0])
        assert until_charged is not None and until_charged.charged_cost == pytest.approx(0.10)
        assert fl.reserve("tech_free", 0.0) == pytest.approx(0.10)  # not $0: FLORA charged $0.10 before
        fl.budget = 0.25
        fl.run("tech_free", prompt="second")  # $0.10 charged + $0.10 held: fits $0.25
        with pytest.raises(fnb.BudgetExceededError, match=r"holds \$0\.10"):
            fl.run("tech_free", prompt="third")  # another $0.10 would be $0.30
        assert fl.simulator.stats()["runs_created"] == 2


def test_a_technique_with_no_price_and_a_budget_is_refused_clearly(tmp_path):
    with Flora.simulated(speed=100.0, catalog=[_free_but_charging(None)], ledger_path=tmp_path / "l.sqlite",
                         budget=1.0) as fl:
        with pytest.raises(fnb.InputError, match="no known price"):
            fl.run("tech_free", prompt="a")
        assert fl.simulator.stats()["runs_created"] == 0

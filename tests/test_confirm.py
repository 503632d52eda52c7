"""Big spends ask first: confirm_above (default $10) in Python, the environment and the form."""

from __future__ import annotations

import tracemalloc

import pytest

import flora_nb as fnb
from flora_nb import Flora

POSTER = "poster-studio"  # $0.04 a run on the simulator


@pytest.fixture
def fl(tmp_path, monkeypatch):
    monkeypatch.delenv("FLORA_NB_CONFIRM_ABOVE", raising=False)  # the default, as a new user has it
    with Flora.simulated(speed=100.0, ledger_path=tmp_path / "l.sqlite") as session:
        session.simulator.reset_stats()
        yield session


def _sent(fl: Flora) -> int:
    stats = fl.simulator.stats()
    return stats["runs_created"] + stats["requests_by_route"].get("POST /runs/technique", 0)


def test_a_10000_variation_sweep_asks_first_and_sends_nothing(fl):
    assert fl.confirm_above == 10.0
    with pytest.raises(fnb.ConfirmationRequired) as asked:
        fl.sweep(POSTER, grid={"prompt": [f"p{i}" for i in range(100)], "style": [f"s{j}" for j in range(100)]})
    err = asked.value
    assert isinstance(err, fnb.FloraError) and err.runs == 10_000 and err.price == pytest.approx(400.0)
    text = str(err)
    assert "10,000 runs" in text and "$400.00" in text and "confirm=True" in text and "--yes" in text
    assert _sent(fl) == 0 and fl.runs().empty and fl.sweeps().empty


def test_confirm_true_goes_on_and_a_small_sweep_never_asks(fl):
    sweep = fl.sweep(POSTER, grid={"prompt": [f"p{i}" for i in range(3)]})  # $0.12: no question
    assert len(sweep.wait(60).runs) == 3
    big = fl.sweep(POSTER, grid={"prompt": [f"q{i}" for i in range(260)]}, max_concurrency=1, confirm=True)  # $10.40
    big.stop()
    assert fl.simulator.stats()["runs_created"] >= 3


def test_a_single_run_above_the_threshold_asks(fl):
    fl.confirm_above = 0.01
    with pytest.raises(fnb.ConfirmationRequired, match=r"1 run of Poster Studio .* \$0\.04"):
        fl.run(POSTER, prompt="fox")
    assert _sent(fl) == 0
    run = fl.run(POSTER, prompt="fox", confirm=True).wait(60)
    assert run.status == "completed" and fl.simulator.stats()["runs_created"] == 1
    fl.confirm_above = None  # never asks
    fl.run(POSTER, prompt="owl").wait(60)
    with pytest.raises(fnb.InputError, match="confirm_above"):
        fl.confirm_above = -1


@pytest.mark.parametrize("env, expected", [("5", 5.0), ("none", None), ("", 10.0)])
def test_the_environment_sets_the_threshold(env, expected, monkeypatch, tmp_path):
    monkeypatch.setenv("FLORA_NB_CONFIRM_ABOVE", env)
    with Flora.simulated(ledger_path=tmp_path / "l.sqlite") as fl:
        assert fl.confirm_above == expected
    with Flora.simulated(ledger_path=tmp_path / "m.sqlite", confirm_above=2) as fl:
        assert fl.confirm_above == 2.0  # an argument wins


def test_a_bad_environment_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("FLORA_NB_CONFIRM_ABOVE", "lots")
    with pytest.raises(fnb.InputError, match="FLORA_NB_CONFIRM_ABOVE must be a number of USD"):
        Flora.simulated()


def test_a_million_variations_are_priced_and_refused_without_building_them(fl):
    grid = {"prompt": [f"p{i}" for i in range(1000)], "style": [f"s{i}" for i in range(1000)]}
    tracemalloc.start()
    try:
        with pytest.raises(fnb.ConfirmationRequired, match="1,000,000 runs"):
            fl.sweep(POSTER, grid=grid)
        with pytest.raises(fnb.BudgetExceededError):
            fl.sweep(POSTER, grid=grid, budget=1.0, confirm=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000, f"{peak / 1e6:.0f} MB traced: the variations were built"
    with pytest.raises(fnb.InputError, match="at most 1,000,000"):
        fl.sweep(POSTER, grid={"prompt": ["a", "b"]}, repeat=10**12, dry_run=True)
    assert _sent(fl) == 0


def test_the_form_shows_the_price_on_a_confirm_button(fl):
    from tests.test_form import FakeClock

    clock = FakeClock()
    fl.confirm_above = 0.10
    form = fl.form(POSTER, clock=clock)
    form.vary("prompt", ["a", "b", "c"])  # 3 x $0.04 = $0.12
    form.run_button.click()
    assert _sent(fl) == 0 and "Confirm" in form.run_button.description and "$0.12" in form.run_button.description
    assert form.run_button.button_style == "warning" and "confirm_above" in form.message.value
    form.run_button.click()  # at once: a double click does not confirm
    assert _sent(fl) == 0 and "double click" in form.message.value
    clock.now += 2
    form.vary("prompt", ["a", "b"])  # $0.08: the question is taken back, and this one needs none
    assert form.run_button.description == "Run 2 variations" and form.run_button.button_style == "primary"
    form.vary("prompt", ["a", "b", "c"])
    form.run_button.click()
    clock.now += 2
    form.run_button.click()  # the confirm click
    assert form.sweep is not None and len(form.sweep.wait(60).runs) == 3
    assert fl.simulator.stats()["runs_created"] == 3

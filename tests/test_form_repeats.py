"""Paying twice for the same thing is a choice in the form: a hint, "show it" or "run again"; and downloads."""

from __future__ import annotations

import pytest

from flora_nb import Flora
from tests.test_form import FakeClock

POSTER = "poster-studio"


@pytest.fixture
def fl(tmp_path):
    with Flora.simulated(speed=100.0, ledger_path=tmp_path / "l.sqlite") as session:
        yield session


def _buttons(form):
    return {b.description: b for row in form.repeat_hint.children for b in row.children if hasattr(b, "on_click")}


def test_inputs_that_already_ran_offer_the_earlier_run_before_paying_again(fl):
    earlier = fl.run(POSTER, prompt="fox").wait(60)
    clock = FakeClock()
    form = fl.form(POSTER, clock=clock)
    form.fields["prompt"].value = "fox"
    form.run_button.click()
    assert fl.simulator.stats()["runs_created"] == 1  # nothing was started
    hint = form.repeat_hint.children[0].children[0].value
    assert earlier.id in hint and "$0.04" in hint and "Nothing was started" in hint
    _buttons(form)["Show it"].click()  # the earlier run's panel, no spend
    assert fl.simulator.stats()["runs_created"] == 1 and earlier.id in form.panels.children[0].children[1].value
    form.run_button.click()
    _buttons(form)["Run again"].click()  # a choice: pays for a new one
    assert fl.simulator.stats()["runs_created"] == 2 and len(form.runs) == 1 and not form.repeat_hint.children
    form.fields["prompt"].value = "owl"  # new inputs: no question
    clock.now += 5
    form.run_button.click()
    assert fl.simulator.stats()["runs_created"] == 3


def test_a_sweep_with_variations_that_already_ran_offers_reuse(fl):
    fl.run(POSTER, prompt="a").wait(60)
    form = fl.form(POSTER, clock=FakeClock())
    form.vary("prompt", ["a", "b"])
    form.run_button.click()
    assert "1 of 2 variations already completed" in form.repeat_hint.children[0].children[0].value
    _buttons(form)["Reuse them"].click()
    sweep = form.sweep.wait(60)
    assert fl.simulator.stats()["runs_created"] == 2  # only "b" was paid for
    assert sum(1 for r in sweep.runs if r.reused_from) == 1


def test_the_download_button_saves_the_forms_outputs(fl, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    form = fl.form(POSTER, clock=FakeClock())
    form.download_button.click()
    assert "Nothing to download yet" in form.message.value
    form.fields["prompt"].value = "fox"
    form.run_button.click()
    form.runs[0].wait(60)
    form.download_button.click()
    saved = list((tmp_path / "flora_outputs" / "poster-studio").iterdir())
    assert saved and all(p.stat().st_size > 0 for p in saved) and "Saved" in form.message.value

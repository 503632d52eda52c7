"""Money and time read as money and time in every frame a person reads (issue 21, item 6).

The frames keep their numbers (``fl.costs()["charged_usd"].sum()`` works, CSV and pickles hold floats);
their displays (text and Jupyter's HTML) show ``$0.04`` and ``0.1 s``, and a frame wider than
``display.max_columns`` shows the columns that matter and names the ones left out.
"""

from __future__ import annotations

import math
import pickle

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

import flora_nb as fnb
from flora_nb._frames import STATUSES, cost_table, money_table
from flora_nb._magic import FloraMagics

POSTER = "poster-studio"


@pytest.fixture(scope="module")
def fl(tmp_path_factory):
    """A session with a finished sweep of two poster runs and one jingle run ($0.04 each, known charges)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FLORA_NB_HOME", str(tmp_path_factory.mktemp("home")))
    session = fnb.Flora.simulated(speed=100, persist=False)
    sweep = session.sweep(POSTER, grid={"prompt": ["fox", "owl"]}, budget=1.0)
    sweep.wait(60)
    session.run("jingle-writer", {"prompt": "sea"}).wait(60)
    session.sweep_handle = sweep
    yield session
    session.close()
    mp.undo()


def _html(frame: pd.DataFrame) -> str:
    return frame._repr_html_()


def test_costs_show_money_and_keep_numbers(fl):
    costs = fl.costs()
    assert costs["charged_usd"].dtype == "float64" and costs["charged_usd"].iloc[:-1].sum() == pytest.approx(
        fl.simulator.stats()["total_charged"])
    text, page = repr(costs), _html(costs)
    for shown in (text, page):
        assert "$0.08" in shown and "$0.06" in shown and "$0.14" in shown, shown  # 2 posters, a jingle
        assert "0.080" not in shown and "0.14 " not in shown.replace("$0.14 ", "")
    assert costs.to_csv().count("$") == 0 and "0.08" in costs.to_csv()
    detail = fl.costs(detail=True)
    assert "+0.0%" in repr(detail) and " s" in repr(detail[["mean_run_seconds"]])
    assert "$0.04" in repr(fl.costs(by=["technique_name", "status"]))


def test_runs_show_money_and_seconds_and_stay_a_dataframe(fl):
    runs = fl.runs()
    assert isinstance(runs, pd.DataFrame) and runs["charged_cost"].dtype == "float64"
    text = repr(runs[["status", "charged_cost", "run_seconds"]])
    assert "$0.04" in text and " s" in text and "0.04 " not in text.replace("$0.04 ", "")
    # slices, copies, concatenation and arithmetic keep the display and the numbers
    both = pd.concat([runs.head(1), runs.tail(1)])  # a poster, the jingle
    assert "$0.06" in repr(both[["charged_cost"]]) and (both["charged_cost"] * 2).tolist() == [0.08, 0.12]
    assert "$0.04" in repr(runs.copy()[["charged_cost"]])
    loaded = pickle.loads(pickle.dumps(runs))  # a plain DataFrame: readable without flora_nb
    assert type(loaded) is pd.DataFrame
    pd.testing.assert_frame_equal(loaded, pd.DataFrame(runs))
    assert "$" not in runs.to_csv()


def test_sweeps_and_compare_show_money_and_time(fl):
    sweeps = fl.sweeps()
    assert sweeps["spent"].tolist() == [pytest.approx(0.08)] and sweeps["budget"].tolist() == [1.0]
    assert "$0.08" in repr(sweeps) and "$1.00" in repr(sweeps) and "$0.08" in _html(sweeps)
    sweep = fl.sweep_handle
    money = sweep.compare()
    assert money.loc["fox"].iloc[0] == pytest.approx(0.04) and "$0.04" in repr(money) and "$0.04" in _html(money)
    seconds = sweep.compare("run_seconds")
    assert seconds.to_numpy().dtype == "float64" and repr(seconds).count(" s") == 2
    counted = sweep.compare("charged_cost", aggfunc="count")  # a count of runs is no money
    assert "$" not in repr(counted)


def test_a_wide_frame_shows_the_columns_that_matter(fl):
    runs = fl.runs()
    assert len(runs.columns) > 20
    with pd.option_context("display.max_columns", 20):
        for shown in (repr(runs), _html(runs)):
            for column in ("status", "input.prompt", "charged_cost", "run_seconds", "error_code"):
                assert column in shown, (column, shown)
            hidden = len(runs.columns) - 20
            assert f"{hidden} more columns not shown: " in shown and "..." not in shown.split("more columns")[0][-400:]
    with pd.option_context("display.max_columns", None):
        assert "not shown" not in repr(runs)


def test_pending_charges_read_pending_in_the_display_as_in_money_table():
    frame = pd.DataFrame({
        "technique_name": ["<b>T</b>", "<b>T</b>", "U"],
        "status": pd.Categorical(["completed", "running", "completed"], categories=STATUSES),
        "estimated_cost": [0.5, 0.5, 0.04], "charged_cost": [math.nan, math.nan, 0.04],
        "run_seconds": [185.0, math.nan, 4.2], "reused_from": pd.array([None] * 3, dtype="string"),
    })
    table = cost_table(frame, "technique_name")
    assert math.isnan(table.loc["<b>T</b>", "charged_usd"])  # the numbers stay numbers
    shown = money_table(table)
    assert shown.loc["<b>T</b>", "charged_usd"] == "1 pending" and shown.loc["U", "charged_usd"] == "$0.04"
    assert shown.loc["total", "charged_usd"] == "$0.04 + 1 pending"
    text, page = repr(table), _html(table)
    for cell in ("1 pending", "$0.04 + 1 pending", "$1.00"):  # $1.00 still to come for T
        assert cell in text and cell in page, cell
    assert "<b>T</b>" not in page and "&lt;b&gt;T&lt;/b&gt;" in page  # escaped


def test_magic_costs_sweeps_and_limits_are_numbers_shown_as_money(tmp_path, monkeypatch):
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    shell = InteractiveShell.instance()
    magics = FloraMagics(shell=shell)
    shell.register_magics(magics)

    def magic(line: str):
        return shell.run_line_magic("flora", line)

    magic("connect --sim --speed 100 --no-persist")
    try:
        magic(f"sweep {POSTER} prompt=[fox,owl]").wait(60)
        costs = magic("costs")
        assert costs.loc["total", "charged_usd"] == pytest.approx(0.08) and "$0.08" in repr(costs)
        assert costs["charged_usd"].iloc[:-1].sum() == pytest.approx(0.08)
        sweeps = magic("sweeps")
        assert sweeps["spent"].sum() == pytest.approx(0.08) and "$0.08" in repr(sweeps)
        magic("limit 5 --period day")
        limits = magic("limits")
        assert limits["limit"].tolist() == [5.0] and "$5.00" in repr(limits) and "$5.00" in _html(limits)
    finally:
        magics.session.close()

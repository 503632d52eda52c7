"""Status cards in the user's words (issue 21, items 6 and 7): money and time, the connect card, fl.status()."""

from __future__ import annotations

import math
import re

import pytest
from IPython.core.interactiveshell import InteractiveShell

import flora_nb as fnb
from flora_nb._look import duration, usd
from flora_nb.sim import FloraSimulator

POSTER = "poster-studio"
# What a person should never read on a card: Python spellings, the ledger's keys, the poller's insides.
JARGON = re.compile(r"\bNone\b|\bTrue\b|\bFalse\b|sim://|endpoint|poller|cycles|batch|reconciled|workspace_id|"
                    r"[A-Z][a-z]+Error\b|\?$", re.MULTILINE)


def shown(obj: object) -> tuple[str, str]:
    """What Jupyter shows for ``obj``: its text and its HTML (as IPython's formatter builds them)."""
    data = InteractiveShell.instance().display_formatter.format(obj)[0]
    return data["text/plain"], data.get("text/html", "")


def test_money_and_time_read_as_money_and_time():
    assert [usd(v) for v in (1.2, 0.04, 1250.0, 0.0035, 0.0, None)] == [
        "$1.20", "$0.04", "$1,250.00", "$0.0035", "$0", "cost unknown"]
    assert [duration(v) for v in (1.23, 38.0, 185.0, 600.0, 3780.0)] == [
        "1.2 s", "38 s", "3 min 05 s", "10 min", "1 h 03 min"]
    assert [duration(v) for v in (None, -1.0, math.nan, math.inf)] == ["", "", "", ""]  # unknown: nothing


def test_the_connect_card_speaks_plain_words(tmp_path, monkeypatch):
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    with fnb.Flora.simulated(speed=100.0, persist=True, ledger_path=tmp_path / "l.sqlite") as fl:  # sim://default
        fl.run(POSTER, {"prompt": "fox"}).wait(30)
        text, card = shown(fl)
        rows = dict(line.strip().split(": ", 1) for line in text.splitlines())
        assert rows["connected to"] == "the built-in simulator (offline, no money spent)"
        assert rows["workspace"] == "ws_sim_demo" and rows["balance"] == "unlimited simulated credit"
        assert rows["spent"] == "$0.04 of simulated money" and rows["runs"] == "none in progress"
        assert rows["updates"] == "running in the background" and rows["ledger"] == str(fl.ledger.path)
        assert not JARGON.search(text), text
        assert card.startswith("<table class='flora-status'>") and "$0.04 of simulated money" in card
        assert fl.status()["spent_usd"] == pytest.approx(0.04)  # the data keeps the raw number
        assert repr(fl) == "<Flora on the built-in simulator · workspace ws_sim_demo · runs none in progress>"


def test_a_budget_and_a_simulated_balance_show_as_money(tmp_path):
    from flora_nb.sim import Faults

    with fnb.Flora.simulated(speed=100.0, faults=Faults(credits=2.5), budget=1.5, persist=False,
                             ledger_path=tmp_path / "l.sqlite") as fl:
        fl.run(POSTER, {"prompt": "fox"}).wait(30)
        rows = dict(fl.status().rows())
        assert rows["balance"] == "$2.46 of simulated credit" and rows["budget"] == "$1.50 for this session"
        assert rows["connected to"] == "the built-in simulator, a throwaway account (offline, no money spent)"


def test_status_never_shows_workspace_none(tmp_path):
    spaces = ["ws_sim_demo", "ws_sim_private"]
    with FloraSimulator(speed=100.0, key_workspaces={"sk_sim_demo": spaces}) as sim:
        fl = fnb.Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=tmp_path / "l.sqlite")
        try:
            before = sim.stats()["requests_by_route"].get("GET /workspaces", 0)
            status = fl.status()  # the data: no request is sent for it
            assert sim.stats()["requests_by_route"].get("GET /workspaces", 0) == before
            text, card = shown(status)  # fl.status() in a cell shows the card, in words
            assert "not chosen yet: your key sees several workspaces; set FLORA_WORKSPACE_ID" in text
            assert "not chosen yet" in card and not JARGON.search(text), text
            assert "FLORA at " + sim.base_url in text and status["spent_usd"] == 0.0
            assert "workspace" not in repr(fl) and "?" not in repr(fl)
        finally:
            fl.close()
        text, card = shown(fl)  # a closed session still shows its card (it raised a ledger error before)
        assert "not chosen (the session is closed)" in text and "stopped (the session is closed)" in text
        assert not JARGON.search(text) and repr(fl).endswith("· closed>")


def test_a_run_reads_as_money_and_time(tmp_path):
    with fnb.Flora.simulated(speed=100.0, persist=False, ledger_path=tmp_path / "l.sqlite") as fl:
        run = fl.run(POSTER, {"prompt": "fox"}).wait(30)
        assert re.fullmatch(rf"<Run {run.id} Poster Studio · completed · \d+\.\d s · \$0\.04>", repr(run)), repr(run)
        line = run._repr_html_()
        assert "completed" in line and "$0.04" in line and "$0.0400" not in line and run.id in line

"""Help where people look for it, and unknown values refused naming what is allowed (issue 21, items 3 and 7).

Through a real InteractiveShell against the simulator: ``%flora help`` lists every command on one line,
each command's ``-h`` gives every option a help text and an example, ``%flora?`` still shows the list;
an unknown status, column, sweep, technique or grouping is an error naming what is allowed (a one-line
``UsageError`` in the magic, ``InputError`` in Python), never an empty table; magic errors carry no
Python class names.
"""

from __future__ import annotations

import argparse
import re

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import flora_nb as fnb
from flora_nb._magic import FloraMagics
from flora_nb._magic_parse import COMMANDS, SUMMARIES, _parsers

POSTER = "poster-studio"
STATUSES = "queued, starting, pending, running, completed, failed, skipped"


@pytest.fixture
def ip(tmp_path, monkeypatch):
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    shell = InteractiveShell.instance()  # one per process: %config another test left must not reach this one
    shell.config.FloraMagics.pop("confirm_above", None)
    magics = FloraMagics(shell=shell)
    shell.register_magics(magics)
    shell.run_line_magic("flora", "connect --sim --speed 100 --no-persist")
    yield shell
    shell.config.FloraMagics.pop("confirm_above", None)
    if magics.session is not None:
        magics.session.close()
    for name in [n for n in shell.user_ns if n.startswith("h_")]:
        del shell.user_ns[name]


def magic(shell: InteractiveShell, line: str):
    return shell.run_line_magic("flora", line)


# -- %flora help: one line per command --------------------------------------------------------------


@pytest.mark.parametrize("line", ["help", "--help", "-h"])
def test_help_lists_every_command_on_a_line_of_its_own(ip, capsys, line):
    assert magic(ip, line) is None
    out = capsys.readouterr().out
    listed = out.split("Commands", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    assert len(listed) == len(COMMANDS) + 1, listed  # every command, and help itself
    for name in COMMANDS:
        [row] = [r for r in listed if re.match(r"^\s+%flora {2,}" if name == "status" else rf"^\s+%flora {name}(\s|$)", r)]
        words = row.strip()[len(next(u for n, u, _ in SUMMARIES if n == name)):].split()
        assert len(words) >= 4, (name, row)  # what it does, in words
        assert len(row) <= 100, row
    assert "Options that spend money" in out and "Examples:" in out


def test_percent_flora_question_mark_shows_the_command_list(ip, capsys):
    ip.run_cell("%flora?").raise_error()
    out = capsys.readouterr().out
    assert "Commands (each has its options and examples" in out
    assert re.search(r"^\s+%flora costs \[--by COL\]", out, re.M) and re.search(r"^\s+%flora limits\s", out, re.M)


# -- each command's -h: every option a help text and an example ------------------------------------


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_of_every_command_has_help_and_an_example(ip, capsys, name):
    magic(ip, f"{name} -h")
    own = capsys.readouterr().out
    magic(ip, f"help {name}")
    assert capsys.readouterr().out == own
    assert own.startswith(f"usage: %flora {name}") and "%%" not in own.replace("%%flora run", "")
    examples = own.split("\nExamples:\n", 1)[1]
    assert re.search(rf"^  %%?flora {name}\b" if name != "status" else r"^  %flora$", examples, re.M), examples
    parser: argparse.ArgumentParser = _parsers()[name]
    for action in parser._actions:
        assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
        flags = [f for f in action.option_strings if f not in ("-h", "--help")]
        if flags:
            assert any(re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", examples) for f in flags), (name, flags)


def test_connect_help_names_the_simulated_account(ip, capsys):
    magic(ip, "connect -h")
    out = " ".join(capsys.readouterr().out.split())
    assert "--account NAME the simulated account to use; each tutorial uses its own" in out


# -- unknown values: an error naming what is allowed, nothing sent -----------------------------------


@pytest.mark.parametrize("line, allowed", [
    ("runs --status bogus", f"--status takes one or more of {STATUSES}"),
    ("runs --status completed,bogus", f"--status takes one or more of {STATUSES}"),
    ("runs --columns status,nope", "no column nope in the runs table; choose from: run_id, sweep_id"),
    ("runs --sweep swp_nope", "no sweep swp_nope in the ledger; %flora sweeps lists them"),
    ("runs --technique postr-studio", "No technique 'postr-studio'.*did you mean poster-studio"),
    ("costs --by nope", "cannot group costs by nope; choose from: sweep_id, technique_id, technique_name"),
    ("costs --by technique_name,nope", "cannot group costs by nope; choose from:"),
    ("history --status bogus", "--status takes one of pending, running, completed, failed; got bogus"),
    ("limit 1 --period week", "--period takes one of day, month; got week"),
    ("connect --sim --account 'a b'", "--account takes a name of letters, digits, - or _"),
])
def test_an_unknown_value_is_refused_naming_what_is_allowed(ip, line, allowed):
    fl = fnb.session()
    magic(ip, f"run {POSTER} prompt=fox --wait")
    before = fl.simulator.stats()["requests_by_route"]
    with pytest.raises(UsageError, match=allowed) as refused:
        magic(ip, line)
    text = str(refused.value)
    assert "\n" not in text and text.startswith(f"%flora {line.split()[0]}: "), text
    assert "['" not in text and "None" not in text, text  # no Python spellings
    if not line.startswith(("runs --technique", "connect")):
        assert fl.simulator.stats()["requests_by_route"] == before  # refused before anything was asked
    assert fnb.session() is fl  # a refused connect keeps the session


def test_known_values_still_filter(ip):
    sweep = magic(ip, f"sweep {POSTER} prompt=[fox,owl]").wait(60)
    magic(ip, "run jingle-writer prompt=sea --wait")
    assert len(magic(ip, "runs --status completed,failed")) == 3
    assert set(magic(ip, f"runs --technique {POSTER}")["technique_name"]) == {"Poster Studio"}
    assert set(magic(ip, "runs --technique 'Jingle Writer'")["technique_name"]) == {"Jingle Writer"}
    shown = magic(ip, f"runs --sweep {sweep.sweep_id} --columns status,prompt,charged_cost")
    assert list(shown.columns) == ["status", "input.prompt", "charged_cost"] and len(shown) == 2
    assert list(magic(ip, "costs --by prompt").index) == ["fox", "owl", "sea", "total"]  # a bare input id


def test_python_refuses_unknown_statuses_groupings_and_compared_columns(ip):
    fl = fnb.session()
    sweep = fl.sweep(POSTER, grid={"prompt": ["fox", "owl"]}).wait(60)
    with pytest.raises(fnb.InputError, match=f"unknown status bogus; a run's status is one of: {STATUSES}"):
        fl.runs(status="bogus")
    with pytest.raises(fnb.InputError, match="unknown status done"):
        fl.runs(status=["completed", "done"])
    with pytest.raises(fnb.InputError, match="since must be a date or time"):
        fl.runs(since="last tuesday-ish")
    with pytest.raises(fnb.InputError, match="cannot group costs by nope; choose from: .*input.prompt"):
        fl.costs(by="nope")
    with pytest.raises(fnb.InputError, match="cannot group costs by nope"):
        sweep.costs(by=["input.prompt", "nope"])
    with pytest.raises(fnb.InputError, match="no column 'nope' to compare; .*input.prompt"):
        sweep.compare(values="nope")
    with pytest.raises(fnb.InputError, match="no column 'nope' to lay out as index; choose from: variation"):
        sweep.compare(index="nope")
    with pytest.raises(fnb.InputError, match="lay out as columns"):
        sweep.compare(columns=["status", "nope"])
    assert len(fl.runs(status=["completed"])) == 2 and list(sweep.compare(index="prompt").index) == ["fox", "owl"]
    with pytest.raises(fnb.InputError, match="no sweep swp_nope in the ledger; fl.sweeps"):
        fl.runs(sweep_id="swp_nope")
    with pytest.raises(fnb.NotFoundError, match="did you mean poster-studio"):
        fl.costs(technique="postr-studio")
    assert fl.runs(technique="jingle-writer").empty  # a technique FLORA has, with no runs yet: an empty table


# -- magic errors in the user's words ----------------------------------------------------------------


@pytest.mark.parametrize("line, lead", [
    ("run tech_nope prompt=x", "%flora run: 404 not_found"),
    (f"sweep {POSTER} prompt=[a,b,c] --budget 0.05", "%flora sweep: This sweep would cost"),
    ("form tech_nope", "%flora form: 404 not_found"),
])
def test_magic_errors_lead_with_the_command_not_a_class_name(ip, line, lead):
    with pytest.raises(UsageError) as refused:
        magic(ip, line)
    text = str(refused.value)
    assert text.startswith(lead), text
    assert not re.search(r"\b[A-Z]\w*(Error|Required|Exceeded)\b", text), text


def test_confirm_above_refusal_has_no_class_name(ip):
    ip.run_line_magic("config", "FloraMagics.confirm_above = 0.01")
    try:
        with pytest.raises(UsageError, match=r"^%flora run: Starting 1 run of Poster Studio.*add --yes") as refused:
            magic(ip, f"run {POSTER} prompt=fox")
        assert "ConfirmationRequired" not in str(refused.value) and "confirm=True" not in str(refused.value)
    finally:
        ip.run_line_magic("config", "FloraMagics.confirm_above = None")


# -- %flora connect --account NAME -------------------------------------------------------------------


def test_connect_account_gives_each_tutorial_its_own_runs(ip, tmp_path, monkeypatch):
    monkeypatch.delenv("FLORA_NB_SIM_PERSIST", raising=False)
    first = magic(ip, "connect --sim --speed 100 --account tutorial-01")
    assert first.endpoint == "sim://tutorial-01"
    magic(ip, f"run {POSTER} prompt=fox --wait")
    second = magic(ip, "connect --sim --speed 100 --account tutorial-02")
    assert second.endpoint == "sim://tutorial-02" and fnb.session() is second
    assert second.runs().empty and magic(ip, "runs").empty  # the first tutorial's run is not in this one
    assert len(second.simulator.run_records()) == 0
    with pytest.raises(UsageError, match="--account only with --sim"):
        magic(ip, "connect --account tutorial-03")
    assert fnb.session() is second


def test_magic_messages_carry_no_python_spellings(ip):
    with pytest.raises(UsageError) as refused:
        magic(ip, "sweep jingle-writer prompt=[a,b] style=[c] --zip")
    text = str(refused.value)
    assert "lengths; got 2 prompt values, 1 style value. Drop --zip" in text and "{" not in text, text
    with pytest.raises(UsageError, match=r"^%flora show: no run run_nope in the ledger.*%flora runs lists them"):
        magic(ip, "show run_nope")

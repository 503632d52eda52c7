"""The money-safety API in the %flora magic: confirmation, spend limits, stop, retries, paying twice.

Through a real InteractiveShell against the simulator over loopback; what was (not) sent is read
from the simulator's own counters. Each test fails on the magic as it was before these options:
no --yes / confirm_above setting, no %flora limit(s), two lines on stop, no --codes / %flora
failures, and a run whose inputs already completed started (and paid) again.
"""

from __future__ import annotations

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import flora_nb as fnb
from flora_nb._magic import FloraMagics, in_magic_terms
from flora_nb.sim import Faults
from flora_nb.sim._media import png
from tests.waiting import until

POSTER = "poster-studio"


@pytest.fixture
def ip(tmp_path, monkeypatch):
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    monkeypatch.delenv("FLORA_NB_CONFIRM_ABOVE", raising=False)
    shell = InteractiveShell.instance()  # one per process: %config another test left must not reach this one
    shell.config.FloraMagics.pop("confirm_above", None)
    magics = FloraMagics(shell=shell)
    shell.register_magics(magics)
    magic(shell, "connect --sim --speed 100")
    yield shell
    shell.config.FloraMagics.pop("confirm_above", None)  # %config lands in the shell's config: keep it to this test
    if magics.session is not None:
        magics.session.close()


def magic(shell: InteractiveShell, line: str, cell: str | None = None):
    return shell.run_cell_magic("flora", line, cell) if cell is not None else shell.run_line_magic("flora", line)


def sent(fl: fnb.Flora) -> tuple[int, dict[str, int], float]:
    """What the server saw that can cost money: runs created, POST requests, USD charged."""
    stats = fl.simulator.stats()
    posts = {route: n for route, n in stats["requests_by_route"].items() if route.startswith("POST")}
    return stats["runs_created"], posts, stats["total_charged"]


def lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line.strip()]


# -- 1. a big spend asks for --yes; confirm_above is a %config setting -----------------------------


def test_a_start_above_confirm_above_needs_yes_and_sends_nothing_without_it(ip):
    ip.run_line_magic("config", "FloraMagics.confirm_above = 0.05")
    fl = fnb.session()
    before = sent(fl)
    for line in ("run image-to-motion prompt=storm", f"sweep {POSTER} prompt=[fox,owl]"):  # $0.90, 2 x $0.04
        with pytest.raises(UsageError) as refused:
            magic(ip, line)
        text = str(refused.value)
        assert text.startswith(f"%flora {line.split()[0]}: Starting") and "Nothing was sent" in text, text
        assert "Confirmation" not in text and "Error" not in text, text  # no class names
        assert "add --yes" in text and "%config FloraMagics.confirm_above = USD (None never asks)" in text, text
        assert "confirm=True" not in text and "\n" not in text
    assert sent(fl) == before
    run = magic(ip, "run image-to-motion prompt=storm --yes --wait")
    sweep = magic(ip, f"sweep {POSTER} prompt=[fox,owl] --yes").wait(60)
    assert run.status == "completed" and sweep.counts == {"completed": 2}
    assert sent(fl)[0] == before[0] + 3


def test_confirm_above_reaches_every_session_the_magics_use_and_unset_leaves_the_sessions_own(ip, monkeypatch):
    monkeypatch.setenv("FLORA_NB_CONFIRM_ABOVE", "0.02")
    first = magic(ip, "connect --sim --speed 100")
    assert first.confirm_above == 0.02  # not set with %config: the session's own (here the environment's)
    ip.run_line_magic("config", "FloraMagics.confirm_above = None")  # None, the trait's value already: still applied
    assert first.confirm_above is None
    magic(ip, f"run {POSTER} prompt=fox --wait")  # $0.04 > the environment's $0.02, but never asks now
    ip.run_line_magic("config", "FloraMagics.confirm_above = 0.01")
    assert first.confirm_above == 0.01  # the open session, at once
    second = magic(ip, "connect --sim --speed 100")
    assert second is not first and second.confirm_above == 0.01  # and each session made later
    with pytest.raises(UsageError, match="^%flora run: Starting.*add --yes"):
        magic(ip, f"run {POSTER} prompt=owl")
    second.confirm_above = 1.0  # set in Python afterwards: holds until the setting is set again
    magic(ip, f"run {POSTER} prompt=owl --wait")
    assert second.confirm_above == 1.0
    ip.run_line_magic("config", "FloraMagics.confirm_above = -1")  # refused by the trait (%config reports it)
    assert second.confirm_above == 1.0


# -- 2. spend limits: %flora limit / %flora limits -------------------------------------------------


def test_limit_sets_and_removes_a_ledger_limit_and_limits_shows_money(ip, capsys):
    fl = fnb.session()
    magic(ip, f"limit 0.05 --technique {POSTER}")
    assert "Set the spend limit of $0.05 in all for poster-studio" in lines(capsys)[0]
    raw = fl.spend_limits()
    assert raw[["technique", "period", "limit"]].values.tolist() == [["tech_a1poster", "in all", 0.05]]
    magic(ip, f"run {POSTER} prompt=fox --wait")  # holds $0.05 until charged, then $0.04 spent
    before = sent(fl)
    with pytest.raises(UsageError) as refused:
        magic(ip, f"run {POSTER} prompt=owl")
    text = str(refused.value)
    assert text.startswith("%flora run: The spend limit") and "Nothing was sent" in text, text
    assert "%flora limits shows every limit; %flora limit USD changes one." in text and "fl." not in text, text
    assert sent(fl) == before
    table = magic(ip, "limits")
    assert list(table.columns) == ["technique", "period", "limit", "spent", "held", "left", "pending"]
    assert table["limit"].tolist() == [0.05] and 0 <= table["left"].iloc[0] < 0.05  # numbers, shown as money
    assert table["limit"].sum() == 0.05 and "$0.05" in repr(table) and "$0.05" in table._repr_html_()
    magic(ip, "limit 2 --period day")
    assert sorted(fl.spend_limits()["period"]) == ["day", "in all"]
    capsys.readouterr()
    assert magic(ip, f"limit none --technique {POSTER}")["period"].tolist() == ["day"]
    assert lines(capsys) == ["Removed the spend limit of $0.05 in all for poster-studio."]
    magic(ip, f"run {POSTER} prompt=owl --wait")  # no limit in the way now
    assert magic(ip, "limit none --period day") is None and fl.spend_limits().empty
    assert magic(ip, "limits") is None and "No spend limit is set" in lines(capsys)[-1]
    with pytest.raises(UsageError, match="no spend limit a month"):
        magic(ip, "limit none --period month")
    for line, says in [("limit 1 --period week", "--period takes one of day, month; got week"), ("limit -1", "number of USD >= 0"),
                       ("limit lots", "number of USD >= 0"), ("limits extra", "not expected")]:
        with pytest.raises(UsageError, match=says):
            magic(ip, line)


# -- 3. stop says in one line what it costs ---------------------------------------------------------


def test_stop_prints_one_line_per_sweep_saying_what_it_saves_and_what_still_runs(ip, capsys):
    magic(ip, "connect --sim --speed 1")  # a run takes seconds: still running when stopped
    first = magic(ip, f"sweep {POSTER} prompt=[a,b,c,d,e] --max-concurrency 1")
    second = magic(ip, "sweep jingle-writer prompt=[sea,city,fog] style=jazz --max-concurrency 1")
    for sweep in (first, second):
        until(lambda s=sweep: any(r.id for r in s.runs), what="a run of each sweep on FLORA")
    capsys.readouterr()
    magic(ip, f"stop {first.sweep_id}")
    said = lines(capsys)
    assert len(said) == 1, said  # was two: the sweep's own line, then the magic's
    magic(ip, f"stop {second.sweep_id} {first.sweep_id}")  # several at once: the second stop of the first says so
    said += lines(capsys)
    assert len(said) == 3 and said[2].startswith(f"Stopped launching sweep {first.sweep_id}: 4 variation"), said
    for line, sweep, left, saved in ((said[0], first, 4, "$0.16"), (said[1], second, 2, "$0.12")):  # one line each
        assert line.startswith(f"Stopped launching sweep {sweep.sweep_id}: {left} variation(s) never started "
                               f"({saved} not spent); 1 already sent to FLORA keep running and will be charged"), line
    magic(ip, "stop")  # the last sweep, already stopped: one line again
    assert len(lines(capsys)) == 1


# -- 4. retry only what can succeed: --codes, %flora failures --------------------------------------


def test_failures_and_retry_failed_retry_what_can_succeed_or_the_codes_given(ip, capsys):
    fl = fnb.session()
    fl.simulator.faults = Faults(input_failures={"moderated": "GENERATION_PROMPT_MODERATED",
                                                 "busy": "GENERATION_NO_RESULT"})
    sweep = magic(ip, f"sweep {POSTER} prompt=['moderated fox', 'busy owl', 'calm sea']").wait(60)
    failures = magic(ip, f"failures {sweep.sweep_id}")
    assert dict(zip(failures["input.prompt"], failures["hint"])) == {"busy owl": "retry later",
                                                                      "moderated fox": "change input"}
    assert magic(ip, "failures").equals(failures)  # the last sweep by default
    fl.simulator.faults = Faults()
    capsys.readouterr()
    created = sent(fl)[0]
    magic(ip, f"sweep --retry-failed {sweep.sweep_id}").wait(60)
    [line] = lines(capsys)
    assert line.startswith("Retried 1 failed run (1 retry later)") and "left 1" in line, line
    assert "--retry-failed SWEEP_ID --codes A,B starts them anyway" in line and "retry_failed" not in line, line
    assert sent(fl)[0] == created + 1  # only the one that can succeed was paid again
    magic(ip, f"sweep --retry-failed {sweep.sweep_id} --codes generation_prompt_moderated,NOT_A_CODE").wait(60)
    [line] = lines(capsys)
    assert line.startswith("Retried 1 failed run (1 change input: GENERATION_PROMPT_MODERATED)"), line
    assert sent(fl)[0] == created + 2 and sweep.counts == {"completed": 3}
    before = sent(fl)
    for line, says in [(f"sweep {POSTER} prompt=[a,b] --codes X", "--codes chooses which failures"),
                       (f"sweep --retry-failed {sweep.sweep_id} --codes 'A B'", "--codes takes FLORA error codes sep"),
                       (f"sweep --resume {sweep.sweep_id} --codes X", "--codes chooses which failures")]:
        with pytest.raises(UsageError, match=says):
            magic(ip, line)
    assert sent(fl) == before


# -- 5. paying twice is a choice --------------------------------------------------------------------


def test_a_run_whose_inputs_already_completed_is_refused_naming_the_earlier_run(ip):
    fl = fnb.session()
    earlier = magic(ip, f'run {POSTER} prompt="a red fox" --label take=1 --wait')
    before = sent(fl)
    for line, cell in [(f'run {POSTER} prompt="a red fox" --label take=2', None), (f"run {POSTER}", "a red fox")]:
        with pytest.raises(UsageError) as refused:
            magic(ip, line, cell)
        text = str(refused.value)
        assert earlier.id in text and "$0.04" in text and f"{earlier.completed_at:%Y-%m-%d at %H:%M} UTC" in text, text
        assert "Nothing was sent" in text and "`%flora run ... --again` pays for a new one" in text, text
        assert f"`%flora show {earlier.id}` shows the earlier one" in text and "\n" not in text, text
    assert sent(fl) == before
    assert magic(ip, f"show {earlier.id}") is earlier  # the command the message names
    again = magic(ip, f'run {POSTER} prompt="a red fox" --again --wait')
    assert again.id != earlier.id and again.status == "completed"
    assert magic(ip, f'run {POSTER} prompt="a grey fox" --wait').status == "completed"  # other inputs: no question
    assert sent(fl)[0] == before[0] + 2


def test_a_local_file_that_already_ran_is_recognised_without_uploading_it_again(ip, tmp_path):
    photo = tmp_path / "bottle.png"
    photo.write_bytes(png(b"bottle" * 8))
    fl = fnb.session()
    earlier = magic(ip, f"run product-relight product_image={photo} --wait")
    before = sent(fl)
    with pytest.raises(UsageError, match=f"run {earlier.id} completed"):
        magic(ip, f"run product-relight product_image={photo}")
    assert sent(fl) == before  # neither an upload nor a run


def test_a_sweep_says_in_one_line_how_many_runs_completed_before_and_starts_anyway(ip, capsys):
    fl = fnb.session()
    magic(ip, f"run {POSTER} prompt=fox --wait")
    magic(ip, f"run {POSTER} prompt=owl --wait")
    capsys.readouterr()
    result = ip.run_cell(f"%flora sweep {POSTER} prompt=[fox,owl,elk] --repeat 2")  # shown, as in a notebook
    result.raise_error()
    sweep, out = result.result, capsys.readouterr().out
    said = [line for line in out.splitlines() if "already completed" in line]
    assert said == ["2 of the 6 runs of this sweep already completed with the same inputs (paid for before); "
                    "starting anyway, paying again. --reuse takes them instead."], out
    assert out.index("already completed") < out.index(sweep.sweep_id)  # said before the sweep is shown
    sweep.wait(60)
    assert sweep.counts == {"completed": 6} and not any(r.reused_from for r in sweep.runs)
    created = sent(fl)[0]
    reused = magic(ip, f"sweep {POSTER} prompt=[fox,owl] --reuse").wait(60)
    plan = magic(ip, f"sweep {POSTER} prompt=[fox,owl] --dry-run")
    assert isinstance(plan, pd.DataFrame) and "already completed" not in capsys.readouterr().out
    assert all(r.reused_from for r in reused.runs) and sent(fl)[0] == created


# -- 6. the help names every new option ------------------------------------------------------------


def test_help_lists_the_new_options_with_a_line_each(ip, capsys):
    for line in ("--help", "-h", "help"):
        magic(ip, line)
        out = capsys.readouterr().out
        for word in ("--yes ", "--again ", "--codes A,B ", "%flora limit USD|none [--period day|month]",
                     "%flora limits ", "%flora failures [SWEEP_ID]", "confirm_above (USD; None never asks)"):
            assert word in out, (line, word)
    for command, options in [("run", ("--yes", "--again")), ("sweep", ("--yes", "--codes A,B", "--retry-failed")),
                             ("limit", ("--period {day,month}", "--technique T", "USD")), ("failures", ("SWEEP_ID",)),
                             ("stop", ("SWEEP_ID",))]:
        magic(ip, f"{command} -h")
        own = capsys.readouterr().out
        magic(ip, f"help {command}")
        assert capsys.readouterr().out == own
        rows = own.splitlines()
        for option in options:
            [at] = [i for i, row in enumerate(rows) if row.strip().startswith(option)]
            described = rows[at].strip()[len(option):] + " " + rows[at + 1]  # argparse may wrap to the next line
            assert len(described.split()) > 3 and not rows[at + 1].strip().startswith("-"), (command, option, own)
    with pytest.raises(UsageError, match="%flora help: give one command"):
        magic(ip, "help frobnicate")


def test_the_new_python_hints_read_as_magic_options():
    assert in_magic_terms("Nothing was sent. fl.spend_limits() shows every limit; fl.set_spend_limit(...) changes "
                          "one.") == "Nothing was sent. %flora limits shows every limit; %flora limit USD changes one."
    assert in_magic_terms("To start it anyway pass confirm=True (in %flora: --yes), or change the threshold with "
                          "confirm_above (None never asks).") == ("To start it anyway add --yes, or change the "
                                                                  "threshold with %config FloraMagics.confirm_above "
                                                                  "= USD (None never asks).")

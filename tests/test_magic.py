"""The %flora magics through a real InteractiveShell against the simulator (the jupysql pattern)."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import flora_nb as fnb
from flora_nb._magic import FloraMagics
from flora_nb._magic_parse import HelpShown, parse

POSTER = "poster-studio"


@pytest.fixture
def ip(tmp_path, monkeypatch):
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "flora_nb")
    magics = FloraMagics(shell=shell)
    shell.register_magics(magics)
    cell(shell, "%flora connect --sim --speed 100")
    yield shell
    if magics.session is not None:
        magics.session.close()
    for name in [n for n in shell.user_ns if n.startswith(("r_", "s_", "fl_"))]:
        del shell.user_ns[name]


def cell(shell: InteractiveShell, source: str):
    """Run a cell; raise what it raised (so a failing cell fails the test)."""
    result = shell.run_cell(source)
    result.raise_error()
    return result.result


def session(shell: InteractiveShell) -> fnb.Flora:
    return shell.magics_manager.registry["FloraMagics"].session


def test_status_and_connect(ip, capsys):
    fl = cell(ip, "%flora")
    assert fl is fnb.session()
    out = fl.status_text()
    assert "the built-in simulator" in out and "workspace: ws_sim_demo" in out and "updates: running" in out
    fl = cell(ip, "%flora connect --sim --speed 50 --budget 0.10")
    assert isinstance(fl, fnb.Flora) and fl.simulator is not None


def test_catalog_commands(ip):
    assert isinstance(cell(ip, "%flora workspaces"), pd.DataFrame)
    found = cell(ip, "%flora techniques poster")
    assert list(found["slug"]) == [POSTER]
    card = cell(ip, f"%flora show {POSTER}")
    assert isinstance(card, fnb.Technique) and "prompt" in card._repr_html_()


def test_run_returns_at_once_and_assigns(ip):
    cell(ip, "%flora connect --sim --speed 1")  # a run takes seconds: the cell returns long before it ends
    run = cell(ip, f'%flora run {POSTER} prompt="a red fox" --label k=v')
    assert isinstance(run, fnb.Run) and not run.done and run.labels == {"k": "v"}
    assert ip.user_ns["_"] is run
    assert cell(ip, f'%flora run {POSTER} prompt="x" -o r_one') is None
    assert ip.user_ns["r_one"].inputs == {"prompt": "x"}
    cell(ip, "%flora connect --sim --speed 100")
    waited = cell(ip, f"%flora run {POSTER} prompt=fox --wait")
    assert waited.status == "completed"


def test_values_are_literals_or_text_and_expand(ip):
    ip.user_ns["word"] = "heron"
    run = cell(ip, f"%flora run {POSTER} prompt=$word -o r_a")
    assert ip.user_ns["r_a"].inputs == {"prompt": "heron"} and run is None
    cell(ip, f"%flora run {POSTER} prompt={{word.upper()}} -o r_b")
    assert ip.user_ns["r_b"].inputs == {"prompt": "HERON"}
    cell(ip, f"%flora run {POSTER} prompt=5 -o r_c")
    assert ip.user_ns["r_c"].inputs == {"prompt": "5"}


def test_cell_bodies(ip):
    text = cell(ip, f"%%flora run {POSTER}\na lighthouse: at dusk\nrisograph")
    assert text.inputs == {"prompt": "a lighthouse: at dusk\nrisograph"}
    as_json = cell(ip, '%%flora run jingle-writer\n{"prompt": "sea", "style": "jazz"}')
    assert as_json.inputs == {"prompt": "sea", "style": "jazz"}
    lines = cell(ip, "%%flora run jingle-writer --label k=1\nprompt: sea shanty\nstyle: punk")
    assert lines.inputs == {"prompt": "sea shanty", "style": "punk"} and lines.labels == {"k": 1}
    with pytest.raises(UsageError, match="required inputs"):
        cell(ip, "%%flora run product-relight\njust some text")


def test_sweep_commands(ip):
    plan = cell(ip, "%flora sweep jingle-writer prompt=[sea, city] style=[jazz,punk] --repeat 2 --dry-run")
    assert isinstance(plan, pd.DataFrame) and len(plan) == 8
    zipped = cell(ip, "%flora sweep jingle-writer prompt=[sea,city] style=[jazz,punk] --zip --max-concurrency 2")
    assert isinstance(zipped, fnb.Sweep) and len(zipped.runs) == 2 and zipped.max_concurrency == 2
    cell(ip, f"%flora wait {zipped.sweep_id}")
    assert zipped.counts == {"completed": 2}
    cell(ip, f"%flora sweep {POSTER} prompt=[a,b] --reuse -o s_one")
    sweep = ip.user_ns["s_one"]
    sweep.wait(30)
    again = cell(ip, f"%flora sweep {POSTER} prompt=[a,b,c] --reuse")
    again.wait(30)
    assert sum(1 for r in again.runs if r.reused_from) == 2
    frame = cell(ip, f"%flora runs --sweep {again.sweep_id} --status completed --last 2")
    assert len(frame) == 2 and set(frame["sweep_id"]) == {again.sweep_id}
    costs = cell(ip, "%flora costs --by technique_name,status")
    assert costs.index.names == ["technique_name", "status"]
    assert len(cell(ip, f"%flora history --technique {POSTER}")) >= 3


def test_budget_is_one_line(ip):
    with pytest.raises(UsageError, match="^%flora sweep: This sweep would cost.*over the budget"):
        cell(ip, f"%flora sweep {POSTER} prompt=[a,b,c] --budget 0.05")
    cell(ip, "%flora connect --sim --speed 100 --budget 0.05")
    with pytest.raises(UsageError, match="budget of \\$0.05"):
        cell(ip, f"%flora sweep {POSTER} prompt=[a,b,c]")


def test_stop_wait_resume(ip, capsys):
    cell(ip, "%flora connect --sim --speed 5")
    sweep = cell(ip, f"%flora sweep {POSTER} prompt=[a,b,c,d,e,f] --max-concurrency 1")
    cell(ip, "%flora stop")
    assert "Stopped launching" in capsys.readouterr().out
    cell(ip, f"%flora wait {sweep.sweep_id}")
    assert sweep.counts.get("skipped", 0) >= 4
    run = cell(ip, f"%flora run {POSTER} prompt=z")
    assert cell(ip, f"%flora wait {run.id}").status == "completed"
    cell(ip, "%flora resume")
    assert "Tracking 0 unfinished" in capsys.readouterr().out
    with pytest.raises(UsageError, match="no run or sweep"):
        cell(ip, "%flora wait run_nope")
    with pytest.raises(UsageError, match="no sweep 'swp_x'"):
        cell(ip, "%flora stop swp_x")


@pytest.mark.parametrize("line, message", [
    ("%flora frobnicate", "unknown command 'frobnicate'"),
    (f"%flora run {POSTER} prompt", "expected input as key=value"),
    (f"%flora run {POSTER} bogus=1 prompt=x", "unknown input 'bogus'"),
    (f"%flora run {POSTER}", "missing required input 'prompt'"),
    ("%flora run tech_nope prompt=x", "^%flora run: 404 not_found"),
    (f"%flora run {POSTER} prompt=[a,b]", "use %flora sweep"),
    (f"%flora run {POSTER} prompt=x --workspace ws_sim_private", "^%flora run: 403 forbidden"),
    (f"%flora sweep {POSTER} prompt=[a] --repeat two", "--repeat must be a whole number"),
    (f'%flora run {POSTER} prompt="unclosed', "quote is not closed"),
    ("%flora form tech_nope", "^%flora form: 404 not_found"),
    ("%flora costs --by nope", "cannot group costs by"),
])
def test_user_mistakes_are_one_line(ip, line, message):
    with pytest.raises(UsageError, match=message) as info:
        cell(ip, line)
    assert "\n" not in str(info.value).strip() or "variations" in str(info.value)


def test_short_errors_off_shows_the_real_error(ip):
    ip.run_line_magic("config", "FloraMagics.short_errors = False")
    try:
        with pytest.raises(fnb.NotFoundError):
            cell(ip, "%flora run tech_nope prompt=x")
    finally:
        ip.run_line_magic("config", "FloraMagics.short_errors = True")


def test_help(ip, capsys):
    cell(ip, "%flora run -h")
    out = capsys.readouterr().out
    assert "usage: %flora run" in out and "--wait" in out
    doc = FloraMagics.flora.__doc__
    assert "Examples:" in doc and "%flora sweep" in doc and "%%flora run" in doc


def test_text_fallback_does_not_spam(ip, capsys):
    run = cell(ip, f"%flora run {POSTER} prompt=quiet -o r_q")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "Poster Studio" in out and run is None
    ip.user_ns["r_q"].wait(30)
    assert capsys.readouterr().out == ""  # nothing printed per poll


def test_no_key_points_to_the_simulator(tmp_path, monkeypatch):
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    monkeypatch.delenv("FLORA_API_KEY", raising=False)
    shell = InteractiveShell.instance()
    shell.register_magics(FloraMagics(shell=shell))
    with pytest.raises(UsageError, match="FLORA_API_KEY.*%flora connect --sim"):
        cell(shell, "%flora techniques")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_parser_never_crashes(text):
    try:
        command = parse(text)
    except (UsageError, HelpShown):
        return
    assert command.name in ("status", "connect", "workspaces", "techniques", "show", "run", "sweep", "runs",
                            "costs", "history", "form", "wait", "stop", "resume", "failures", "limit", "limits")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["run poster ", "sweep poster ", "runs ", "costs --by "]), st.text(max_size=60),
       st.one_of(st.none(), st.text(max_size=60)))
def test_parser_never_crashes_on_commands(prefix, rest, body):
    try:
        parse(prefix + rest, body)
    except (UsageError, HelpShown):
        pass


def test_connect_to_a_base_url_with_workspace(ip, monkeypatch):
    from flora_nb.sim import FloraSimulator

    with FloraSimulator(speed=100.0) as sim:
        monkeypatch.setenv("FLORA_API_KEY", sim.api_key)
        fl = cell(ip, f"%flora connect --base-url {sim.base_url} --workspace {sim.workspace_id}")
        assert fl.endpoint == sim.base_url and fl.simulator is None and fl.workspace_id == sim.workspace_id
        sweep = cell(ip, f"%flora sweep {POSTER} prompt=[a,b] --label team=red")
        sweep.wait(30)
        frame = cell(ip, f"%flora runs --technique {POSTER}")
        assert len(frame) == 2 and set(frame["label.team"]) == {"red"}
        assert sim.stats()["runs_created"] == 2
        fl.close()


def test_a_word_starting_with_hash_is_a_comment():
    command = parse('run poster prompt="a # in quotes" colour=#ff0000   # start it; colour=ignored --wait')
    assert command.inputs == {"prompt": "a # in quotes", "colour": "#ff0000"}
    assert not command.options.wait
    assert parse("sweep poster prompt=[a, #b] # vary it").inputs == {"prompt": ["a", "#b"]}
    assert parse("connect --sim  # offline").options.sim


def test_deeply_nested_values_are_a_usage_error():
    with pytest.raises(UsageError, match="nested too deeply"):
        parse("run poster p=" + "[" * 1500 + "a" + "]" * 1500)


def test_simulator_speed_config_is_used(ip):
    ip.run_line_magic("config", "FloraMagics.simulator_speed = 7.0")
    try:
        fl = cell(ip, "%flora connect --sim")
        assert fl.simulator.speed == 7.0
    finally:
        ip.run_line_magic("config", "FloraMagics.simulator_speed = 20.0")

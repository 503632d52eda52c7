"""What a new user tripped over (issue 11): the magic, the session, messages, the simulator."""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import flora_nb as fnb
from flora_nb._frames import money_table
from flora_nb._magic import FloraMagics
from flora_nb.sim import Faults, FloraSimulator
from tests.waiting import until

POSTER = "poster-studio"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def ip(tmp_path, monkeypatch):
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    shell = InteractiveShell.instance()
    magics = FloraMagics(shell=shell)
    shell.register_magics(magics)
    cell(shell, "%flora connect --sim --speed 100")
    yield shell
    current = magics.session
    if current is not None:
        current.close()
    ip_names = [n for n in shell.user_ns if n.startswith(("r_", "s_", "fl_", "v_"))]
    for name in ip_names:
        del shell.user_ns[name]


def cell(shell: InteractiveShell, source: str):
    result = shell.run_cell(source)
    result.raise_error()
    return result.result


# -- 1. a mistyped connect keeps the working session ----------------------------------------------


def test_mistyped_connect_keeps_the_session(ip, monkeypatch):
    before = fnb.session()
    run = cell(ip, f"%flora run {POSTER} prompt=fox")
    for line in ("%flora connect --speed 5", "%flora connect --seed 3", "%flora connect --error-rate 0.5"):
        with pytest.raises(UsageError, match="only with --sim"):
            cell(ip, line)
    with pytest.raises(UsageError, match="FLORA_API_KEY"):
        cell(ip, "%flora connect --base-url http://127.0.0.1:9/api/v1")
    monkeypatch.setenv("FLORA_API_KEY", "sk_wrong")
    with pytest.raises(UsageError, match="kept the current session"):
        cell(ip, "%flora connect --base-url http://127.0.0.1:9/api/v1")
    assert fnb.session() is before and before.poller.stats.running
    assert run.wait(30).status == "completed"
    assert cell(ip, f"%flora run {POSTER} prompt=again --wait").status == "completed"


def test_connect_sim_options_reach_the_simulator(ip):
    fl = cell(ip, "%flora connect --sim --speed 50 --seed 4 --run-failure-rate 1 --credits 1.5")
    assert fl.simulator.faults.run_failure_rate == 1.0 and fl.simulator.faults.credits == 1.5
    assert fnb.session() is fl


# -- 2. the poller never prints; trouble shows in status ------------------------------------------

_POLLER_SCRIPT = textwrap.dedent("""
    import time, sys
    from flora_nb import Flora
    from flora_nb.sim import Faults
    fl = Flora.simulated(speed=50.0, max_retries=0, ledger_path=sys.argv[1] + "/a.sqlite")
    run = fl.run("image-to-motion", {"prompt": "storm"})
    if sys.argv[2] == "server":
        fl.simulator.faults = Faults(error_rate=1.0)
        watched = fl
    else:
        watched = Flora(api_key="sk_bad_key", base_url=fl.endpoint, ledger_path=sys.argv[1] + "/a.sqlite",
                        poll_interval=(0.02, 0.05), max_retries=0)
    deadline = time.monotonic() + 60
    while watched.poller.stats.errors < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    print("ERR" + "ORS", watched.poller.stats.errors)
    print("HEAL" + "TH", watched.status().get("health"))
""")


@pytest.mark.parametrize("trouble, health", [("server", "retrying"), ("key", "API key")])
def test_poller_trouble_never_reaches_stderr_in_python(tmp_path, trouble, health):
    script = tmp_path / "poll.py"
    script.write_text(_POLLER_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path), trouble], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert "ERRORS" in done.stdout and "ERRORS 0" not in done.stdout, done.stdout + done.stderr
    assert health in done.stdout.split("HEALTH", 1)[1]
    assert done.stderr == ""


@pytest.mark.parametrize("trouble", ["server", "key"])
def test_poller_trouble_never_reaches_stderr_in_terminal_ipython(tmp_path, trouble):
    body = _POLLER_SCRIPT.replace("sys.argv[1]", repr(str(tmp_path))).replace("sys.argv[2]", repr(trouble))
    source = "exec(" + repr(body) + ")\n"
    done = subprocess.run([sys.executable, "-m", "IPython", "--simple-prompt", "--no-banner", "--colors=NoColor",
                           "--HistoryManager.enabled=False"], input=source, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert "ERRORS" in done.stdout and "ERRORS 0" not in done.stdout, done.stdout + done.stderr
    assert "flora_nb" not in done.stderr and "Error" not in done.stderr, done.stderr


def test_health_shows_in_status_and_recovers(tmp_path):
    fl = fnb.Flora.simulated(speed=50.0, max_retries=0, ledger_path=tmp_path / "l.sqlite")
    try:
        assert fl.status()["health"] == "ok"
        fl.run("image-to-motion", {"prompt": "waves"})
        fl.simulator.stop()
        until(lambda: "FLORA unreachable, retrying" in fl.health)
        assert "FLORA unreachable, retrying" in fl._repr_html_() and "unreachable" in fl.status_text()
        fl.simulator.start()  # same port
        until(lambda: fl.health == "ok")
        fl.run("image-to-motion", {"prompt": "fire"})
        fl.simulator.faults = Faults(error_rate=1.0)
        until(lambda: "FLORA answers with errors (ServerError), retrying" in fl.health)
        fl.simulator.faults = Faults()
        until(lambda: fl.status()["health"] == "ok")
    finally:
        fl.close()


def test_live_run_display_shows_poller_trouble(tmp_path):
    from flora_nb._display import _run_widget

    fl = fnb.Flora.simulated(speed=20.0, max_retries=0, ledger_path=tmp_path / "l.sqlite")
    try:
        run = fl.run("image-to-motion", {"prompt": "storm"})
        widget = _run_widget(run)
        label = widget.children[1]
        assert "unreachable" not in label.value
        fl.simulator.stop()
        until(lambda: "FLORA unreachable, retrying" in label.value)
        fl.simulator.start()
        until(lambda: "unreachable" not in label.value)
    finally:
        fl.close()


def test_flora_logger_has_a_handler():
    import logging

    handlers = logging.getLogger("flora_nb").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


# -- 3. the magic's session from Python -----------------------------------------------------------


def test_percent_flora_returns_the_session_card(ip):
    fl = cell(ip, "%flora")
    assert isinstance(fl, fnb.Flora) and fl is fnb.session()
    card = fl._repr_html_()
    assert card.startswith("<table") and "ws_sim_demo" in card and "running in the background" in card
    text = ip.display_formatter.format(fl)[0]["text/plain"]
    assert "connected to" in text and "updates" in text and "<" not in text.splitlines()[0]
    run = fl.run(POSTER, {"prompt": "from python"})
    run.wait(30)
    assert run.id in set(cell(ip, "%flora runs")["run_id"])


def test_session_from_python_is_the_one_the_magics_use(tmp_path, monkeypatch):
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    with FloraSimulator(speed=100.0) as sim:
        monkeypatch.setenv("FLORA_API_KEY", sim.api_key)
        monkeypatch.setenv("FLORA_BASE_URL", sim.base_url)
        from flora_nb import _session

        monkeypatch.setattr(_session, "_CURRENT", None)
        fl = fnb.session()
        try:
            assert fl is fnb.session() and fl.endpoint == sim.base_url
            shell = InteractiveShell.instance()
            shell.register_magics(FloraMagics(shell=shell))
            assert cell(shell, "%flora") is fl
            other = fnb.Flora(ledger_path=tmp_path / "other.sqlite")
            assert fnb.session(other) is other and cell(shell, "%flora") is other
            other.close()
            assert fnb.session() is not other  # a closed session is replaced
        finally:
            fnb.session().close()
            fl.close()


# -- 4. unknown techniques get a hint -------------------------------------------------------------


def test_unknown_technique_suggests_names(ip):
    with pytest.raises(UsageError, match="'postr-studio'.*did you mean poster-studio.*%flora techniques"):
        cell(ip, "%flora run postr-studio prompt=x")
    with pytest.raises(UsageError, match="No technique 'nope'.*%flora techniques"):
        cell(ip, "%flora show nope")
    with pytest.raises(fnb.NotFoundError, match="did you mean jingle-writer.*fl.techniques()") as info:
        fnb.session().technique("jingle writter")
    assert info.value.status == 404 and info.value.code == "not_found"


# -- 5. $var and {expr} expand to exactly one value -----------------------------------------------

VALUES = ["a red fox", 'say "hi" twice', "it's late", "[1, 2]", "a=b c=d", "line one\nline two", "{not an expr}",
          "  padded  ", "--wait"]


@pytest.mark.parametrize("value", VALUES)
def test_dollar_var_is_one_value(ip, value):
    ip.user_ns["v_p"] = value
    cell(ip, f"%flora run {POSTER} prompt=$v_p --label note=$v_p -o r_d")
    run = ip.user_ns["r_d"]
    assert run.inputs == {"prompt": value} and run.labels == {"note": value}
    cell(ip, f"%flora run {POSTER} prompt={{v_p}} --again -o r_e")  # the same inputs: paying twice is a choice
    assert ip.user_ns["r_e"].inputs == {"prompt": value}


def test_expressions_and_lists_expand(ip):
    ip.user_ns["v_words"] = ["sea fog", "city, night"]
    sweep = cell(ip, f"%flora sweep {POSTER} prompt=$v_words --dry-run")
    assert sorted(sweep["input.prompt"]) == ["city, night", "sea fog"]
    cell(ip, f"%flora run {POSTER} prompt={{v_words[0].upper() + '!'}} -o r_f")
    assert ip.user_ns["r_f"].inputs == {"prompt": "SEA FOG!"}
    cell(ip, f'%flora run {POSTER} prompt="fog over $v_undefined_name" -o r_g')
    assert ip.user_ns["r_g"].inputs == {"prompt": "fog over $v_undefined_name"}


# -- 6. hints speak the magic's language inside the magic -----------------------------------------


def test_budget_hint_names_magic_options(ip):
    with pytest.raises(UsageError) as info:
        cell(ip, f"%flora sweep {POSTER} prompt=[a,b,c] --budget 0.05")
    text = str(info.value)
    assert "--budget" in text and "--reuse" in text and "budget=" not in text and "reuse=True" not in text


def _error_texts() -> list[str]:
    """Every literal piece of every message raised by the package."""
    texts = []
    for path in sorted((ROOT / "flora_nb").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                texts += [n.value for n in ast.walk(node.exc) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    texts += [v.hint for v in vars(fnb).values() if isinstance(v, type) and isinstance(getattr(v, "hint", None), str)]
    return texts


_PYTHON_SPELLING = re.compile(r"\b[a-z_]+=(?:\.\.\.|True|False|'|,|\s|$)|\b(?:fl\.)?[a-z_]+\(\)|Flora\(")


def test_every_python_hint_has_a_magic_spelling():
    from flora_nb._magic import in_magic_terms

    found = [t for t in _error_texts() if _PYTHON_SPELLING.search(t)]
    assert len(found) >= 8  # the scan itself works
    for text in found:
        assert not _PYTHON_SPELLING.search(in_magic_terms(text)), (text, in_magic_terms(text))
    assert in_magic_terms("Raise budget=, trim the grid, or use reuse=True.") == \
        "Raise --budget, trim the grid, or use --reuse."
    assert in_magic_terms("Check FLORA_API_KEY (or pass api_key=...).") == \
        "Check FLORA_API_KEY (then %flora connect again)."


def test_hints_in_errors_from_the_magic(ip, monkeypatch):
    with pytest.raises(UsageError, match="--max-concurrency must be") as info:
        cell(ip, f"%flora sweep {POSTER} prompt=[a,b] --max-concurrency 0")
    assert "max_concurrency" not in str(info.value)
    with pytest.raises(UsageError, match="--zip lists must have equal lengths.*Drop --zip"):
        cell(ip, "%flora sweep jingle-writer prompt=[a,b] style=[c] --zip")


# -- 7. stop and wait say what happened -----------------------------------------------------------


def test_stop_finished_sweep_and_wait_for_nothing(ip, capsys):
    sweep = cell(ip, f"%flora sweep {POSTER} prompt=[a]")
    sweep.wait(30)
    capsys.readouterr()
    cell(ip, "%flora stop")
    out = capsys.readouterr().out
    assert "already finished" in out and "Stopped launching" not in out
    cell(ip, "%flora wait")
    assert "Nothing to wait for" in capsys.readouterr().out


# -- 8. a zombie is dead --------------------------------------------------------------------------


def _zombie() -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    until(lambda: Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")
    return child


def test_zombie_owner_is_dead_and_its_queue_is_skipped(tmp_path):
    from flora_nb._owner import is_alive

    child = _zombie()
    try:
        owner = f"{socket.gethostname()}:{child.pid}:abc123"
        assert is_alive(owner) is False
        fl = fnb.Flora.simulated(speed=100.0, ledger_path=tmp_path / "l.sqlite", resume=False)
        try:
            tech = fl.technique(POSTER)
            fl.ledger.add_intents([{
                "endpoint": fl.endpoint, "workspace_id": fl.workspace_id, "idempotency_key": "k" * 20,
                "owner": owner, "technique_id": tech.technique_id, "technique_name": tech.name,
                "estimated_cost": tech.run_cost, "status": "queued", "inputs": {"prompt": "x"}, "labels": {},
            }])
            fl.resume()
            frame = fl.runs()
            assert list(frame["status"]) == ["skipped"]
            assert fl.costs(detail=True)["estimated_usd"].fillna(0).sum() == 0
        finally:
            fl.close()
    finally:
        child.wait()


# -- 9. plots -------------------------------------------------------------------------------------


def test_plot_extra_and_plots(tmp_path):
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("matplotlib") for d in extras["plot"])
    import matplotlib

    matplotlib.use("Agg")
    fl = fnb.Flora.simulated(speed=100.0, ledger_path=tmp_path / "l.sqlite")
    try:
        sweep = fl.sweep(POSTER, grid={"prompt": ["a", "b", "c"]})
        sweep.wait(30)
        spend = fl.spend()
        assert type(spend).__name__ == "Series"
        ax = fl.plot_spend()
        line = ax.get_lines()[0]
        assert line.get_drawstyle().startswith("steps") and "USD" in ax.get_ylabel()
        assert line.get_ydata()[-1] == pytest.approx(spend.iloc[-1])
        ax.figure.canvas.draw()
        ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert ticks and all(len(t) <= 6 for t in ticks), ticks  # times people read (49.2, 14:05), not 43:46.450000
        axes = sweep.plot()
        assert "USD" in axes[0].get_ylabel() and "s" in axes[1].get_ylabel()
        assert [t.get_text() for t in axes[1].get_xticklabels()] == ["a", "b", "c"]
    finally:
        fl.close()


def test_plot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    fl = fnb.Flora.simulated(speed=100.0, ledger_path=tmp_path / "l.sqlite")
    try:
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
        with pytest.raises(fnb.ConfigError, match=r"pip install 'flora_nb\[plot\]'") as info:
            fl.plot_spend()
        assert "\n" not in str(info.value)
    finally:
        fl.close()


# -- 10. the costs table ---------------------------------------------------------------------------


def test_costs_compact_with_total_and_detail(ip):
    cell(ip, f"%flora sweep {POSTER} prompt=[a,b] -o s_c")
    ip.user_ns["s_c"].wait(30)
    cell(ip, "%flora run jingle-writer prompt=sea --wait")
    fl = fnb.session()
    compact = fl.costs()
    assert list(compact.columns) == ["runs", "completed", "failed", "charged_usd", "pending_charges",
                                     "open_estimate_usd", "usd_per_completed"]
    assert compact.index[-1] == "total" and compact.loc["total", "runs"] == 3
    assert compact.loc["total", "charged_usd"] == pytest.approx(compact["charged_usd"].iloc[:-1].sum())
    assert len(fl.costs(detail=True).columns) >= 13
    shown = money_table(cell(ip, "%flora costs"))
    assert shown.loc["total", "charged_usd"].startswith("$") and len(shown.columns) == 7
    assert len(cell(ip, "%flora costs --detail").columns) >= 13


# -- 11. the in-process simulator keeps its account ------------------------------------------------

_CHILD = textwrap.dedent("""
    import json, sys
    from flora_nb import Flora
    fl = Flora.simulated(speed=20.0)
    runs = fl.runs()
    history = fl.history()
    for run in fl.tracked_runs():
        run.wait(60)
    after = fl.runs()
    print(json.dumps({"endpoint": fl.endpoint, "runs": sorted(runs["run_id"]),
                      "history": sorted(history["run_id"]),
                      "statuses": sorted(after["status"].astype(str)),
                      "sim": [r["status"] for r in fl.simulator.run_records()]}))
    fl.close()
""")


def test_simulated_account_survives_a_restarted_kernel(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    monkeypatch.delenv("FLORA_NB_SIM_PERSIST", raising=False)
    first = fnb.Flora.simulated(speed=20.0)
    done = first.run(POSTER, {"prompt": "kept"}).wait(30)
    slow = first.run("image-to-motion", {"prompt": "in flight"})
    assert first.endpoint == "sim://default"
    first.poller.stop()  # the kernel dies: nothing more is saved or polled
    first.simulator.stop()
    child = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=120,
                           cwd=ROOT, env={**os.environ})
    assert child.returncode == 0, child.stderr
    seen = json.loads(child.stdout.strip().splitlines()[-1])
    assert seen["endpoint"] == "sim://default"
    assert {done.id, slow.id} <= set(seen["runs"]) and {done.id, slow.id} <= set(seen["history"])
    assert seen["statuses"] == ["completed", "completed"] and seen["sim"] == ["completed", "completed"]
    first.close()


def test_connect_sim_continues_and_no_persist_starts_fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    monkeypatch.delenv("FLORA_NB_SIM_PERSIST", raising=False)
    shell = InteractiveShell.instance()
    shell.register_magics(FloraMagics(shell=shell))
    fl = cell(shell, "%flora connect --sim --speed 100")
    run = fl.run(POSTER, {"prompt": "one"}).wait(30)
    again = cell(shell, "%flora connect --sim --speed 100")
    assert again is not fl and again.simulator.stats()["runs_created"] == 1
    assert list(again.runs()["run_id"]) == [run.id] and list(again.history()["run_id"]) == [run.id]
    fresh = cell(shell, "%flora connect --sim --speed 100 --no-persist")
    assert fresh.simulator.stats()["runs_created"] == 0 and fresh.endpoint != "sim://default"
    fresh.close()


# -- 12. small ones --------------------------------------------------------------------------------


def test_cli_prints_export_lines():
    proc = subprocess.Popen([sys.executable, "-m", "flora_nb", "sim", "--speed", "5"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        lines = [proc.stdout.readline().strip() for _ in range(4)]  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.communicate()
    assert lines[1].startswith("export FLORA_BASE_URL=http://127.0.0.1:")
    assert lines[2] == "export FLORA_API_KEY=sk_sim_demo" and lines[3] == "export FLORA_WORKSPACE_ID=ws_sim_demo"


def test_repr_shows_workspace_from_environment(shared_sim, tmp_path, monkeypatch):
    monkeypatch.setenv("FLORA_WORKSPACE_ID", "ws_sim_demo")
    with fnb.Flora(api_key=shared_sim.api_key, base_url=shared_sim.base_url, ledger_path=tmp_path / "l.sqlite") as fl:
        assert "workspace ws_sim_demo" in repr(fl)


def test_short_errors_off_gives_the_full_missing_key_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    from flora_nb import _session

    monkeypatch.setattr(_session, "_CURRENT", None)
    shell = InteractiveShell.instance()
    magics = FloraMagics(shell=shell)
    shell.register_magics(magics)
    magics.short_errors = False
    with pytest.raises(fnb.ConfigError, match="No FLORA API key"):
        cell(shell, "%flora techniques")


def test_show_in_a_terminal_is_a_readable_card(ip):
    tech = cell(ip, f"%flora show {POSTER}")
    text = ip.display_formatter.format(tech)[0]["text/plain"]
    assert text == str(tech)
    assert text.splitlines()[0].startswith("Poster Studio (tech_a1poster, poster-studio)")
    assert "$0.04 per run" in text and "prompt" in text and "TechniqueInput(" not in text


def test_simulated_text_outputs_read_like_their_technique(shared_sim):
    from flora_nb.sim._media import _SENTENCES

    ledger = Path(os.environ["FLORA_NB_HOME"]) / "text.sqlite"
    with fnb.Flora(api_key=shared_sim.api_key, base_url=shared_sim.base_url, ledger_path=ledger,
                   poll_interval=(0.02, 0.05)) as fl:
        jingle = fl.run("jingle-writer", {"prompt": "fresh bread", "style": "ukulele"}).wait(30)
        lyrics = next(o.text for o in jingle.outputs if o.output_id == "lyrics")
        assert "fresh bread" in lyrics.lower() and "chorus" in lyrics.lower()
        assert not any(s in lyrics for s in _SENTENCES) and lyrics.count("\n") >= 3
        critique = fl.run("art-directors-critique", {"image": "https://example.com/a.png"}).wait(30)
        assert any(s in critique.outputs[0].text for s in _SENTENCES)
        book = fl.run("brand-book", {"brand_name": "Oakline"}).wait(30)
        pdf = next(o for o in book.outputs if o.output_id == "brand_book").fetch()
        assert b"Oakline" in pdf and not any(s.encode() in pdf for s in _SENTENCES)


def test_demo_runs_and_prints_the_money_table(tmp_path):
    done = subprocess.run([sys.executable, "-m", "flora_nb", "demo", "--speed", "100", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "FLORA_NB_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    costs = done.stdout.split("== Costs", 1)[1]
    assert "total" in costs and "$0.60" in costs and not (tmp_path / "sim").exists()


def test_simulator_state_keeps_credits_assets_and_keys(tmp_path):
    from flora_nb import FloraClient

    state = tmp_path / "acct.json"
    picture = tmp_path / "ref.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    faults = Faults(credits=1.0)
    with FloraSimulator(speed=100.0, faults=faults, state_path=state) as sim:
        with FloraClient(api_key=sim.api_key, base_url=sim.base_url) as client:
            start = client.start_technique_run("tech_a1poster", sim.workspace_id, {"prompt": "x"},
                                               idempotency_key="key-kept-0001")
            asset = client.create_asset(str(picture), workspace_id=sim.workspace_id)
        before = sim.stats()["credits_remaining"]
        port = sim.base_url
    with FloraSimulator(speed=100.0, state_path=state) as again:  # no credits given: the balance is kept
        assert again.base_url == port  # the account's port was free: its URLs stay valid
        assert again.stats()["credits_remaining"] == before == pytest.approx(0.96)
        assert [r["run_id"] for r in again.run_records()] == [start.run_id]
        with FloraClient(api_key=again.api_key, base_url=again.base_url) as client:
            assert client.fetch_media(client.get_asset(asset.asset_id).url) == picture.read_bytes()
            with pytest.raises(fnb.IdempotencyDuplicateError):
                client.start_technique_run("tech_a1poster", again.workspace_id, {"prompt": "x"},
                                           idempotency_key="key-kept-0001")
            until(lambda: client.get_run(start.run_id).status == "completed")  # restored runs go on
        assert again.stats()["total_charged"] == pytest.approx(0.04)


def test_a_second_process_shares_the_same_account(tmp_path, monkeypatch):
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    with fnb.Flora.simulated(speed=100.0, persist=True) as fl:
        assert fl.simulator.state_path == str(tmp_path / "sim" / "default.json")
        code = ("import flora_nb as f\nfl = f.Flora.simulated(persist=True)\n"
                "print('SHARED', fl.simulator.shared, fl.client.base_url)\nfl.close()\n")
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                               cwd=ROOT, env={**os.environ})
        assert child.returncode == 0, child.stderr
        assert f"SHARED True {fl.client.base_url}" in child.stdout, child.stdout + child.stderr
        assert fl.simulator.running  # the child's leaving does not stop the server this process runs

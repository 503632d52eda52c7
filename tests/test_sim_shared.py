"""Several kernels on one simulated account (issue 21, item 1): one simulator, shared, taken over when its process ends.

The first process to open a saved account serves it; the others use that server (``fl.simulator.shared``). When
the serving process ends, closed or killed outright, a sharing process takes the account over on the same port;
a run the restarted simulator has no record of ends ``failed``, uncharged, saying so, instead of staying
``pending`` forever. Time never decides anything here: the serving child's saver runs on a frozen clock and
writes the account only when the test says so, and every wait is for a condition (``until``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import flora_nb as fnb
from flora_nb.sim import FloraSimulator
from tests.waiting import TIMEOUT, until

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
POSTER = "tech_a1poster"
MOTION = "tech_d4motion"  # 60 s a run: at speed 10, still in flight while the test kills its server
RESTARTED = "The simulator was restarted and has no record of this run; nothing was charged."

# A kernel, driven line by line on stdin: it opens the default saved account and answers in JSON.
CHILD = textwrap.dedent("""
    import json, sys
    if sys.argv[2] == "frozen-saver":  # the account is written when the test says "flush", never on its own
        from flora_nb.sim import _persist
        _persist.monotonic = lambda: 1000.0
    import flora_nb as fnb
    fl = fnb.Flora.simulated(speed=float(sys.argv[1]))
    sim = fl.simulator
    print(json.dumps({"shared": getattr(sim, "shared", False), "base_url": sim.base_url, "endpoint": fl.endpoint,
                      "not_applied": {k: list(v) for k, v in getattr(sim, "not_applied", {}).items()},
                      "card": fl.status_text()}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["do"] == "run":
            runs = [fl.run(cmd["tech"], {"prompt": p}) for p in cmd["prompts"]]
            print(json.dumps([r.id for r in runs]), flush=True)
        elif cmd["do"] == "wait":
            print(json.dumps({i: fl.engine.find_run(i).wait(120).status for i in cmd["ids"]}), flush=True)
        elif cmd["do"] == "flush":
            sim._saver.flush()
            print(json.dumps("flushed"), flush=True)
        elif cmd["do"] == "close":
            fl.close()
            print(json.dumps("closed"), flush=True)
            break
""")


class Kernel:
    """A child process holding a session on the default saved account."""

    def __init__(self, home: Path, speed: float, mode: str = "plain") -> None:
        env = {**os.environ, "FLORA_NB_HOME": str(home)}
        env.pop("FLORA_NB_SIM_PERSIST", None)  # as for a user: the account is kept
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(speed), mode], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        self._hello: dict | None = None

    @property
    def hello(self) -> dict:
        if self._hello is None:
            self._hello = self._answer()
        return self._hello

    def ask(self, **cmd: object) -> object:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def _answer(self) -> object:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(TIMEOUT)
            pytest.fail(f"the child ended: {self.proc.stderr.read() if self.proc.stderr else ''}")
        return json.loads(line)

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=TIMEOUT)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A user's FLORA_NB_HOME, with the simulated account kept (the suite turns that off elsewhere)."""
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    monkeypatch.delenv("FLORA_NB_SIM_PERSIST", raising=False)
    for name in ("FLORA_API_KEY", "FLORA_BASE_URL", "FLORA_WORKSPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def saved_records(home: Path) -> list[dict]:
    """The account's runs as its saved file has them (read by a simulator of this process, once all others ended)."""
    with FloraSimulator(state_path=home / "sim" / "default.json") as sim:
        return sim.run_records()


def test_two_processes_share_the_default_account(home):
    kernels = [Kernel(home, 50.0), Kernel(home, 40.0)]  # both opening it at once
    try:
        hellos = [k.hello for k in kernels]
        assert sorted(h["shared"] for h in hellos) == [False, True]  # one serves, the other uses its server
        assert hellos[0]["base_url"] == hellos[1]["base_url"] and {h["endpoint"] for h in hellos} == {"sim://default"}
        owner, sharer = sorted(kernels, key=lambda k: k.hello["shared"])
        asked = 50.0 if sharer is kernels[0] else 40.0
        assert sharer.hello["not_applied"] == {"speed": [asked, 90.0 - asked]}  # the running simulator's speed wins
        assert "shared: with another kernel" in sharer.hello["card"] and "keeps its settings: speed" in sharer.hello["card"]
        assert "shared:" not in owner.hello["card"]  # the card says so to the sharer only
        prompts = {k: [f"{'owner' if k is owner else 'sharer'} {i}" for i in range(3)] for k in kernels}
        ids = {k: k.ask(do="run", tech=POSTER, prompts=prompts[k]) for k in kernels}
        for k in kernels:
            assert set(k.ask(do="wait", ids=ids[k]).values()) == {"completed"}
        assert sharer.ask(do="close") == "closed"  # closing a sharer leaves the server to the others
        [late] = owner.ask(do="run", tech=POSTER, prompts=["owner, after the sharer closed"])
        assert owner.ask(do="wait", ids=[late]) == {late: "completed"}
        assert owner.ask(do="close") == "closed"
    finally:
        for k in kernels:
            k.end()
    records = saved_records(home)
    by_id = {r["run_id"]: r["inputs"]["prompt"] for r in records}
    assert len(by_id) == len(records) == 7  # each run once
    for k in kernels:
        assert [by_id[i] for i in ids[k]] == prompts[k]
    assert by_id[late] == "owner, after the sharer closed"
    assert all(r["status"] == "completed" for r in records)


def _row(fl: fnb.Flora, run: fnb.Run) -> dict:
    return fl.runs().set_index("run_id").loc[run.id].to_dict()


def test_a_killed_server_is_taken_over_on_its_port_and_a_run_it_lost_ends_plainly(home, capfd):
    owner = Kernel(home, 10.0, mode="frozen-saver")
    try:
        assert owner.hello["shared"] is False
        fl = fnb.Flora.simulated(speed=10.0)
        assert fl.simulator.shared and fl.simulator.base_url == owner.hello["base_url"]
        kept = [fl.run(MOTION, {"prompt": f"kept {i}"}) for i in range(2)]
        assert owner.ask(do="flush") == "flushed"  # the account with both runs is on disk
        lost = fl.run(MOTION, {"prompt": "made after the last save"})  # the owner never writes it
        assert {r["run_id"] for r in fl.simulator.run_records()} == {r.id for r in kept + [lost]}
        os.kill(owner.proc.pid, signal.SIGKILL)
        owner.proc.wait(TIMEOUT)
        until(lambda: fl.simulator.serving, what="the sharing session to take the account over")
        assert fl.simulator.base_url == owner.hello["base_url"]  # same port: the session's URL stays valid
        for run in kept:
            assert run.wait(120).status == "completed" and run.charged_cost > 0
        lost.wait(120)
        assert (lost.status, lost.error_code, lost.charged_cost) == ("failed", "simulator_restarted", 0.0)
        assert lost.error_message.startswith(RESTARTED)
        assert {r["run_id"]: r["status"] for r in fl.simulator.run_records()} == {r.id: "completed" for r in kept}
        rows = fl.runs()
        assert set(rows["run_id"]) == {r.id for r in kept + [lost]}  # no run lost from the ledger
        assert _row(fl, lost)["error_message"].startswith(RESTARTED)
        fl.close()
        assert capfd.readouterr() == ("", "")  # the watchdog and the poller never print
    finally:
        owner.end()
    assert [r["inputs"]["prompt"] for r in saved_records(home)] == ["kept 0", "kept 1"]


def test_a_run_a_restarted_simulator_does_not_know_ends_but_a_real_floras_404_is_retried(tmp_path):
    """A --no-persist simulator restarted on the same port knows none of the runs; FLORA's 404 stays a poll error."""
    fl = fnb.Flora.simulated(speed=20.0, persist=False, ledger_path=tmp_path / "sim.sqlite")
    port = int(fl.simulator.base_url.split(":")[2].split("/")[0])
    live = fnb.Flora(api_key=fl.simulator.api_key, base_url=fl.simulator.base_url, ledger_path=tmp_path / "live.sqlite",
                     poll_interval=(0.05, 0.1))
    try:
        on_sim, on_live = fl.run(MOTION, {"prompt": "on the simulator"}), live.run(MOTION, {"prompt": "on FLORA"})
        fl.simulator.stop()
        with FloraSimulator(speed=20.0, port=port) as fresh:  # a new simulator, same port, no record of them
            on_sim.wait(30)
            assert (on_sim.status, on_sim.error_code, on_sim.charged_cost) == ("failed", "simulator_restarted", 0.0)
            assert on_sim.error_message.startswith(RESTARTED)
            until(lambda: "NotFoundError" in (live.poller.stats.last_error or ""), what="FLORA's 404 for the live run")
            assert live.poller.stats.failing and "retrying" in live.poller.stats.health
            assert on_live.status in ("pending", "running") and on_live.error_code is None  # kept, looked at again later
            assert fresh.stats()["runs_created"] == 0
    finally:
        live.close()
        fl.close()


def test_a_closed_server_is_taken_over_on_its_port_with_every_saved_run(tmp_path):
    from flora_nb.sim._shared import SharedSimulator, answering

    state = tmp_path / "acct.json"
    first = FloraSimulator(speed=100.0, state_path=state).start()
    with fnb.FloraClient(api_key=first.api_key, base_url=first.base_url) as client:
        made = client.start_technique_run(POSTER, first.workspace_id, {"prompt": "before"}).run_id
    shared = SharedSimulator(state, answering(state) or {}, {"speed": 20.0}, interval=3600.0)  # looks when told
    assert (tmp_path / "acct.address.json").stat().st_mode & 0o777 == 0o600  # it holds the key: this user's only
    try:
        assert shared.not_applied == {"speed": (20.0, 100.0)} and shared.speed == 100.0
        assert shared.note == ("This simulated account was already open in another kernel, so its simulator keeps "
                               "its settings: speed 100 (asked: 20).")
        assert [r["run_id"] for r in shared.run_records()] == [made]  # the truth from the serving simulator
        shared.look()
        assert not shared.serving  # served elsewhere: nothing to do
        first.stop()
        shared.look()
        assert shared.serving and shared.base_url == first.base_url and shared.takeovers == 1
        until(lambda: shared.run_records()[0]["status"] == "completed", what="the saved run to go on")
        assert answering(state)["pid"] == os.getpid()  # it says where it serves now
    finally:
        shared.stop()
    assert answering(state) is None and not (tmp_path / "acct.address.json").exists()


def test_a_takeover_whose_port_is_taken_serves_elsewhere_and_says_so(tmp_path):
    from flora_nb.sim._shared import SharedSimulator, answering

    state = tmp_path / "acct.json"
    first = FloraSimulator(speed=100.0, state_path=state).start()
    old = first.base_url
    shared = SharedSimulator(state, answering(state) or {}, {}, interval=3600.0)
    moved: list[str] = []
    shared.on_moved = moved.append
    first.stop()
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", int(old.split(":")[2].split("/")[0])))
    squatter.listen()
    try:
        shared.look()
        assert shared.serving and shared.base_url != old and moved == [shared.base_url]
        assert answering(state)["base_url"] == shared.base_url
        assert shared.stats()["runs_created"] == 0
    finally:
        squatter.close()
        shared.stop()


def test_a_sharing_session_follows_a_takeover_to_another_port(home, monkeypatch):
    """The old port taken by another program: the session that took the account over sends its requests to the new one."""
    from flora_nb.sim import _shared

    monkeypatch.setattr(_shared, "WATCH_INTERVAL", 3600.0)  # the test says when the watchdog looks
    owner = Kernel(home, 20.0)
    try:
        old = owner.hello["base_url"]  # the child serves the account
        fl = fnb.Flora.simulated(speed=20.0)
        assert fl.simulator.shared and fl.client.base_url == old
        before = fl.run(POSTER, {"prompt": "before the move"}).wait(120)
        assert owner.ask(do="close") == "closed"
        squatter = socket.socket()
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", int(old.split(":")[2].split("/")[0])))
        squatter.listen()
        try:
            fl.simulator.look()
            assert fl.simulator.serving and fl.simulator.base_url != old
            assert fl.client.base_url == fl.simulator.base_url  # the session followed
            after = fl.run(POSTER, {"prompt": "after the move"}).wait(120)
            assert after.status == "completed" and before.status == "completed"
            records = {r["run_id"]: r["inputs"]["prompt"] for r in fl.simulator.run_records()}
            assert records == {before.id: "before the move", after.id: "after the move"}
        finally:
            squatter.close()
            fl.close()
    finally:
        owner.end()


def _barrier(home: Path, stage: str, n: int) -> str:
    """A cell that waits until both kernels have reached it (so both are alive together), for at most two minutes."""
    return textwrap.dedent(f"""
        import pathlib, time
        _d = pathlib.Path({str(home / "barrier")!r}); _d.mkdir(exist_ok=True); (_d / "{stage}-{n}").touch()
        _end = time.monotonic() + 120
        while len(list(_d.glob("{stage}-*"))) < 2 and time.monotonic() < _end:
            time.sleep(0.02)
    """)


@pytest.mark.timeout(600)  # two kernels start and execute a notebook each
def test_two_kernels_run_the_quickstart_at_once(home):
    """Two Jupyter kernels execute 01-quickstart at the same time on the default, saved simulator."""
    import nbformat
    from nbclient import NotebookClient

    results: dict[int, object] = {}
    (home / "barrier").mkdir()

    def execute(n: int) -> None:
        try:
            nb = nbformat.read(NOTEBOOKS / "01-quickstart.ipynb", as_version=4)
            # both kernels are up before either connects, and both stay up until both are done
            nb.cells.insert(0, nbformat.v4.new_code_cell(_barrier(home, "start", n)))
            nb.cells.append(nbformat.v4.new_code_cell(_barrier(home, "end", n) + "print('SHARED', fl.simulator.shared)"))
            NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=False,
                           resources={"metadata": {"path": str(home)}}).execute()
            results[n] = nb
        except BaseException as exc:  # told to the test below
            results[n] = exc
            for stage in ("start", "end"):  # the other kernel waits for this one no longer
                (home / "barrier" / f"{stage}-failed-{n}").touch()

    threads = [threading.Thread(target=execute, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    shared = []
    for n in range(2):
        assert not isinstance(results.get(n), BaseException), results.get(n)
        text = json.dumps(results[n])
        assert "completed" in text and "served by another process" not in text
        shared.append("SHARED True" in text)
    assert sorted(shared) == [False, True]  # one kernel served the account, the other used its simulator
    accounts = [p for p in (home / "sim").glob("*.json") if p.suffixes == [".json"]]  # not *.address.json
    records = [r for path in accounts for r in _records_of(path)]
    prompts = sorted(r["inputs"]["prompt"] for r in records)
    assert prompts.count("a lighthouse at dusk, risograph print") == 2  # one run of each kernel, both kept
    assert all(r["status"] == "completed" for r in records)


def _records_of(path: Path) -> list[dict]:
    with FloraSimulator(state_path=path) as sim:
        return sim.run_records()

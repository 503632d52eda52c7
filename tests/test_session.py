"""The run engine end to end: Flora, Run, the poller and the ledger, against the simulator."""

from __future__ import annotations

import os

import pandas as pd
import pytest

import flora_nb as fnb
from flora_nb import Flora
from flora_nb._frames import RUN_COLUMNS
from flora_nb.sim import Faults, FloraSimulator
from tests.invariants import check
from tests.waiting import PollerTime, until


def prompt_technique(fl: Flora) -> fnb.Technique:
    frame = fl.techniques()
    for tech_id in frame["technique_id"]:
        tech = fl.technique(tech_id)
        if [i.type for i in tech.required_inputs] == ["text"]:
            return tech
    raise AssertionError("the simulator has a technique with one required text input")


def prompt(tech: fnb.Technique, text: str = "a red fox") -> dict[str, str]:
    return {tech.required_inputs[0].id: text}


def wait_all(runs, timeout: float = 60.0) -> None:
    for run in runs:
        run.wait(timeout)


@pytest.fixture
def fl(tmp_path):
    with Flora.simulated(speed=100.0, seed=3, ledger_path=tmp_path / "ledger.sqlite") as session:
        yield session


def test_lifecycle_end_to_end(fl, tmp_path):
    tech = prompt_technique(fl)
    run = fl.run(tech.slug or tech.technique_id, prompt(tech), labels={"who": "test"})
    assert run.status in ("pending", "running") and run.id.startswith("run_")
    assert run.estimated_cost == tech.run_cost and run.charged_cost is None
    assert run.wait(30) is run
    assert run.status == "completed" and run.progress == 100
    record = next(r for r in fl.simulator.run_records() if r["run_id"] == run.id)
    assert run.charged_cost == pytest.approx(record["charged_cost"])
    assert run.created_at <= run.started_at <= run.completed_at
    assert run.inputs == prompt(tech) and run.labels == {"who": "test"}
    image = next(o for o in run.outputs if o.type == "imageUrl")
    assert image.fetch().startswith(b"\x89PNG")
    paths = run.download(tmp_path / "out")
    assert len(paths) == len(run.outputs) and all(p.stat().st_size > 0 for p in paths)
    assert "completed" in repr(run) and "completed" in run._repr_html_()
    assert run.raise_for_status() is run


def test_run_returns_before_completion(fl):
    tech = prompt_technique(fl)
    run = fl.run(tech.technique_id, prompt(tech))
    assert not run.done  # the call did not wait for the run
    run.wait(30)
    assert run.done


def test_failed_run_raises_with_run(tmp_path):
    with Flora.simulated(speed=100.0, faults=Faults(run_failure_rate=1.0), ledger_path=tmp_path / "l.sqlite") as fl:
        tech = prompt_technique(fl)
        run = fl.run(tech.technique_id, prompt(tech)).wait(30)
        assert run.status == "failed" and run.error_code
        with pytest.raises(fnb.RunFailedError) as info:
            run.raise_for_status()
        assert info.value.run is run
        assert run.charged_cost == 0.0  # refunded


def test_wait_timeout_keeps_tracking(tmp_path):
    with Flora.simulated(speed=2.0, ledger_path=tmp_path / "l.sqlite") as fl:
        tech = prompt_technique(fl)
        run = fl.run(tech.technique_id, prompt(tech))
        with pytest.raises(fnb.FloraTimeout, match="still"):
            run.wait(0.05)
        assert fl.status()["tracked"] == 1


def test_bad_inputs_rejected_before_sending(fl):
    tech = prompt_technique(fl)
    before = fl.simulator.stats()["requests_by_route"].get("POST /runs/technique", 0)
    with pytest.raises(fnb.InputError) as info:
        fl.run(tech.technique_id, {"bogus": "x"})
    assert "missing required input" in str(info.value) and "unknown input 'bogus'" in str(info.value)
    assert fl.simulator.stats()["requests_by_route"].get("POST /runs/technique", 0) == before


def test_rejected_start_is_failed_in_ledger(tmp_path):
    with Flora.simulated(speed=100.0, faults=Faults(credits=0.0), ledger_path=tmp_path / "l.sqlite") as fl:
        tech = prompt_technique(fl)
        with pytest.raises(fnb.InsufficientCreditsError):
            fl.run(tech.technique_id, prompt(tech))
        frame = fl.runs()
        assert list(frame["status"]) == ["failed"] and list(frame["error_code"]) == ["insufficient_credits"]
        assert frame["charged_cost"].tolist() == [0.0]


def test_runs_frame_schema_and_dtypes(fl):
    tech = prompt_technique(fl)
    wait_all([fl.run(tech.technique_id, prompt(tech, f"p{i}"), labels={"batch": i}) for i in range(3)])
    frame = fl.runs()
    assert list(frame.columns[: len(RUN_COLUMNS)]) == RUN_COLUMNS
    expected = {
        "run_id": "string", "sweep_id": "string", "technique_id": "string", "status": "category",
        "progress": "float64", "estimated_cost": "float64", "charged_cost": "float64",
        "created_at": "datetime64[ns, UTC]", "completed_at": "datetime64[ns, UTC]",
        "queue_seconds": "float64", "total_seconds": "float64", "error_code": "string", "output_urls": "object",
    }
    assert {c: str(frame[c].dtype) for c in expected} == expected
    assert list(frame["status"].cat.categories) == ["queued", "starting", "pending", "running", "completed", "failed", "skipped"]
    input_col = f"input.{tech.required_inputs[0].id}"
    assert frame[input_col].tolist() == ["p0", "p1", "p2"] and frame["label.batch"].tolist() == [0, 1, 2]
    assert (frame["total_seconds"] >= frame["run_seconds"]).all()
    assert frame["sweep_id"].isna().all()
    assert fl.runs(status="completed").shape[0] == 3 and fl.runs(status="failed").empty
    assert fl.runs(technique=tech.name).shape[0] == 3


def test_costs_match_the_server_to_the_cent(tmp_path):
    with Flora.simulated(speed=100.0, faults=Faults(run_failure_rate=0.3), seed=5,
                         ledger_path=tmp_path / "l.sqlite") as fl:
        frame = fl.techniques()
        runs = []
        for tech_id in frame["technique_id"]:
            tech = fl.technique(tech_id)
            if all(i.type == "text" for i in tech.required_inputs):
                runs += [fl.run(tech_id, {i.id: f"x{n}" for i in tech.required_inputs}) for n in range(3)]
        wait_all(runs)
        _wait_costs_known(fl)
        costs = fl.costs(detail=True)
        stats = fl.simulator.stats()
        assert round(costs["charged_usd"].sum(), 2) == round(stats["total_charged"], 2)
        assert costs["runs"].sum() == stats["runs_created"] == len(runs)
        assert costs["failed"].sum() == stats["runs_by_status"]["failed"]
        assert costs["completed"].sum() == stats["runs_by_status"]["completed"]
        assert set(costs.columns) >= {"estimated_usd", "cost_per_completed_usd", "mean_run_seconds", "unknown_cost_runs"}


def _wait_costs_known(fl: Flora) -> None:
    until(lambda: not fl.runs()["charged_cost"].isna().any(), what="every charge to be known")


def test_unknown_cost_is_nan_until_final(tmp_path):
    with Flora.simulated(speed=100.0, cost_lag=1.0, ledger_path=tmp_path / "l.sqlite") as fl:
        tech = prompt_technique(fl)
        run = fl.run(tech.technique_id, prompt(tech)).wait(30)
        assert run.status == "completed" and run.charged_cost is None  # FLORA has not settled it yet
        assert pd.isna(fl.runs()["charged_cost"].iloc[0])
        costs = fl.costs(detail=True)
        assert costs["unknown_cost_runs"].tolist() == [1] and pd.isna(costs["charged_usd"].iloc[0])
        _wait_costs_known(fl)
        assert fl.runs()["charged_cost"].iloc[0] == pytest.approx(tech.run_cost)
        assert fl.costs(detail=True)["unknown_cost_runs"].tolist() == [0]


def test_faults_one_server_run_per_logical_start(tmp_path, monkeypatch):
    monkeypatch.setattr(fnb.FloraClient, "_backoff", lambda self, attempt: 0.01)  # how long is not the promise
    faults = Faults(drop_rate=0.3, error_rate=0.2)
    with Flora.simulated(speed=100.0, faults=faults, seed=11, max_retries=10,
                         ledger_path=tmp_path / "l.sqlite") as fl:
        tech = prompt_technique(fl)
        runs = [fl.run(tech.technique_id, prompt(tech, f"v{i}")) for i in range(20)]
        wait_all(runs)
        records = fl.simulator.run_records()
        assert fl.simulator.stats()["drops"] > 0
        assert len(records) == 20
        by_key = {r["idempotency_key"]: r["run_id"] for r in records}
        assert {run.idempotency_key: run.id for run in runs} == by_key
        assert fl.status()["reconciled"] > 0


def test_poller_survives_listener_and_network_errors(fl):
    tech = prompt_technique(fl)
    seen = []

    def broken(run):
        seen.append(run.status)
        raise RuntimeError("widget exploded")

    run = fl.run(tech.technique_id, prompt(tech))
    run.on_change(broken)
    fl.simulator.faults = Faults(error_rate=1.0)
    until(lambda: fl.status()["poller_errors"] > 0, what="a poll to fail")
    fl.simulator.faults = Faults()
    run.wait(30)
    status = fl.status()
    assert run.status == "completed"
    assert status["poller_errors"] > 0 and status["listener_errors"] > 0 and seen
    assert status["poller_running"] and "ServerError" in status["poller_last_error"]


def test_resume_after_close(tmp_path):
    ledger = tmp_path / "l.sqlite"
    with FloraSimulator(speed=20.0) as sim:
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=ledger, poll_interval=(0.05, 0.1)) as fl:
            tech = prompt_technique(fl)
            ids = [fl.run(tech.technique_id, prompt(tech, f"r{i}")).id for i in range(3)]
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=ledger, poll_interval=(0.05, 0.1)) as again:
            resumed = {run.id: run for run in again.resume()}
            assert set(ids) <= set(resumed)
            wait_all(resumed.values())
            assert set(again.runs()["status"]) == {"completed"}


def test_two_sessions_share_a_ledger(tmp_path):
    import concurrent.futures as cf

    ledger = tmp_path / "shared.sqlite"
    with FloraSimulator(speed=100.0) as sim:
        opts = dict(api_key=sim.api_key, base_url=sim.base_url, ledger_path=ledger, poll_interval=(0.02, 0.05))
        with Flora(**opts) as a, Flora(**opts) as b:
            tech = prompt_technique(a)
            jobs = [(s, f"{n}{i}") for i in range(8) for s, n in ((a, "a"), (b, "b"))]
            with cf.ThreadPoolExecutor(4) as pool:  # both sessions write the file at the same time
                runs = list(pool.map(lambda job: job[0].run(tech.technique_id, prompt(tech, job[1])), jobs))
            wait_all(runs)
            for session in (a, b):
                frame = session.runs()
                assert len(frame) == 16 and set(frame["status"]) == {"completed"}
                assert frame["run_id"].is_unique
            assert sim.stats()["runs_created"] == 16


def test_ambiguous_workspace_and_missing_key(tmp_path, monkeypatch):
    monkeypatch.delenv("FLORA_API_KEY", raising=False)
    with pytest.raises(fnb.ConfigError, match="FLORA_API_KEY"):
        Flora(ledger_path=tmp_path / "l.sqlite")
    keys = {"sk_two": ["ws_sim_demo", "ws_sim_private"]}
    with FloraSimulator(api_keys=("sk_two",), key_workspaces=keys) as sim:
        with Flora(api_key="sk_two", base_url=sim.base_url, ledger_path=tmp_path / "l.sqlite") as fl:
            with pytest.raises(fnb.ConfigError, match="ws_sim_demo.*ws_sim_private|ws_sim_private.*ws_sim_demo"):
                _ = fl.workspace_id
        with Flora(api_key="sk_two", base_url=sim.base_url, workspace="ws_sim_private",
                   ledger_path=tmp_path / "l.sqlite") as fl:
            assert fl.workspace_id == "ws_sim_private"


def test_history_frame(fl):
    tech = prompt_technique(fl)
    wait_all([fl.run(tech.technique_id, prompt(tech, f"h{i}")) for i in range(3)])
    hist = fl.history()
    assert len(hist) == 3 and set(hist["status"]) == {"completed"}
    assert str(hist["created_at"].dtype) == "datetime64[ns, UTC]"


def test_ledger_file_is_private_and_keyless(fl):
    tech = prompt_technique(fl)
    fl.run(tech.technique_id, prompt(tech)).wait(30)
    path = fl.ledger.path
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    data = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert fl.simulator.api_key.encode() not in data
    assert fl.ledger.events(1)[0]["note"] == "intent"


def test_status_and_repr(fl):
    status = fl.status()
    assert status["simulator"] is True and status["poller_running"] and status["endpoint"] == fl.endpoint
    assert fl.simulator.api_key not in repr(fl)


# ------------------------------------------------------------ lost and unconfirmed starts


def test_error_after_an_unanswered_attempt_is_reconciled_not_failed(tmp_path, monkeypatch):
    # Every start is dropped after the server creates its run; most retries then get a 500.
    monkeypatch.setattr(fnb.FloraClient, "_backoff", lambda self, attempt: 0.01)
    faults = Faults(drop_rate=1.0, error_rate=0.6)
    with Flora.simulated(speed=100.0, faults=faults, seed=21, max_retries=2, ledger_path=tmp_path / "l.sqlite") as fl:
        tech = prompt_technique(fl)
        runs = [fl.run(tech.technique_id, prompt(tech, f"d{i}")) for i in range(25)]
        fl.simulator.faults = Faults()  # let reconciliation list runs without injected errors
        for run in runs:
            try:
                run.wait(60)
            except fnb.StartUnconfirmedError:
                pass
        server_records, stats = fl.simulator.run_records(), fl.simulator.stats()
        records = {r["idempotency_key"]: r for r in server_records}
        found_after_500 = [run for run in runs if run.id and any(
            "ServerError" in (e["note"] or "") for e in fl.ledger.events(run.local_id))]
    assert found_after_500, "some start ended in a 500 after its dropped attempt, and its run was found"
    report = check(tmp_path / "l.sqlite", server_records, stats)  # groups (pairing unknown) checked as groups
    assert not report.wrong_bindings and not report.missing and report.server_runs == len(records), report
    for run in runs:  # every run the server created is bound; none is a $0 "failure"
        if (run.pairing or "").startswith("unknown"):
            continue  # told apart only as a group with its neighbours: the check above holds it to its group
        record = records.get(run.idempotency_key)
        if record is None:  # every attempt got a 500 before the server made anything: proved, $0
            assert run.status == "skipped" and run.error_code == "start_not_received" and run.id is None
        else:
            assert run.id == record["run_id"] and run.status == record["status"] == "completed"


def test_a_start_flora_never_received_ends_the_wait_with_a_clear_error(tmp_path):
    with Flora.simulated(speed=100.0, max_retries=0, ledger_path=tmp_path / "l.sqlite") as fl:
        tech = prompt_technique(fl)
        assert fl.workspace_id  # resolved (and the technique cached) before the server breaks
        fl.simulator.faults = Faults(error_rate=1.0)
        run = fl.run(tech.technique_id, prompt(tech))
        assert run.status == "starting" and run.error_code == "start_lost"
        fl.simulator.faults = Faults()
        with pytest.raises(fnb.StartUnconfirmedError, match="never received") as info:
            run.wait(30)
        # the server's history over the start's finite window holds no run: proved never received, $0
        assert info.value.run is run and run.done and run.status == "skipped" and run.charged_cost == 0.0
        assert fl.simulator.stats()["runs_created"] == 0
        assert fl.runs()["error_code"].tolist() == ["start_not_received"]


def test_poller_does_not_spin_on_unexpected_errors(fl, monkeypatch):
    tech = prompt_technique(fl)

    def broken(pairs):
        raise RuntimeError("ledger exploded")

    # One second of the poller's own time, virtual: how many cycles fit in it depends only on the
    # waits the poller chooses, not on how busy the machine is.
    stats = fl.poller.stats  # what status() shows as poller_errors and poller_cycles
    second = PollerTime(fl.poller, 1.0, snapshot=lambda: {"poller_errors": stats.errors, "poller_cycles": stats.cycles})
    monkeypatch.setattr(fl.engine, "record", broken)
    run = fl.run(tech.technique_id, prompt(tech))
    until(second.closed.is_set, what="a second of the poller's time to pass")
    status = second.seen
    assert status["poller_errors"] >= 1
    assert status["poller_cycles"] < 40  # backs off by the poll interval, not a 5 ms hot loop
    monkeypatch.undo()
    assert run.wait(30).status == "completed"


def test_resume_skips_sweeps_of_dead_sessions_and_leaves_live_starts(tmp_path):
    from flora_nb._ledger import Ledger

    ledger_path = tmp_path / "l.sqlite"
    with FloraSimulator(speed=100.0) as sim:
        ledger = Ledger(ledger_path)
        common = dict(endpoint=sim.base_url, workspace_id=sim.workspace_id, technique_id="tech_a1poster",
                      inputs={"prompt": "x"})
        dead = f"{__import__('socket').gethostname()}:999999999:dead"
        ledger.add_intents([{**common, "idempotency_key": "k1", "status": "queued", "owner": dead, "sweep_id": "swp_x"}])
        ledger.close()
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=ledger_path) as fl:
            frame = fl.runs()
            assert frame["status"].tolist() == ["skipped"] and frame["error_code"].tolist() == ["interrupted"]
            live = fl.engine.queue(fl.technique("tech_a1poster"), sim.workspace_id, [{"inputs": {"prompt": "y"}}],
                             status="starting")[0]
            assert fl.engine.starts_in_flight(sim.workspace_id, "tech_a1poster")  # ours, in flight: blocks matching
            fl.engine.update(live, error_code="start_lost")
            assert not fl.engine.starts_in_flight(sim.workspace_id, "tech_a1poster")

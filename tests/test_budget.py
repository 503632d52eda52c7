"""The budget rule against the simulator's own books: charges above estimates never break a budget."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import flora_nb as fnb
from flora_nb import Flora
from flora_nb._budget import DEFAULT_RATIO, reserve_ratio

MOTION = "image-to-motion"  # $0.90 a run, final charges within +-25% of it (fixed per inputs and seed)
POSTER = "tech_a1poster"  # $0.04, charges exactly its price


def _motion_sweep(seed: int, tmp_path, runs: int, budget: float, concurrency: int) -> tuple[float, list]:
    with Flora.simulated(speed=300.0, seed=seed, ledger_path=tmp_path / f"l{seed}-{runs}.sqlite") as fl:
        sweep = fl.sweep(MOTION, grid={"prompt": [f"wave {i}" for i in range(runs)]}, budget=budget,
                         max_concurrency=concurrency).wait(60)
        charged = fl.simulator.stats()["total_charged"]
        assert fl.simulator.stats()["runs_created"] == sum(1 for r in sweep.runs if r.status != "skipped")
        return charged, sweep.runs


@pytest.mark.parametrize("seed", range(8))
def test_four_motion_runs_never_pass_a_budget_equal_to_their_estimate(seed, tmp_path):
    charged, runs = _motion_sweep(seed, tmp_path, runs=4, budget=3.60, concurrency=4)
    assert charged <= 3.60 + 1e-9, f"seed {seed}: the server charged ${charged:.4f} under a $3.60 budget"
    skipped = [r for r in runs if r.status == "skipped"]
    assert {r.error_code for r in skipped} <= {"budget"} and all(r.charged_cost == 0.0 for r in skipped)
    if skipped:  # most of the budget is used: what is left could not hold one more run's reserve
        assert charged + 0.90 * DEFAULT_RATIO > 3.60
    assert charged >= 0.5 * 3.60


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_a_longer_sweep_uses_most_of_its_budget_and_never_more(seed, tmp_path):
    charged, runs = _motion_sweep(seed, tmp_path, runs=6, budget=5.40, concurrency=3)
    assert charged <= 5.40 + 1e-9
    if any(r.status == "skipped" for r in runs):  # stopped only when one more reserve would not fit
        assert charged + 0.90 * DEFAULT_RATIO > 5.40
    assert charged >= 0.6 * 5.40


def test_reserve_ratio_rule():
    assert reserve_ratio(0, None, None) == DEFAULT_RATIO  # nothing known
    assert reserve_ratio(1, 0.8, 0.8) == DEFAULT_RATIO  # one charge is no bound
    assert reserve_ratio(3, 1.0, 1.0) == 1.0  # three agreeing charges: a fixed price
    assert reserve_ratio(5, 0.8, 1.1) == DEFAULT_RATIO  # varying charges: never below 1.25
    assert reserve_ratio(5, 0.9, 1.6) == 1.6  # the highest seen when above it


def test_a_fixed_price_technique_fills_its_budget(tmp_path, ledger_at):
    with Flora.simulated(speed=100.0, ledger=ledger_at("l")) as fl:
        fl.sweep(POSTER, grid={"prompt": ["w1", "w2", "w3"]}).wait(60)  # teaches the ledger: 3 charges at 1.0x
        assert fl.reserve_ratio(POSTER) == fl.reserve_ratio("poster-studio") == 1.0
        assert fl.reserve_ratio(MOTION) == DEFAULT_RATIO  # nothing known about it yet
        sweep = fl.sweep(POSTER, grid={"prompt": [f"p{i}" for i in range(10)]}, budget=0.40,
                         max_concurrency=2).wait(60)
        assert sweep.counts == {"completed": 10}  # 10 x $0.04 fits $0.40 exactly
        assert sweep.spent == pytest.approx(0.40) and sweep.budget_left == pytest.approx(0.0)
        assert fl.simulator.stats()["total_charged"] == pytest.approx(0.52)


# ------------------------------------------------------------------ session budget


def test_session_budget_across_single_runs_and_sweeps(tmp_path, ledger_at):
    with Flora.simulated(speed=100.0, budget=0.30, ledger=ledger_at("l")) as fl:
        for i in range(3):  # each holds 0.04 x 1.25 until charged
            fl.run(POSTER, {"prompt": f"single {i}"}).wait(30)
        assert fl.reserve_ratio(POSTER) == 1.0  # three charges agree: runs now hold $0.04 each
        sweep = fl.sweep(POSTER, grid={"prompt": [f"s{i}" for i in range(3)]}).wait(60)
        assert sweep.counts == {"completed": 3}
        with pytest.raises(fnb.BudgetExceededError, match="session budget of \\$0.30"):
            fl.sweep(POSTER, grid={"prompt": [f"t{i}" for i in range(3)]})  # $0.12 > $0.06 left
        assert fl.sweep(POSTER, grid={"prompt": ["u"]}).wait(60).counts == {"completed": 1}
        created = fl.simulator.stats()["runs_created"]
        with pytest.raises(fnb.BudgetExceededError, match="session budget of \\$0.30 has \\$0.02 left"):
            fl.run(POSTER, {"prompt": "one more"})
        assert fl.simulator.stats()["runs_created"] == created == 7  # refused before the POST
        assert len(fl.runs()) == 7  # and without a ledger row
        assert fl.simulator.stats()["total_charged"] == pytest.approx(0.28)


def test_session_budget_skips_sweep_runs_that_no_longer_fit(tmp_path, ledger_at):
    with Flora.simulated(speed=100.0, budget=0.085, ledger=ledger_at("l")) as fl:
        sweep = fl.sweep(POSTER, grid={"prompt": ["a", "b"]}, max_concurrency=2).wait(60)
        # the first holds $0.05; the second waits for its charge ($0.04), then $0.04 + $0.05 > $0.085
        assert sorted(r.status for r in sweep.runs) == ["completed", "skipped"]
        [skipped] = [r for r in sweep.runs if r.status == "skipped"]
        assert skipped.error_code == "budget" and "session budget of $0.09" in skipped.error_message
        assert fl.simulator.stats()["runs_created"] == 1
        assert fl.simulator.stats()["total_charged"] <= 0.085
        frame = fl.runs()
        assert frame.loc[frame["status"] == "skipped", "charged_cost"].tolist() == [0.0]


def test_budget_values_are_checked():
    with pytest.raises(fnb.InputError, match="budget must be a number"):
        Flora(api_key="sk_x", base_url="http://127.0.0.1:9/api/v1", budget=float("nan"), resume=False)


# ------------------------------------------------------------------ bad prices and charges


def _priced(run_cost) -> dict:
    return {"technique_id": "tech_odd", "name": "Odd Price", "description": "x", "run_cost": run_cost,
            "inputs": [{"id": "prompt", "name": "Prompt", "type": "text"}],
            "outputs": [{"id": "image", "name": "Image", "type": "imageUrl"}], "duration_seconds": 1}


@pytest.mark.parametrize("price", [float("nan"), float("inf"), -0.5, "0.10", "cheap", None, True])
def test_a_price_that_is_not_a_finite_amount_takes_no_budget(price, tmp_path, ledger_at):
    with Flora.simulated(speed=100.0, catalog=[_priced(price)], ledger=ledger_at("l")) as fl:
        assert fl.technique("tech_odd").run_cost is None  # unknown, never NaN, -0.5 or a string
        fl.simulator.reset_stats()
        with pytest.raises(fnb.InputError, match="no known price.*drop the budget"):
            fl.sweep("tech_odd", grid={"prompt": ["a", "b"]}, budget=5.0)
        assert fl.simulator.stats()["requests_total"] == 0
        frame = fl.sweep("tech_odd", grid={"prompt": ["a"]}, dry_run=True)
        assert math.isnan(frame["estimated_cost"].iloc[0])
    with Flora.simulated(speed=100.0, budget=5.0, catalog=[_priced(price)], ledger=ledger_at("m")) as fl:
        with pytest.raises(fnb.InputError, match="no known price.*session budget"):
            fl.run("tech_odd", {"prompt": "a"})
        with pytest.raises(fnb.InputError, match="no known price"):
            fl.sweep("tech_odd", grid={"prompt": ["a"]})
        assert fl.simulator.stats()["runs_created"] == 0 and len(fl.runs()) == 0


class _HostileFlora(BaseHTTPRequestHandler):
    """A FLORA that reports final charges of -5, Infinity, NaN and "free" before an honest one."""

    charges = [-5, float("inf"), float("nan"), "free", 0.4]
    runs: list[dict] = []
    lock = threading.Lock()

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()  # json writes NaN / Infinity tokens, as a sloppy server would
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _run(self, number: int) -> dict:
        base = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1"
        return {"run_id": f"run_{number}", "status": "completed", "progress": 100, "created_at": 1.7e12 + number,
                "completed_at": 1.7e12 + number + 1, "charged_cost": self.charges[number % len(self.charges)],
                "poll_url": f"{base}/runs/run_{number}", "workspace_id": "ws_h",
                "outputs": [{"output_id": "image", "type": "imageUrl", "url": "https://example.com/x.png"}]}

    def do_GET(self):
        path = self.path.split("?")[0]
        if path.endswith("/workspaces"):
            return self._send(200, {"workspaces": [{"workspace_id": "ws_h", "name": "hostile"}]})
        if path.endswith("/techniques/tech_h"):
            return self._send(200, {**_priced(0.5), "technique_id": "tech_h"})
        if path.endswith("/technique-runs"):
            with self.lock:
                items = [self._run(n) for n in reversed(range(len(self.runs)))]
            return self._send(200, {"technique_runs": items, "meta": {"next_cursor": None}})
        number = int(path.rsplit("_", 1)[-1])
        return self._send(200, self._run(number))

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            number = len(self.runs)
            self.runs.append({})
        run = self._run(number)
        return self._send(201, {"run_id": run["run_id"], "charged_cost": float("nan"), "estimated_seconds": 0.01,
                                "poll_url": run["poll_url"]})


def test_a_charge_that_is_not_a_finite_amount_is_unknown_and_never_spend(tmp_path, caplog, capsys, ledger_at):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileFlora)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    try:
        with Flora(api_key="sk_h", base_url=base, ledger=ledger_at("l"), poll_interval=(0.02, 0.05),
                   resume=False) as fl:
            sweep = fl.sweep("tech_h", grid={"prompt": [f"p{i}" for i in range(5)]}, budget=3.2,
                             max_concurrency=1).wait(30)
            charges = {r.id: r.charged_cost for r in sweep.runs}
            assert charges == {"run_0": None, "run_1": None, "run_2": None, "run_3": None, "run_4": 0.4}
            assert sweep.spent == pytest.approx(0.4) and fl.status()["spent_usd"] == pytest.approx(0.4)
            assert fl.costs(detail=True)["charged_usd"].iloc[0] == pytest.approx(0.4)
            assert fl.costs(detail=True)["unknown_cost_runs"].iloc[0] == 4
            assert sweep.reserved == pytest.approx(4 * 0.5 * DEFAULT_RATIO)  # unknown charges keep their reserve
            events = [e["charged_cost"] for r in sweep.runs for e in fl.ledger.events(r.local_id)]
            assert not any(c is not None and (c < 0 or math.isinf(c)) for c in events)
    finally:
        server.shutdown()
    assert "not a finite amount" in caplog.text  # logged ...
    assert capsys.readouterr().out == ""  # ... never printed


def test_the_session_budget_can_be_changed_mid_session(tmp_path, ledger_at):
    with Flora.simulated(speed=200.0, ledger=ledger_at("l")) as fl:
        fl.budget = 0.05
        fl.run(POSTER, {"prompt": "one"}).wait(30)
        with pytest.raises(fnb.BudgetExceededError):
            fl.run(POSTER, {"prompt": "two"})
        fl.budget = 1.0
        fl.run(POSTER, {"prompt": "three"}).wait(30)
        with pytest.raises(fnb.InputError, match="budget must be a number"):
            fl.budget = "lots"
        assert fl.budget == 1.0 and fl.simulator.stats()["runs_created"] == 2

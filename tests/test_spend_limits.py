"""Spend limits kept in the ledger: every session and process that uses it enforces them together."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import flora_nb as fnb
from flora_nb import Flora
from flora_nb.sim import FloraSimulator
from tests.invariants import SimProcess, check

POSTER = "tech_a1poster"  # $0.04 a run


def test_a_limit_refuses_the_start_that_would_pass_it_and_says_which(tmp_path, ledger_at):
    with Flora.simulated(speed=100.0, ledger=ledger_at("l")) as fl:
        fl.set_spend_limit(0.10)
        fl.run(POSTER, prompt="a").wait(60)
        fl.run(POSTER, prompt="b").wait(60)
        with pytest.raises(fnb.BudgetExceededError) as refused:
            fl.run(POSTER, prompt="c")
        text = str(refused.value)
        assert "spend limit of $0.10" in text and "$0.02 left" in text and "$0.08 spent" in text and "held" in text
        assert fl.simulator.stats()["runs_created"] == 2
        frame = fl.spend_limits()
        assert list(frame.columns) == ["technique", "period", "limit", "spent", "held", "left", "pending"]
        assert frame.iloc[0]["spent"] == pytest.approx(0.08) and frame.iloc[0]["left"] == pytest.approx(0.02)
        fl.set_spend_limit(None)  # removed
        assert fl.spend_limits().empty
        fl.run(POSTER, prompt="c").wait(60)
        assert fl.simulator.stats()["runs_created"] == 3


def test_limits_by_technique_and_period_and_bad_values(tmp_path, ledger_at):
    with Flora.simulated(speed=100.0, ledger=ledger_at("l")) as fl:
        fl.set_spend_limit(0.05, period="day", technique="poster-studio")  # a slug names its technique
        fl.run(POSTER, prompt="a").wait(60)
        with pytest.raises(fnb.BudgetExceededError, match="a day .UTC. for tech_a1poster"):
            fl.run(POSTER, prompt="b")
        fl.run("jingle-writer", prompt="a tune").wait(60)  # another technique: not covered
        for bad in (-1, float("nan"), "ten"):
            with pytest.raises(fnb.InputError, match="spend limit is a number of USD"):
                fl.set_spend_limit(bad)
        with pytest.raises(fnb.InputError, match="period must be"):
            fl.set_spend_limit(1.0, period="week")


def test_a_sweep_stops_at_a_limit_and_says_so(tmp_path, ledger_at):
    with Flora.simulated(speed=100.0, ledger=ledger_at("l")) as fl:
        fl.set_spend_limit(0.20)
        sweep = fl.sweep(POSTER, grid={"prompt": [f"p{i}" for i in range(10)]}, max_concurrency=3).wait(120)
        assert fl.simulator.stats()["total_charged"] <= 0.20 + 1e-9
        skipped = [r for r in sweep.runs if r.status == "skipped"]
        assert skipped and all("spend limit of $0.20" in (r.error_message or "") for r in skipped)


KERNEL = textwrap.dedent("""
    import sys
    from flora_nb import Flora
    key, base, ledger, tag = sys.argv[1:5]
    with Flora(api_key=key, base_url=base, ledger_path=ledger, poll_interval=(0.02, 0.05), confirm_above=None) as fl:
        print("ready", flush=True)
        sys.stdin.readline()  # both kernels sweep from the same moment, however long each took to start
        sweep = fl.sweep("tech_a1poster", grid={"prompt": [f"{tag}-{i:02d}" for i in range(20)]}, max_concurrency=4)
        sweep.wait(120)
        print(sum(1 for r in sweep.runs if r.id), flush=True)
""")


def test_two_kernels_racing_never_pass_a_shared_limit_together(tmp_path, ledger_at):
    # Before: budgets held per session only (two kernels with $0.10 each spent $0.16 together).
    ledger = ledger_at("shared")
    with SimProcess(speed=50.0, seed=4) as sim:
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=ledger) as fl:
            fl.set_spend_limit(0.40)
        kernels = [subprocess.Popen([sys.executable, "-c", KERNEL, sim.api_key, sim.base_url, str(ledger), tag],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for tag in ("a", "b")]
        # Started together (a kernel slow to import, on a busy machine, found the limit spent: "both got a share" failed).
        assert [k.stdout.readline().strip() for k in kernels] == ["ready", "ready"]
        for k in kernels:
            k.stdin.write("go\n")
            k.stdin.flush()
        outs = [k.communicate(timeout=150)[0] for k in kernels]
        assert all(k.returncode == 0 for k in kernels), outs
        stats, records = sim.stats(), sim.records()
    report = check(ledger, records, stats)
    assert report.ok, report
    assert 0.28 - 1e-9 <= stats["total_charged"] <= 0.40 + 1e-9, stats["total_charged"]
    assert all(int(o.strip().splitlines()[-1]) > 0 for o in outs)  # both kernels got a share


def test_the_ledger_keeps_limits_for_a_later_session(tmp_path, ledger_at):
    with FloraSimulator(speed=100.0) as sim:
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger=ledger_at("l")) as fl:
            fl.set_spend_limit(0.06)  # one run of $0.04 (held at $0.05 until its charge is known)
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger=ledger_at("l")) as later:
            later.run(POSTER, prompt="a").wait(60)
            with pytest.raises(fnb.BudgetExceededError):
                later.run(POSTER, prompt="b")

"""Scale benchmark: the ledger and the session with many runs.

(a) fl.runs() over 100,000 completed ledger rows (inputs, labels, outputs, costs, timestamps):
    median of 5 calls to build the DataFrame; target < 1 s. Baseline: pandas.read_sql of the
    same table through sqlite3 (raw columns, no dtype work).
(b) status writes/s through the poller's path: the session's sink (Flora.record: poll answers ->
    changes -> Ledger.update_many -> the Run handles) in batches of 200 answers as the poller
    delivers them (pending->running, progress, running->completed with cost and outputs);
    target >= 2,000/s and within 2x of the ledger alone. Baselines: Ledger.update_many of the same
    changes, and raw sqlite3 executemany, each on an identical ledger file, interleaved batch by
    batch; median of 3 rounds.
(c) memory per tracked run, by RSS: a Flora session starts N=2,000 runs of a 1-hour technique
    (simulator in a child process, so only the session is measured) and the poller looks at every
    one of them at least once; RSS growth / N, median of 3 sessions; target < 10 KB/run. Baseline:
    the same runs' ledger rows as plain dicts (RSS growth).

Usage: python benchmarks/bench_scale.py [--rows N] [--writes N] [--tracked N] [--parts abc]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd
from _common import TECH, catalog, median_seconds, private_home, scaled_poll_interval, sim_process

from flora_nb import Flora
from flora_nb._ledger import COLUMNS, Ledger
from flora_nb._models import RunState
from flora_nb._run import Run

ENDPOINT = "http://127.0.0.1:9/api/v1"  # never contacted: part (a) only reads the ledger
BATCH = 200
STYLES = ("noir", "pastel", "bauhaus", "risograph")


def add_rows(ledger: Ledger, n: int) -> list[int]:
    """n intents as Flora._start writes them, then confirmed as pending runs."""
    ids = [ledger.add_intent(
        endpoint=ENDPOINT, workspace_id="ws_bench", idempotency_key=f"flora_nb-bench{i:08d}",
        technique_id=TECH, technique_name="Bench Poster", estimated_cost=0.04,
        inputs={"prompt": f"a poster of city number {i % 97}", "style": STYLES[i % 4], "size": 256 + i % 3},
        labels={"experiment": f"e{i % 5}", "seed": i},
        sweep_id=f"swp_{i // 100:04d}" if i % 2 else None, variation=i % 100 if i % 2 else None,
    ) for i in range(n)]
    now = time.time()
    ledger.update_many([(lid, {
        "run_id": f"run_{lid:020x}", "status": "pending", "project_id": "prj_bench", "estimated_seconds": 12.0,
        "poll_url": f"{ENDPOINT}/runs/run_{lid:020x}", "created_at": now,
    }) for lid in ids], note="started")
    return ids


def running(lid: int, now: float) -> dict[str, Any]:
    return {"status": "running", "progress": 10.0, "started_at": now}


def progress(lid: int, now: float) -> dict[str, Any]:
    return {"progress": 55.5}


def completed(lid: int, now: float) -> dict[str, Any]:
    if lid % 20 == 0:
        return {"status": "failed", "progress": 62.0, "completed_at": now, "charged_cost": 0.0,
                "error_code": "GENERATION_GENERIC_ERROR", "error_message": "The generation failed."}
    return {"status": "completed", "progress": 100.0, "completed_at": now, "charged_cost": 0.04,
            "outputs": [{"output_id": "image", "type": "imageUrl",
                         "url": f"http://127.0.0.1:9/media/run_{lid:020x}/image.png"}]}


PHASES = (running, progress, completed)


def part_a(home: Path, rows: int) -> None:
    ledger = Ledger(home / "a.sqlite")
    began = time.perf_counter()
    ids = add_rows(ledger, rows)
    now = time.time()
    for k in range(0, rows, 500):
        for phase in PHASES:
            ledger.update_many([(lid, phase(lid, now)) for lid in ids[k:k + 500]])
    fill = time.perf_counter() - began
    ledger.close()
    conn = sqlite3.connect(home / "a.sqlite")
    fl = Flora(api_key="sk_bench", base_url=ENDPOINT, ledger_path=home / "a.sqlite", resume=False)
    try:
        frame = fl.runs()  # warm-up (and a sanity check)
        assert len(frame) == rows and frame["status"].eq("completed").sum() == rows - len(ids[::20])
        ours = median_seconds(fl.runs, 5)
    finally:
        fl.close()
    base = median_seconds(lambda: pd.read_sql("SELECT * FROM runs", conn), 5)
    conn.close()
    print(f"(a) {rows} ledger rows (filled in {fill:.1f} s), {frame.shape[1]} DataFrame columns")
    print(f"    pandas.read_sql, raw       : {base:7.3f} s (baseline)")
    print(f"    fl.runs()                  : {ours:7.3f} s   (target < 1 s: {'met' if ours < 1.0 else 'MISSED'})")
    print(f"    ratio fl.runs()/read_sql   : {ours / base:7.2f}")


def part_b(home: Path, writes: int, rounds: int = 3) -> None:
    per_phase = max(BATCH, writes // len(PHASES) // BATCH * BATCH)
    results = [write_round(home, per_phase, r) for r in range(rounds)]
    o, l, b = (statistics.median(r[i] for r in results) for i in range(3))
    print(f"(b) {per_phase * len(PHASES)} row writes in batches of {BATCH} ({per_phase} rows x {len(PHASES)} kinds "
          f"of change), medians of {rounds} rounds")
    print(f"    raw sqlite3 executemany    : {b:9.0f} writes/s (baseline)")
    print(f"    Ledger.update_many alone   : {l:9.0f} writes/s (baseline)")
    print(f"    poller.s path (RunEngine.record): {o:8.0f} writes/s   (target >= 2,000: {'met' if o >= 2000 else 'MISSED'})")
    print(f"    ratio ledger/poller's path : {l / o:9.2f}   (target <= 2: {'met' if l / o <= 2 else 'MISSED'})")
    print(f"    ratio poller's path/raw    : {o / b:9.2f}")


def write_round(home: Path, per_phase: int, r: int) -> tuple[float, float, float]:
    """Writes/s through Flora.record, Ledger.update_many alone, and raw sqlite3 (identical files)."""
    fl = Flora(api_key="sk_bench", base_url=ENDPOINT, ledger_path=home / f"b_path{r}.sqlite", resume=False)
    ids = add_rows(fl.ledger, per_phase)
    runs = [Run(fl.engine, fl.ledger.get(lid)) for lid in ids]  # type: ignore[arg-type]
    ledger = Ledger(home / f"b_ledger{r}.sqlite")
    assert add_rows(ledger, per_phase) == ids
    raw_ledger = Ledger(home / f"b_raw{r}.sqlite")
    add_rows(raw_ledger, per_phase)
    raw_ledger.close()
    raw = sqlite3.connect(home / f"b_raw{r}.sqlite", isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=NORMAL")
    ours = alone = base = 0.0
    for phase in PHASES:
        for k in range(0, per_phase, BATCH):
            now = time.time()
            batch = [(lid, phase(lid, now)) for lid in ids[k:k + BATCH]]
            pairs = [(run, answer(run.id, fields)) for run, (_, fields) in zip(runs[k:k + BATCH], batch)]
            began = time.perf_counter()
            fl.engine.record(pairs)
            ours += time.perf_counter() - began
            began = time.perf_counter()
            ledger.update_many(batch)
            alone += time.perf_counter() - began
            began = time.perf_counter()
            raw_update(raw, batch)
            base += time.perf_counter() - began
    assert all(run.status in ("completed", "failed") for run in runs)
    fl.close()
    ledger.close()
    raw.close()
    count = per_phase * len(PHASES)
    return count / ours, count / alone, count / base


def answer(run_id: str, fields: dict[str, Any]) -> RunState:
    """What a poll would have said for a change made by one of PHASES."""
    status = fields.get("status", "running")
    data: dict[str, Any] = {"run_id": run_id, "status": status, "progress": fields.get("progress", 55.5)}
    for name in ("started_at", "completed_at"):
        if name in fields:
            data[name] = int(fields[name] * 1000)
    for name in ("charged_cost", "error_code", "error_message"):
        if name in fields:
            data[name] = fields[name]
    if "outputs" in fields:
        data["outputs"] = fields["outputs"]
    return RunState.from_api(data)


def raw_update(db: sqlite3.Connection, batch: list[tuple[int, dict[str, Any]]]) -> None:
    """One transaction; rows grouped by the set of columns they change (one executemany each)."""
    groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    for lid, fields in batch:
        values = {k: json.dumps(v) if k in ("outputs", "inputs", "labels") else v for k, v in fields.items()}
        groups.setdefault(tuple(values), []).append((*values.values(), time.time(), lid))
    db.execute("BEGIN IMMEDIATE")
    for columns, params in groups.items():
        sets = ", ".join(f"{c} = ?" for c in (*columns, "updated_at"))
        db.executemany(f"UPDATE runs SET {sets} WHERE local_id = ?", params)
    db.execute("COMMIT")


def rss() -> int:
    """Resident set size of this process, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_sample(home: Path, n: int) -> dict[str, float]:
    """One session in this (fresh) process: RSS growth per run once every run was polled, and of row dicts."""
    speed = 60.0  # a 1-hour technique takes 60 s real: the poller looks at each run within a second
    with sim_process(speed, catalog(3600.0)) as (base_url, key):
        fl = Flora(api_key=key, base_url=base_url, ledger_path=home / "c.sqlite",
                   poll_interval=scaled_poll_interval(speed), resume=False)
        try:
            fl.run(TECH, inputs={"prompt": "warm-up"})  # catalog, workspace, connection: not per run
            gc.collect()
            before = rss()
            runs = [fl.run(TECH, inputs={"prompt": f"a poster of city number {i}"}, labels={"seed": i})
                    for i in range(n)]
            deadline = time.monotonic() + 60
            while any(run.progress <= 0 for run in runs) and time.monotonic() < deadline:
                time.sleep(0.1)  # until the poller has seen every run running
            polled = sum(run.progress > 0 for run in runs)
            gc.collect()
            ours = (rss() - before) / n
            tracked = fl.poller.tracked
            gc.collect()
            before = rss()
            dicts = [dict(zip(COLUMNS, r)) for r in fl.ledger.iter_raw(fl.endpoint)][1:]
            base = (rss() - before) / len(dicts)
        finally:
            fl.close()
    return {"ours": ours, "base": base, "tracked": tracked, "polled": polled}


def part_c(home: Path, n: int, samples: int = 3) -> None:
    import subprocess
    import sys

    results = []
    for _ in range(samples):  # each in a fresh process: RSS freed by an earlier sample would be reused
        out = subprocess.run([sys.executable, __file__, "--rss-sample", str(n)], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).parent).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    ours = statistics.median(r["ours"] for r in results)
    base = statistics.median(r["base"] for r in results)
    print(f"(c) {n} runs of a 1-hour technique started, tracked and each polled (polled: "
          f"{', '.join(str(r['polled']) for r in results)}), RSS growth, medians of {samples} fresh processes")
    print(f"    ledger row as a dict       : {base / 1024:7.2f} KB/run (baseline)")
    print(f"    session, per tracked run   : {ours / 1024:7.2f} KB/run   (target < 10 KB: "
          f"{'met' if ours < 10240 else 'MISSED'})  [samples "
          f"{', '.join('%.2f' % (r['ours'] / 1024) for r in results)}]")
    print(f"    ratio ours/row dict        : {ours / base:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="(a) ledger rows")
    parser.add_argument("--writes", type=int, default=6_000, help="(b) row writes in total")
    parser.add_argument("--tracked", type=int, default=2_000, help="(c) runs tracked")
    parser.add_argument("--parts", default="abc", help="which parts to run, e.g. 'ab'")
    parser.add_argument("--rss-sample", type=int, default=0, help=argparse.SUPPRESS)  # part (c), one process
    args = parser.parse_args()
    if args.rss_sample:
        with private_home() as home:
            print(json.dumps(rss_sample(home, args.rss_sample)))
        return
    with private_home() as home:
        if "a" in args.parts:
            part_a(home, args.rows)
        if "b" in args.parts:
            part_b(home, args.writes)
        if "c" in args.parts:
            part_c(home, args.tracked)


if __name__ == "__main__":
    main()

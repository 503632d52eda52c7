"""Team ledger benchmark: fl.runs() over 100,000 rows of a PostgreSQL ledger, beside the same rows in SQLite.

The rows are those of bench_scale.py part (a) (inputs, labels, outputs, costs, timestamps, 100,000
completed or failed runs), written to a SQLite file and copied into a fresh PostgreSQL schema with
``python -m flora_nb ledger copy`` (its time is printed too). Each figure is the median of 5 calls
that build the whole DataFrame. Baselines in the same run: fl.runs() on the SQLite file, and
pandas.read_sql of the raw runs table through psycopg. Target: fl.runs() on PostgreSQL < 1 s.

It needs a PostgreSQL server: FLORA_NB_TEST_POSTGRES (or FLORA_NB_LEDGER) names it; the simplest is
    bash scripts/with-postgres .venv/bin/python benchmarks/bench_team_ledger.py
which starts a throwaway cluster for the run (as `make test` does).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
import warnings

import pandas as pd
from _common import median_seconds, private_home
from bench_scale import ENDPOINT, PHASES, add_rows

from flora_nb import Flora
from flora_nb._ledger import Ledger
from flora_nb._ledger_copy import copy_ledger


def fill_sqlite(path: str, rows: int) -> None:
    ledger = Ledger(path)
    ids = add_rows(ledger, rows)
    now = time.time()
    for k in range(0, rows, 500):
        for phase in PHASES:
            ledger.update_many([(lid, phase(lid, now)) for lid in ids[k:k + 500]])
    ledger.close()


def fresh_schema(server: str) -> tuple[str, str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema, f"{server}{'&' if '?' in server else '?'}options=-csearch_path%3D{schema}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    server = os.environ.get("FLORA_NB_TEST_POSTGRES") or os.environ.get("FLORA_NB_LEDGER")
    if not server:
        raise SystemExit("no PostgreSQL: run  bash scripts/with-postgres .venv/bin/python benchmarks/bench_team_ledger.py")
    import psycopg

    with private_home() as home:
        path = str(home / "personal.sqlite")
        began = time.perf_counter()
        fill_sqlite(path, args.rows)
        filled = time.perf_counter() - began
        schema, team = fresh_schema(server)
        try:
            began = time.perf_counter()
            added = copy_ledger(path, team)
            copied = time.perf_counter() - began
            assert added["runs"] == args.rows
            figures = {}
            for name, where in (("sqlite", path), ("postgresql", team)):
                fl = Flora(api_key="sk_bench", base_url=ENDPOINT, ledger=where, resume=False)
                try:
                    frame = fl.runs()  # warm-up, and the same table from both
                    assert len(frame) == args.rows
                    figures[name] = median_seconds(fl.runs, 5)
                finally:
                    fl.close()
            with psycopg.connect(team, autocommit=True) as conn, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pandas prefers SQLAlchemy; a DBAPI connection reads the same
                raw = median_seconds(lambda: pd.read_sql("SELECT * FROM runs", conn), 5)
        finally:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    pg, lite = figures["postgresql"], figures["sqlite"]
    print(f"team ledger: {args.rows} runs (SQLite filled in {filled:.1f} s; ledger copy into PostgreSQL {copied:.1f} s, "
          f"{added['events']} events)")
    print(f"    pandas.read_sql via psycopg, raw : {raw:7.3f} s (baseline)")
    print(f"    fl.runs() on SQLite              : {lite:7.3f} s (baseline)")
    print(f"    fl.runs() on PostgreSQL          : {pg:7.3f} s   (target < 1 s: {'met' if pg < 1.0 else 'MISSED'})")
    print(f"    ratio PostgreSQL/SQLite          : {pg / lite:7.2f}")
    print(f"    ratio fl.runs()/read_sql (PG)    : {pg / raw:7.2f}")


if __name__ == "__main__":
    main()

"""The README's main job, on the built-in simulator: one run, one sweep, compare, costs."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m flora_nb demo", description=__doc__)
    parser.add_argument("--speed", type=float, default=20.0, help="simulator speed-up (default 20)")
    parser.add_argument("--prompt", default="a lighthouse at dusk, risograph print")
    return parser.parse_args(argv)


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    from ._frames import money_table
    from ._session import Flora

    args = _parse(argv)
    pd.set_option("display.width", 140)
    pd.set_option("display.max_columns", 12)
    with tempfile.TemporaryDirectory() as home, Flora.simulated(
        speed=args.speed, ledger_path=Path(home) / "ledger.sqlite", persist=False
    ) as fl:
        print(f"FLORA simulator at {fl.endpoint} (speed x{args.speed:g}); ledger {fl.ledger.path}")
        _section("Techniques")
        print(fl.techniques()[["slug", "name", "run_cost", "inputs", "outputs"]].to_string(index=False))

        _section("One run")
        run = fl.run("poster-studio", {"prompt": args.prompt}, labels={"demo": "single"})
        print(f"started {run!r}  (returned at once; polling in the background)")
        run.wait(120).raise_for_status()
        print(f"finished {run!r}")
        for out in run.outputs:
            print(f"  {out.output_id} ({out.type}): {out.url} [{len(out.fetch())} bytes, via the kernel]")

        _section("A sweep: 2 prompts x 2 styles, budget $1")
        sweep = fl.sweep("jingle-writer", grid={"prompt": ["sea shanty", "city lights"], "style": ["jazz", "punk"]},
                         budget=1.0, max_concurrency=4)
        sweep.wait(120)
        print(repr(sweep))
        print("\ncharged_cost by prompt x style:")
        print(sweep.compare(values="charged_cost"))
        print("\nrun seconds by prompt x style:")
        print(sweep.compare(values="run_seconds").round(2))

        _section("Costs")
        print(money_table(fl.costs()))  # fl.costs(detail=True) has every column
        print(f"\nserver truth: {fl.simulator.stats()['total_charged']:.4f} USD charged; "
              f"ledger: {fl.runs()['charged_cost'].sum():.4f} USD")
        failed = fl.runs(status="failed")
        return 0 if failed.empty else 1

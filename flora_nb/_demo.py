"""The README's main job, on the built-in simulator: a small sweep, its comparison, its costs, its files."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

SCRIPTS = ["a cyclist crests a hill at dawn", "a cat knocks a vase off a shelf"]
STYLES = ["pencil sketch", "noir", "watercolour"]
PLOT_NAME = "sweep-chart.png"
PLOT_EXTRA = "'flora_nb[plot]'"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m flora_nb demo", description=__doc__)
    parser.add_argument("--speed", type=float, default=20.0, help="simulator speed-up (default 20)")
    parser.add_argument("--out", default="flora_outputs", help="where the outputs are saved (default ./flora_outputs)")
    return parser.parse_args(argv)


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def _progress_line(sweep: Any) -> str:
    done = sum(1 for r in sweep.runs if r.done)
    eta = sweep.eta_seconds
    eta_text = "" if not eta else f" · ETA {eta:.0f} s"
    return f"  {done} / {len(sweep.runs)} done · ${sweep.spent:.2f} spent{eta_text}"


def follow(sweep: Any, stream: TextIO | None = None, every: float = 0.2, timeout: float = 120.0) -> None:
    """Show one progress line that rewrites itself in place until the sweep is done."""
    stream = stream or sys.stdout
    in_place = stream.isatty()
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        finished = sweep.done  # read before drawing, so the last line drawn is the final state
        line = _progress_line(sweep)
        if in_place:
            stream.write("\r" + line.ljust(len(last)))
        elif line != last:  # a log file gets one line per change, never a wall of repeats
            stream.write(line + "\n")
        stream.flush()
        last = line
        if finished or time.monotonic() > deadline:
            break
        time.sleep(every)
    if in_place:
        stream.write("\n")


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code."""
    from ._session import Flora

    args = _parse(argv)
    pd.set_option("display.width", 140)
    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory() as home, Flora.simulated(
        speed=args.speed, ledger_path=Path(home) / "ledger.sqlite", persist=False
    ) as fl:
        print(f"FLORA simulator at {fl.endpoint} (speed x{args.speed:g}): offline, no credits spent.")
        tech = fl.technique("storyboard-frames")
        _section(f"Sweep: {tech.name}, {len(SCRIPTS)} scripts x {len(STYLES)} styles, budget $1")
        print(f"  priced first: {len(SCRIPTS) * len(STYLES)} runs x ${tech.run_cost:.2f}")
        sweep = fl.sweep("storyboard-frames", grid={"script": SCRIPTS, "style": STYLES}, budget=1.0,
                         max_concurrency=6)
        follow(sweep)
        sweep.wait(120)
        _report(fl, sweep)
        _outputs(sweep, out)
        _next()
        return 0 if fl.runs(status="failed").empty else 1


def _report(fl: Any, sweep: Any) -> None:
    from ._frames import money_table

    _section("Compare: seconds per run, script x style")
    print(sweep.compare(values="run_seconds").round(2).to_string())
    print("  (each run takes its own time, as on FLORA; sweep.compare(values=...) pivots any column)")
    _section("Costs")
    print(money_table(fl.costs()).to_string())  # fl.costs(detail=True) has every column
    server = fl.simulator.stats() if fl.simulator is not None else {"total_charged": float("nan")}
    print(f"  the server charged ${server['total_charged']:.2f}; "
          f"the ledger says ${fl.runs()['charged_cost'].sum():.2f}")


def _outputs(sweep: Any, out: Path) -> None:
    _section("Outputs")
    paths = sweep.download(out)
    print(f"  {len(paths)} files saved in {out}")
    for path in paths[:3]:
        print(f"    {path.name}")
    if len(paths) > 3:
        print(f"    ... and {len(paths) - 3} more")
    print("  They are simulated placeholders (each image is captioned so): the simulator makes patterns, not art.")
    chart = _save_plot(sweep, out / PLOT_NAME)
    print(f"  chart of cost and time per variation: {chart}" if chart else
          f"  a chart of cost and time per variation needs matplotlib: pip install {PLOT_EXTRA}")


def _save_plot(sweep: Any, path: Path) -> Path | None:
    """The sweep's chart as a PNG file, or None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    axes = sweep.plot()
    axes[0].figure.savefig(path, dpi=100, bbox_inches="tight")  # rotated labels reach past the figure
    plt.close(axes[0].figure)
    return path


def _next() -> None:
    _section("Next")
    print("  make lab    opens the three tutorial notebooks in JupyterLab (installs it into .venv first)")
    print("  notebooks/  01-quickstart, 02-parameter-sweep, 03-cost-analysis")

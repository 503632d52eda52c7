"""`make demo`'s main job: a small sweep with a progress line in place, its tables, its saved files."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from flora_nb._demo import follow


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _fake_sweep(steps: int) -> SimpleNamespace:
    """A sweep whose runs finish one per look, without any clock."""
    runs = [SimpleNamespace(done=False) for _ in range(steps)]
    sweep = SimpleNamespace(runs=runs, spent=0.0, eta_seconds=None, done=False)

    def advance() -> None:
        pending = [r for r in runs if not r.done]
        if pending:
            pending[0].done = True
            sweep.spent += 0.1
        sweep.done = not any(not r.done for r in runs)

    return sweep, advance


def test_progress_rewrites_one_line_on_a_terminal():
    sweep, advance = _fake_sweep(4)
    stream = _Tty()
    original = stream.write

    def write(text: str) -> int:  # every redraw moves the sweep on by one run
        if text.startswith("\r"):
            advance()
        return original(text)

    stream.write = write  # type: ignore[method-assign]
    follow(sweep, stream=stream, every=0)
    out = stream.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n")  # one line, redrawn in place
    assert out.count("\r") >= 4 and "4 / 4 done · $0.40 spent" in out


def test_progress_in_a_log_is_one_line_per_change():
    sweep, advance = _fake_sweep(3)
    stream = io.StringIO()
    looks = 0
    original = stream.flush

    def flush() -> None:
        nonlocal looks
        looks += 1
        if looks % 3 == 0:  # the sweep moves only every third look: repeats are not printed
            advance()
        original()

    stream.flush = flush  # type: ignore[method-assign]
    follow(sweep, stream=stream, every=0)
    lines = stream.getvalue().splitlines()
    assert lines == [f"  {n} / 3 done · ${n / 10:.2f} spent" for n in range(4)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One run of the demo, as `make demo` runs it (a subprocess), shared by the tests below."""
    cwd = tmp_path_factory.mktemp("demo")
    out = cwd / "flora_outputs"
    done = subprocess.run([sys.executable, "-m", "flora_nb", "demo", "--speed", "50", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done, out


def test_demo_runs_a_sweep_and_saves_its_outputs(demo):
    done, out = demo
    assert "6 / 6 done · $0.60 spent" in done.stdout
    assert "the server charged $0.60; the ledger says $0.60" in done.stdout
    saved = sorted(p.name for p in out.iterdir() if p.name != "sweep-chart.png")
    assert len(saved) == 12 and all(name.endswith(".png") for name in saved)
    assert f"12 files saved in {out}" in done.stdout
    assert "sk_sim" not in done.stdout + done.stderr


def _section(stdout: str, title: str) -> list[str]:
    """The lines of one ``== title`` section of the demo's output."""
    lines = stdout.split("== " + title, 1)[1].splitlines()[1:]
    return lines[:next((i for i, line in enumerate(lines) if line.startswith("== ")), len(lines))]


def test_demo_comparison_differs_across_variations(demo):
    done, _ = demo
    table = [line for line in _section(done.stdout, "Compare") if line.startswith(("a cyclist", "a cat"))]
    seconds = [float(cell) for line in table for cell in re.findall(r"\d+\.\d+", line)]
    assert len(table) == 2 and len(seconds) == 6, done.stdout
    assert len(set(seconds)) > 1, f"every variation took the same time: {seconds}"
    estimate = 24.0 / 50
    assert all(0.7 * estimate <= s <= 1.3 * estimate + 0.05 for s in seconds), seconds


def test_demo_says_its_outputs_are_placeholders_draws_a_chart_and_points_to_the_notebooks(demo):
    done, out = demo
    outputs = "\n".join(_section(done.stdout, "Outputs"))
    assert "simulated placeholders" in outputs
    chart = out / "sweep-chart.png"
    assert f"chart of cost and time per variation: {chart}" in outputs
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert "make lab" in "\n".join(_section(done.stdout, "Next"))

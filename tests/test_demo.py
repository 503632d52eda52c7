"""`make demo`'s main job: a small sweep with a progress line in place, its tables, its saved files."""

from __future__ import annotations

import io
import subprocess
import sys
from types import SimpleNamespace

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


def test_demo_runs_a_sweep_and_saves_its_outputs(tmp_path):
    out = tmp_path / "flora_outputs"
    done = subprocess.run([sys.executable, "-m", "flora_nb", "demo", "--speed", "50", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "6 / 6 done · $0.60 spent" in done.stdout
    assert "the server charged $0.60; the ledger says $0.60" in done.stdout
    saved = sorted(p.name for p in out.iterdir())
    assert len(saved) == 12 and all(name.endswith(".png") for name in saved)
    assert f"12 files saved in {out}" in done.stdout
    assert "sk_sim" not in done.stdout + done.stderr

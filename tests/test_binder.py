"""The Binder set-up, done the way Binder does it: a fresh environment from binder/requirements.txt,
then postBuild, then the notebooks executed inside binder/start (which runs the simulator)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

EXECUTE = """
import json, sys, nbformat
from nbclient import NotebookClient
for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", store_widget_state=True).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    print(json.dumps({"notebook": path, "errors": len(errors), "text": json.dumps(nb)}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{args[:3]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.timeout(900)  # a fresh environment is installed first
def test_binder_environment_runs_every_notebook(tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    # --no-compile: the .pyc of every installed module are not written ahead (half the install's time);
    # what the notebooks import is compiled as they import it. What gets installed is the same.
    _run([python, "-m", "pip", "install", "-q", "--no-compile", "-r", ROOT / "binder" / "requirements.txt", "nbclient"])
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLORA_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HOME=str(home),
               FLORA_SIM_PORT=str(_free_port()))
    _run(["bash", ROOT / "binder" / "postBuild"], cwd=ROOT, env=env)
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    try:
        done = _run(["bash", ROOT / "binder" / "start", python, "-c", EXECUTE, *notebooks], cwd=tmp_path, env=env)
    finally:
        pid_file = home / ".flora_nb" / "simulator.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [Path(r["notebook"]).name for r in results] == [n.name for n in notebooks]
    assert all(r["errors"] == 0 for r in results)
    assert all("sk_sim_demo" not in r["text"] for r in results)
    assert (home / ".flora_nb" / "ledger.sqlite").exists()  # the ledger lives in the Binder user's home

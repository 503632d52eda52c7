"""The example notebooks run as they are: on the simulator (no key), and on whatever FLORA_API_KEY points at."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import nbformat

from flora_nb.sim import FloraSimulator

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MARKER_KEY = "sk_marker_4f1e9c0b7d2a"  # must appear nowhere in an executed notebook


def execute(name: str, workdir: Path) -> nbformat.NotebookNode:
    return _execute_path(NOTEBOOKS / name, workdir)


def _execute_path(path: Path, workdir: Path) -> nbformat.NotebookNode:
    import nbformat  # imported when used: nbformat's import costs ~3 s (jsonschema's format checkers), paid by every worker
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    # as a person saving the notebook would: after the displays showed every finished run's outputs
    nb.cells.append(nbformat.v4.new_code_cell("import flora_nb._display\nflora_nb._display.settle()"))
    client = NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=False, store_widget_state=True,
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def html_tables(nb: nbformat.NotebookNode) -> list[str]:
    return [o["data"]["text/html"] for o in outputs(nb) if "text/html" in o.get("data", {})]


def widget_models(nb: nbformat.NotebookNode) -> list[str]:
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    return [m["model_name"] for m in state.values()]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A FLORA (the simulator, in this process) that takes only the marker key, set as the user's key."""
    home = tmp_path_factory.mktemp("nb_home")
    with FloraSimulator(api_keys=(MARKER_KEY,), speed=20.0, seed=3) as sim, pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLORA_API_KEY", MARKER_KEY)
        mp.setenv("FLORA_BASE_URL", sim.base_url)
        mp.setenv("FLORA_WORKSPACE_ID", sim.workspace_id)
        mp.setenv("FLORA_NB_HOME", str(home))
        yield sim, home


CLEAR = ("Save the notebooks without outputs: in JupyterLab, Edit > Clear Outputs of All Cells, then save; "
         "or run: jupyter nbconvert --clear-output --inplace notebooks/*.ipynb")


def leftovers(path: Path) -> list[str]:
    """What a saved notebook carries that a committed tutorial must not: outputs, run counts, widget state."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    found = []
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        first = cell.source.splitlines()[0] if cell.source else ""
        if cell.get("outputs"):
            found.append(f"{path.name}, cell {number} ({first!r}): {len(cell.outputs)} saved output(s)")
        elif cell.get("execution_count") is not None:
            found.append(f"{path.name}, cell {number} ({first!r}): saved as run [{cell.execution_count}]")
    if nb.metadata.get("widgets"):
        found.append(f"{path.name}: saved widget state (Settings > Save Widget State Automatically)")
    return found


def test_every_notebook_is_committed_without_outputs():
    import nbformat

    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["01-quickstart.ipynb", "02-parameter-sweep.ipynb", "03-cost-analysis.ipynb"]
    found = [line for name in names for line in leftovers(NOTEBOOKS / name)]
    assert not found, "\n".join(["The tutorials were saved with outputs:", *found, CLEAR])
    for name in names:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert "FLORA_API_KEY" in nb.cells[1].source and "simulator" in nb.cells[1].source


def test_a_notebook_saved_with_outputs_is_named_with_the_fix(tmp_path):
    import nbformat

    nb = nbformat.read(NOTEBOOKS / "01-quickstart.ipynb", as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    code[0].outputs = [nbformat.v4.new_output("stream", text="connected")]
    code[1].execution_count = 2
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(nb, tmp_path / "01-quickstart.ipynb")
    assert leftovers(tmp_path / "01-quickstart.ipynb") == [
        "01-quickstart.ipynb, cell 3 ('%load_ext flora_nb'): 1 saved output(s)",
        "01-quickstart.ipynb, cell 5 ('%flora techniques'): saved as run [2]",
        "01-quickstart.ipynb: saved widget state (Settings > Save Widget State Automatically)",
    ]


def test_jupyter_checkpoints_are_ignored_by_git():
    for path in ("notebooks/.ipynb_checkpoints/01-quickstart-checkpoint.ipynb", ".ipynb_checkpoints/x.ipynb"):
        done = subprocess.run(["git", "check-ignore", "-q", path], cwd=NOTEBOOKS.parent, capture_output=True)
        assert done.returncode == 0, f"git does not ignore {path}"


def test_quickstart_on_the_built_in_simulator(tmp_path, monkeypatch):
    for name in ("FLORA_API_KEY", "FLORA_BASE_URL", "FLORA_WORKSPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    monkeypatch.setenv("FLORA_NB_SIM_PERSIST", "1")  # as for a user (the suite turns it off elsewhere)
    nb = execute("01-quickstart.ipynb", tmp_path)
    text = json.dumps(nb)
    assert "Poster Studio" in text and "completed" in text
    assert any("input.prompt" in t and "a fox in fresh snow, linocut" in t for t in html_tables(nb))
    assert (tmp_path / "sim" / "quickstart.json").exists()  # the tutorial's own account, kept for a restart


def test_quickstart_with_a_key(keyed, tmp_path):
    sim, _ = keyed
    nb = execute("01-quickstart.ipynb", tmp_path)
    models = widget_models(nb)
    assert "ButtonModel" in models and "TextareaModel" in models  # the form
    assert models.count("ImageModel") >= 2  # both runs show their poster in their panel
    [runs_table] = [t for t in html_tables(nb) if "input.prompt" in t]
    assert runs_table.count("completed") == 2 and "a lighthouse at dusk" in runs_table
    prompts = sorted(r["inputs"]["prompt"] for r in sim.run_records())
    assert prompts == ["a fox in fresh snow, linocut", "a lighthouse at dusk, risograph print"]
    assert MARKER_KEY not in json.dumps(nb)


def test_parameter_sweep_notebook(keyed, tmp_path):
    sim, _ = keyed
    before = len(sim.run_records())
    nb = execute("02-parameter-sweep.ipynb", tmp_path)
    text = json.dumps(nb)
    assert "6 runs, about $0.60" in text
    assert "GridBoxModel" in widget_models(nb)  # the gallery
    assert any("rating" in t or "5.0" in t for t in html_tables(nb))
    assert len(sim.run_records()) - before == 6 + 3  # the sweep and the three repeats, nothing more
    assert MARKER_KEY not in text
    repeats = [r for r in sim.run_records()[before:] if r["technique_id"] == "tech_d4motion"]
    took = [r["completed_at"] - r["started_at"] for r in repeats]
    assert len(set(took)) == 3, f"the three repeats are not distinct samples: {took}"
    seconds = _cell_text(nb, "sweep.wait(300)")  # compare(values="run_seconds")
    assert seconds.index("pencil sketch") < seconds.index("noir") < seconds.index("watercolour")  # the sweep's order
    assert seconds.index("a cyclist crests") < seconds.index("a cat knocks")


def _cell_text(nb: nbformat.NotebookNode, source_start: str) -> str:
    [cell] = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(source_start)]
    return json.dumps(cell.outputs)


def test_cost_analysis_as_a_new_user_reaches_completed_runs_and_their_costs(tmp_path, monkeypatch):
    for name in ("FLORA_API_KEY", "FLORA_BASE_URL", "FLORA_WORKSPACE_ID", "FLORA_NB_SIM_PERSIST"):
        monkeypatch.delenv(name, raising=False)  # a new user: nothing set, the simulated account kept
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    import nbformat

    nb = nbformat.read(NOTEBOOKS / "03-cost-analysis.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import json\nprint('RECORDS', json.dumps(fl.simulator.run_records()))"))
    copy = tmp_path / "03-cost-analysis.ipynb"
    copy.write_text(nbformat.writes(nb))
    executed = _execute_path(copy, tmp_path)
    counts = _cell_text(executed, "half = fl.sweep(")
    assert re.search(r"'completed': [12]", counts), f"the stopped sweep never reached a run: {counts}"
    before_resume = _cell_text(executed, "sweep = fl.get_sweep(")
    assert "completed" in before_resume and "skipped" in before_resume and "0.04" in before_resume
    printed = "".join(o.get("text", "") for o in outputs(executed) if o.get("output_type") == "stream")
    records = json.loads(printed.split("RECORDS ", 1)[1])
    animals = sorted(r["inputs"]["prompt"] for r in records if r["inputs"]["prompt"] in ("a heron", "a fox", "an owl", "a hare"))
    assert animals == ["a fox", "a hare", "a heron", "an owl"]  # each once: resume ran only those never started
    assert all(r["status"] == "completed" and r["charged_cost"] > 0 for r in records), records
    assert len(records) == 4 + 2 + 4  # this tutorial's own account: its jingles, posters and animals, nothing else
    assert (tmp_path / "sim" / "costs.json").exists()


def test_cost_analysis_notebook_survives_a_restart(keyed, tmp_path):
    sim, _ = keyed
    nb = execute("03-cost-analysis.ipynb", tmp_path)
    text = json.dumps(nb)
    assert "total" in text and "drift_usd" in text and "image/png" in text  # costs and the spend plot
    assert any("sweep_id" in t for t in html_tables(nb))  # fl.sweeps() after the "restart"
    heron = [r for r in sim.run_records() if r["inputs"].get("prompt") in ("a heron", "a fox", "an owl", "a hare")]
    assert sorted(r["inputs"]["prompt"] for r in heron) == ["a fox", "a hare", "a heron", "an owl"]  # each once
    assert MARKER_KEY not in text

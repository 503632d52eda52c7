"""The example notebooks run as they are: on the simulator (no key), and on whatever FLORA_API_KEY points at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import nbformat

from flora_nb.sim import FloraSimulator

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MARKER_KEY = "sk_marker_4f1e9c0b7d2a"  # must appear nowhere in an executed notebook


def execute(name: str, workdir: Path) -> nbformat.NotebookNode:
    import nbformat  # imported when used: nbformat's import costs ~3 s (jsonschema's format checkers), paid by every worker
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
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


def test_every_notebook_is_committed_without_outputs():
    import nbformat

    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["01-quickstart.ipynb", "02-parameter-sweep.ipynb", "03-cost-analysis.ipynb"]
    for name in names:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
        assert "FLORA_API_KEY" in nb.cells[1].source and "simulator" in nb.cells[1].source


def test_quickstart_on_the_built_in_simulator(tmp_path, monkeypatch):
    for name in ("FLORA_API_KEY", "FLORA_BASE_URL", "FLORA_WORKSPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    monkeypatch.setenv("FLORA_NB_SIM_PERSIST", "1")  # as for a user (the suite turns it off elsewhere)
    nb = execute("01-quickstart.ipynb", tmp_path)
    text = json.dumps(nb)
    assert "Poster Studio" in text and "completed" in text
    assert any("input.prompt" in t and "a fox in fresh snow, linocut" in t for t in html_tables(nb))
    assert (tmp_path / "sim" / "default.json").exists()  # the simulator keeps its account for a restart


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


def test_cost_analysis_notebook_survives_a_restart(keyed, tmp_path):
    sim, _ = keyed
    nb = execute("03-cost-analysis.ipynb", tmp_path)
    text = json.dumps(nb)
    assert "total" in text and "drift_usd" in text and "image/png" in text  # costs and the spend plot
    assert any("sweep_id" in t for t in html_tables(nb))  # fl.sweeps() after the "restart"
    heron = [r for r in sim.run_records() if r["inputs"].get("prompt") in ("a heron", "a fox", "an owl", "a hare")]
    assert sorted(r["inputs"]["prompt"] for r in heron) == ["a fox", "a hare", "a heron", "an owl"]  # each once
    assert MARKER_KEY not in text

"""A real notebook executed in a real kernel (nbclient): magics, live widgets, gallery, no key leak."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import nbformat

CELLS = [
    "%load_ext flora_nb",
    "%flora connect --sim --speed 50",
    '%flora run poster-studio prompt="a red fox" --wait -o r\nr.status, round(r.charged_cost, 2)',
    "%flora run jingle-writer prompt=sea style=jazz",
    "s = %flora sweep poster-studio prompt=[fox,owl] --budget 1\ns.wait(60); s.counts",
    "s.gallery()",
    "s.compare()",
    "%flora costs",
    "%flora run poster-studio nope=1",
    "%flora",
]


def _outputs(cell: nbformat.NotebookNode) -> list[dict]:
    return cell.get("outputs", [])


def _text(cell: nbformat.NotebookNode) -> str:
    return json.dumps(_outputs(cell))


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    import nbformat  # imported when used: nbformat's import costs ~3 s (jsonschema's format checkers), paid by every worker
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    workdir = tmp_path_factory.mktemp("nb")
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                            store_widget_state=True, resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return nb


def test_cells_run_without_tracebacks(executed):
    errors = [o for c in executed.cells for o in _outputs(c) if o["output_type"] == "error"]
    assert errors == []
    # The deliberate mistake shows as one UsageError line on stderr, without a traceback.
    [mistake] = _outputs(executed.cells[8])
    assert mistake["name"] == "stderr" and mistake["text"].count("\n") == 1
    assert mistake["text"].startswith("UsageError: %flora run: ") and "unknown input 'nope'" in mistake["text"]


def test_run_and_sweep_results(executed):
    assert "('completed', 0.04)" in _text(executed.cells[2])
    assert "{'completed': 2}" in _text(executed.cells[4])
    assert "0.04" in _text(executed.cells[6]) and "fox" in _text(executed.cells[6])
    assert "Poster Studio" in _text(executed.cells[7])


def test_live_widgets_and_gallery_state(executed):
    views = [o for c in executed.cells for o in _outputs(c)
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) >= 3  # the live run displays and the gallery
    state = executed.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    models = [m["model_name"] for m in state.values()]
    assert models.count("ImageModel") >= 2 and "GridBoxModel" in models
    html = [m["state"].get("value", "") for m in state.values() if m["model_name"] == "HTMLModel"]
    bars = [h for h in html if "role='progressbar'" in h]
    assert any("aria-valuenow='100'" in b and "completed" in b for b in bars)
    assert not any("<progress" in h for h in html)  # one bar per run: the panel's own


def test_status_cell(executed):
    text = _text(executed.cells[9])
    assert "the built-in simulator" in text and "running in the background" in text
    html = "".join(o.get("data", {}).get("text/html", "") for o in _outputs(executed.cells[9]))
    assert html.startswith("<table class='flora-status'>")


def test_api_key_never_in_outputs(executed):
    everything = json.dumps(executed)
    assert "sk_sim_demo" not in everything

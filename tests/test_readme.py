"""The README's examples run as written.

Every block fenced ```python in README.md is run, in order, in one IPython ``InteractiveShell`` (so ``%flora``
lines and ``%%flora`` cells inside them work too), with ``FLORA_API_KEY``/``FLORA_BASE_URL``/``FLORA_WORKSPACE_ID``
pointing at a ``FloraSimulator`` this test starts over real loopback HTTP, ``FLORA_NB_HOME`` in a temporary folder,
and the working directory a temporary folder holding the files the examples name.

Blocks that cannot run as written (shell commands, placeholders, program output) are fenced ```bash or ```text;
a ```python block whose first line is ``# not run: <why>`` is skipped too (the README has none today, and
``test_most_examples_run`` keeps that set small).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flora_nb.sim import FloraSimulator
from flora_nb.sim._media import png

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
NOT_RUN = "# not run:"
# The notebook the README's "testing your own notebooks" example executes.
MY_NOTEBOOK = ("import flora_nb as fnb\n"
               "with fnb.Flora() as fl:\n"
               "    sweep = fl.sweep('poster-studio', grid={'prompt': ['a heron', 'an owl', 'a hare']})\n"
               "    assert sweep.wait(120).counts.get('completed') == 3, sweep.counts")
FILES = ("shots/bottle.png", "a.png", "b.png", "moodboard.png", "sketch.png", "ref.png")


def blocks(kind: str | None = None) -> list[tuple[int, str, str]]:
    """(line number, language, code) of every fenced block, or of one language."""
    text = README.read_text(encoding="utf-8")
    found = [(text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)) for m in FENCE.finditer(text)]
    return [b for b in found if kind is None or b[1] == kind]


def runnable() -> list[tuple[int, str]]:
    return [(line, code) for line, _, code in blocks("python") if not code.startswith(NOT_RUN)]


def test_most_examples_run():
    python = blocks("python")
    skipped = [line for line, _, code in python if code.startswith(NOT_RUN)]
    assert len(python) >= 15
    assert len(skipped) <= len(python) // 5, f"too many python blocks marked '{NOT_RUN}': lines {skipped}"
    assert all(lang in ("python", "bash", "text") for _, lang, _ in blocks()), "fence every block with its language"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A simulator the environment points at, a private FLORA_NB_HOME, and a folder with the files named."""
    for i, name in enumerate(FILES):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(png(bytes([i]) * 32))
    import nbformat  # imported when used: nbformat's import costs ~3 s (jsonschema's format checkers), paid by every worker

    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(MY_NOTEBOOK)]),
                   tmp_path / "my-notebook.ipynb")
    with FloraSimulator(speed=200.0, seed=5) as sim:
        monkeypatch.setenv("FLORA_API_KEY", sim.api_key)
        monkeypatch.setenv("FLORA_BASE_URL", sim.base_url)
        monkeypatch.setenv("FLORA_WORKSPACE_ID", sim.workspace_id)
        monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("MPLBACKEND", "Agg")
        monkeypatch.chdir(tmp_path)
        yield sim, tmp_path


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext flora_nb\n%config FloraMagics.simulator_speed = 200.0", store_history=False)
    yield shell
    shell.run_cell("import flora_nb\nflora_nb.session().close()", store_history=False)
    InteractiveShell.clear_instance()


def test_every_python_block_runs_on_the_simulator(workdir, shell):
    sim, folder = workdir
    examples = runnable()
    for line, code in examples:
        result = shell.run_cell(code, store_history=True)
        error = result.error_before_exec or result.error_in_exec
        assert error is None, f"README.md line {line}: {type(error).__name__}: {error}\n{code}"
    ns = shell.user_ns
    assert ns["fl"].runs()["rating"].max() == 5  # a rating example landed in the ledger
    for fl in [v for v in ns.values() if type(v).__name__ == "Flora"]:
        fl.close()
    # What the examples did, from the server's own records: runs were really started, and none twice.
    records = sim.run_records()
    assert sim.stats()["runs_created"] >= 15
    keys = [r["idempotency_key"] for r in records]
    assert len(keys) == len(set(keys))
    assert (folder / "poster.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((folder / "out").iterdir()) and any((folder / "fox").iterdir())
    # The "testing your own notebooks" example defines a pytest test: run it, on its own flaky simulator.
    with pytest.MonkeyPatch.context() as mp:
        ns["test_my_notebook_on_a_flaky_flora"](mp, folder / "own")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_section_link_and_picture_resolves():
    text = FENCE.sub("", README.read_text(encoding="utf-8"))
    anchors = {_anchor(h) for h in re.findall(r"^#{1,4} (.+)$", text, re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links and not [link for link in links if link not in anchors]
    files = re.findall(r"\]\(((?:docs|notebooks|binder)/[^)#]+)\)", text)
    assert files and not [f for f in files if not (README.parent / f).exists()]
    top = text[:text.index("## Contents")]
    assert top.count("![") == 1 and "form-and-gallery" in top  # one picture of the form and the gallery, first

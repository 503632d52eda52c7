"""The README is a front door, and its examples run as a newcomer runs them.

The front door: what flora_nb is, the two set-up commands (``make demo``, ``make test``), a quick start of at most
10 lines of code that ends within the first 60 lines, links into ``docs/``; at most 400 lines in all (the manual
lives in ``docs/``, whose examples ``tests/test_docs.py`` runs page by page).

Every block fenced ```python in README.md is run, in order, in one IPython ``InteractiveShell`` (so ``%flora``
lines and ``%%flora`` cells work too), as a newcomer who copies them runs them (``tests/test_docs.py``'s
``newcomer`` fixture): no ``FLORA_API_KEY`` in the environment and no network, so the quick start starts the
built-in simulator itself; ``FLORA_NB_HOME`` and the working directory are temporary folders. Blocks that cannot
run as written are fenced ```bash or ```text; a ```python block whose first line is ``# not run: <why>`` is
skipped too (the README has none; ``tests/test_docs.py::test_most_examples_run`` keeps that set small across
the README and the docs).
"""

from __future__ import annotations

from tests.test_docs import README, blocks, check_server_records, links, newcomer, run_page, shell

__all__ = ["newcomer", "shell"]  # fixtures, shared with tests/test_docs.py

MAX_LINES = 400
QUICK_START_ENDS_BY = 60
QUICK_START_LINES = 10


def test_readme_is_a_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_LINES, f"README.md has {len(text.splitlines())} lines"
    first = blocks(README, "python")[0]
    code = [line for line in first.code.splitlines() if line.strip()]
    ends = first.line + first.code.count("\n") + 1
    assert ends <= QUICK_START_ENDS_BY, f"the quick start ends on line {ends}"
    assert len(code) <= QUICK_START_LINES, f"the quick start has {len(code)} lines of code"
    assert "## Quick start" in text[:text.index(first.code)]
    assert "%flora connect --sim" in first.code or "Flora.simulated(" in first.code  # it starts offline
    setup = [b.code for b in blocks(README, "bash") if b.line < first.line]
    assert any("make demo" in c and "make test" in c for c in setup), "the two set-up commands, before the quick start"
    targets = links(README)
    assert "docs/index.md" in targets and any(t.startswith("docs/guide/") for t in targets)
    assert any(t.startswith("docs/reference/") for t in targets)
    top = text[:text.index("## ")]
    assert top.count("![") == 1 and "form-and-gallery" in top  # one picture of the form and the gallery, first


def test_every_python_block_runs_offline(newcomer, shell):
    ns = run_page(shell, README)
    assert check_server_records(ns) >= 1  # the examples reached the built-in simulator, and started nothing twice
    assert ns["fl"] is __import__("flora_nb").session()  # the Python quick start made its session the magics' one
    assert (newcomer / "poster.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

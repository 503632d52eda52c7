"""The status card (fl = %flora), one panel for a run shown with -o and waited on, and the
money-formatted costs table in JupyterLab, light and dark."""

from __future__ import annotations

import re

import pytest

from tests.test_browser import ARGS, CHROMIUM, SHOTS, _run_all, running_lab, sync_api

CELLS = [
    "%load_ext flora_nb\n%flora connect --sim --speed 50",
    "fl = %flora\nfl",
    '%flora run poster-studio prompt="a red fox" -o run',
    "run.wait(60)",
    "%flora costs",
]


@pytest.fixture(params=["JupyterLab Light", "JupyterLab Dark"])
def themed_lab(request, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    import nbformat  # imported when used: nbformat's import costs ~3 s (jsonschema's format checkers), paid by every worker

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "status.ipynb")
    with running_lab(tmp_path, root, request.param) as (url, token):
        yield url, token, request.param.split()[-1].lower()


def test_status_card_and_costs_table(themed_lab):
    url, token, theme = themed_lab
    expect = sync_api.expect
    SHOTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            page.goto(f"{url}/lab/tree/status.ipynb?token={token}")
            _run_all(page)
            card = page.locator("table.flora-status").last
            expect(card).to_contain_text("running in the background", timeout=90_000)
            expect(card).to_contain_text("ws_sim_demo")
            expect(card).to_contain_text(re.compile(r"the built-in simulator.*\(offline, no money spent\)"))
            assert not re.search(r"None|sim://|endpoint|poller", card.inner_text())
            waited = page.locator(".jp-CodeCell").nth(3).locator(".jp-OutputArea")
            expect(waited.locator(".flora-summary").first).to_contain_text("completed", timeout=90_000)
            expect(waited.locator(".flora-card")).to_have_count(0)  # one panel: the one above, not a second
            expect(page.locator(".flora-card", has_text="Poster Studio ·")).to_have_count(1)
            costs = page.locator(".jp-RenderedHTMLCommon table.dataframe").last
            expect(costs).to_contain_text("total", timeout=90_000)
            expect(costs).to_contain_text(re.compile(r"\$0\.04"))
            box = costs.bounding_box()
            assert box is not None and box["width"] < 900  # no sideways scrolling any more
            assert "sk_sim_demo" not in page.content()
            page.screenshot(path=str(SHOTS / f"status-card-{theme}.png"), full_page=True)
            page.locator(".jp-CodeCell").nth(3).scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / f"run-wait-one-panel-{theme}.png"))
            costs.scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / f"costs-{theme}.png"))
        except Exception:
            page.screenshot(path=str(SHOTS / f"status-card-failure-{theme}.png"), full_page=True)
            raise
        finally:
            browser.close()

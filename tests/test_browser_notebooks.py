"""notebooks/01-quickstart.ipynb in JupyterLab (headless Chromium): Run All shows the form, a completed
run and its poster. In CI (CI=true) a missing browser fails the test, like tests/test_browser.py."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.test_browser import ARGS, CHROMIUM, SHOTS, _run_all, running_lab, sync_api

QUICKSTART = Path(__file__).resolve().parent.parent / "notebooks" / "01-quickstart.ipynb"


def test_quickstart_runs_in_jupyterlab(tmp_path, monkeypatch):
    for name in ("FLORA_API_KEY", "FLORA_BASE_URL", "FLORA_WORKSPACE_ID"):
        monkeypatch.delenv(name, raising=False)  # the notebook's own path: the built-in simulator
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(QUICKSTART, root / QUICKSTART.name)
    expect = sync_api.expect
    SHOTS.mkdir(exist_ok=True)
    with running_lab(tmp_path, root) as (url, token), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            page.goto(f"{url}/lab/tree/{QUICKSTART.name}?token={token}")
            _run_all(page)
            expect(page.locator(".widget-button", has_text=re.compile("Run"))).not_to_have_count(0, timeout=90_000)
            expect(page.locator("textarea").first).to_be_visible()  # the form's prompt field
            images = page.locator("img.widget-image")
            expect(images).not_to_have_count(0, timeout=90_000)
            page.wait_for_function("() => [...document.querySelectorAll('img.widget-image')]"
                                   ".some(i => i.naturalWidth === 256)", timeout=90_000)
            panel = page.locator(".widget-html-content", has_text="Poster Studio").first
            expect(panel).to_contain_text("completed", timeout=60_000)
            expect(panel).to_contain_text("$0.04")
            # The last cell, the runs DataFrame, shows both runs completed.
            table = page.locator(".jp-RenderedHTMLCommon table", has_text="input.prompt").last
            expect(table).to_contain_text("a fox in fresh snow, linocut", timeout=90_000)
            assert "sk_sim_demo" not in page.content()
            page.screenshot(path=str(SHOTS / "quickstart.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(SHOTS / "quickstart-failure.png"), full_page=True)
            raise
        finally:
            browser.close()

"""The status card (fl = %flora) and the money-formatted costs table in JupyterLab, light and dark."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import nbformat
import pytest

from tests.test_browser import ARGS, CHROMIUM, SHOTS, _free_port, _lab_env, _run_all, _wait_ready, sync_api

CELLS = [
    "%load_ext flora_nb\n%flora connect --sim --speed 50",
    "fl = %flora\nfl",
    '%flora run poster-studio prompt="a red fox" --wait',
    "%flora costs",
]


@pytest.fixture(params=["JupyterLab Light", "JupyterLab Dark"])
def themed_lab(request, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "status.ipynb")
    env = _lab_env(tmp_path)
    themes = tmp_path / "settings/@jupyterlab/apputils-extension/themes.jupyterlab-settings"
    themes.write_text('{"theme": "%s"}' % request.param)
    port, token = _free_port(), secrets.token_hex(16)
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
             f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, token, proc, log_path)
            yield url, token, request.param.split()[-1].lower()
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


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
            expect(card).to_contain_text("health", timeout=90_000)
            expect(card).to_contain_text("ws_sim_demo")
            costs = page.locator(".jp-RenderedHTMLCommon table.dataframe").last
            expect(costs).to_contain_text("total", timeout=90_000)
            expect(costs).to_contain_text("$0.0400")
            box = costs.bounding_box()
            assert box is not None and box["width"] < 900  # no sideways scrolling any more
            assert "sk_sim_demo" not in page.content()
            page.screenshot(path=str(SHOTS / f"status-card-{theme}.png"), full_page=True)
            costs.scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / f"costs-{theme}.png"))
        except Exception:
            page.screenshot(path=str(SHOTS / f"status-card-failure-{theme}.png"), full_page=True)
            raise
        finally:
            browser.close()

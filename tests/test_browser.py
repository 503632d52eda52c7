"""JupyterLab in headless Chromium (Playwright): a %flora run updates live, the gallery renders.

Follows ../shared/recipes/browser-testing.md. In CI (CI=true) a missing browser fails the test.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.waiting import until

CHROMIUM = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium") or "/usr/bin/chromium"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
        "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage"]
SHOTS = Path(__file__).resolve().parent.parent / "artifacts"

CELLS = [
    "%load_ext flora_nb\n%flora connect --sim --speed 3",
    '%flora run poster-studio prompt="a red fox"',
    "s = %flora sweep poster-studio prompt=[fox,owl,heron]\ns.wait(120)\ns.gallery()",
]

if not os.path.exists(CHROMIUM) and not IN_CI:
    pytest.skip("chromium is not installed (make test installs it as root; CI requires it)", allow_module_level=True)

if IN_CI:
    from playwright import sync_api  # in CI a missing Playwright fails, it never skips
else:
    sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(root: Path) -> None:
    import nbformat  # imported when used: nbformat's import costs ~3 s (jsonschema's format checkers), paid by every worker

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "flora.ipynb")


def _lab_env(d: Path) -> dict[str, str]:
    notify = d / "settings/@jupyterlab/apputils-extension"
    notify.mkdir(parents=True)  # no "news?" toast over the notebook
    (notify / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    return dict(os.environ, JUPYTER_CONFIG_DIR=str(d / "cfg"), JUPYTER_RUNTIME_DIR=str(d / "rt"),
                JUPYTERLAB_SETTINGS_DIR=str(d / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(d / "ws"))


def _wait_ready(url: str, token: str, proc: subprocess.Popen, log: Path) -> None:
    def answering() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return requests.get(f"{url}/api/status", params={"token": token}, timeout=1).ok
        except requests.ConnectionError:
            return False

    until(answering, 120, lambda: "jupyter lab to start:\n" + log.read_text(), interval=0.1)


@contextlib.contextmanager
def running_lab(d: Path, root: Path, theme: str | None = None) -> Iterator[tuple[str, str]]:
    """JupyterLab serving ``root`` (settings under ``d``, optional theme); yields (url, token)."""
    assert os.path.exists(CHROMIUM), f"chromium is required in CI: apt-get install -y chromium ({CHROMIUM})"
    env = _lab_env(d)
    if theme:
        themes = d / "settings/@jupyterlab/apputils-extension/themes.jupyterlab-settings"
        themes.write_text(f'{{"theme": "{theme}"}}')
    port, token = _free_port(), secrets.token_hex(16)
    log_path = d / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
             f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, token, proc, log_path)
            yield url, token
        finally:
            proc.terminate()  # SIGTERM: the server shuts its kernels down
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = tmp_path_factory.mktemp("lab")
    root = d / "root"
    root.mkdir()
    _write_notebook(root)
    with running_lab(d, root) as (url, token):
        yield url, token


def _run_all(page) -> None:
    # Wait for the kernel itself: the toolbar says idle before a kernel exists.
    page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"ipykernel\) \| Idle$")).wait_for(timeout=90_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def _watch_progress(page) -> None:
    # The panel redraws its HTML, so watch the host element and read the one bar's value each time.
    page.locator(".widget-html-content [role=progressbar]").first.wait_for(timeout=60_000)
    page.evaluate("""() => { const host = [...document.querySelectorAll('.widget-html-content')]
            .find(e => e.querySelector('[role=progressbar]'));
        const value = () => host.querySelector('[role=progressbar]').getAttribute('aria-valuenow');
        window.widths = [value()];
        new MutationObserver(() => window.widths.push(value()))
            .observe(host, {childList: true, subtree: true, attributes: true}); }""")


def test_live_run_and_gallery_in_jupyterlab(lab):
    url, token = lab
    expect = sync_api.expect
    SHOTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            page.goto(f"{url}/lab/tree/flora.ipynb?token={token}")
            _run_all(page)
            _watch_progress(page)
            status = page.locator(".widget-html-content", has_text="Poster Studio").first
            expect(status).to_contain_text("completed", timeout=60_000)
            expect(page.locator(".widget-html-content [role=progressbar]").first).to_have_attribute(
                "aria-valuenow", "100")
            expect(page.locator(".widget-html-content progress")).to_have_count(0)  # one bar per run
            widths = page.evaluate("window.widths")
            assert len(set(widths)) >= 3, widths  # it moved while the cell had long returned
            images = page.locator("img.widget-image")  # the run's own output, then the gallery's three
            expect(images).to_have_count(4, timeout=90_000)
            page.wait_for_function("() => [...document.querySelectorAll('img.widget-image')].every(i => i.naturalWidth > 0)")
            sizes = page.evaluate("() => [...document.querySelectorAll('img.widget-image')].map(i => i.naturalWidth)")
            assert sizes == [256, 256, 256, 256]
            expect(page.locator(".widget-html-content", has_text="prompt=owl")).to_have_count(1)
            assert "sk_sim_demo" not in page.content()
            page.screenshot(path=str(SHOTS / "jupyterlab-flora.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(SHOTS / "jupyterlab-failure.png"), full_page=True)
            raise
        finally:
            browser.close()

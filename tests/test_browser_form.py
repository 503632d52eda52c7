"""The form in JupyterLab (headless Chromium): type, Run, see the image and cost; vary, see the gallery, rate.

Screenshots in light and dark themes go to ``artifacts/`` (gitignored); with
``FLORA_NB_UPDATE_SCREENSHOTS=1`` the README's copies in ``docs/img/`` are refreshed too.
In CI (CI=true) a missing browser fails the test, like tests/test_browser.py.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.test_browser import ARGS, CHROMIUM, SHOTS, _run_all, running_lab, sync_api

DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
UPDATE_DOCS = os.environ.get("FLORA_NB_UPDATE_SCREENSHOTS") == "1"
# The README's pictures: small crops of the widgets (the rest stay in artifacts/ only).
DOC_SHOTS = {"form-run-light.png", "form-run-dark.png", "gallery-light.png", "gallery-dark.png",
             "form-upload-light.png", "panel-failures-dark.png", "panel-audio-light.png", "panel-live-light.png"}
CELLS = [
    "%load_ext flora_nb\n%flora connect --sim --speed 5", "%flora form poster-studio", "%flora form product-relight",
    '%flora run jingle-writer prompt="a sea shanty about a lighthouse keeper who collects postcards" style=jazz',
    "import flora_nb as fnb\nfrom flora_nb.sim import Faults\n"
    "shaky = fnb.Flora.simulated(speed=5, faults=Faults(run_failure_rate=0.5), seed=5)\n"
    "shaky.sweep('poster-studio', grid={'prompt': [f'poster {i}' for i in range(12)]}, max_concurrency=12)",
]
THEMES = {"light": "JupyterLab Light", "dark": "JupyterLab Dark"}


@pytest.fixture(params=sorted(THEMES))
def themed_lab(request, tmp_path):
    """One JupyterLab server per theme, with a notebook holding a form on the simulator."""
    root = tmp_path / "root"
    root.mkdir()
    import nbformat  # imported when used: nbformat's import costs ~3 s (jsonschema's format checkers), paid by every worker

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "form.ipynb")
    from flora_nb.sim._media import png

    (root / "sneaker.png").write_bytes(png(b"\x07" * 32))
    with running_lab(tmp_path, root, THEMES[request.param]) as (url, token):
        yield url, token, request.param, root


def _shoot(locator, name: str) -> None:
    path = SHOTS / name
    locator.screenshot(path=str(path), animations="disabled")
    if UPDATE_DOCS and name in DOC_SHOTS:
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / name)


def _images_loaded(page, scope: str, count: int) -> None:
    expect = sync_api.expect
    expect(page.locator(f"{scope} img.widget-image")).to_have_count(count, timeout=60_000)
    page.wait_for_function(
        f"() => [...document.querySelectorAll('{scope} img.widget-image')].every(i => i.naturalWidth > 0)")


def test_form_run_vary_gallery_and_stars_in_jupyterlab(themed_lab):
    url, token, theme, root = themed_lab
    expect = sync_api.expect
    SHOTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 1500})
        try:
            page.goto(f"{url}/lab/tree/form.ipynb?token={token}")
            _run_all(page)
            form = page.locator(".flora-form").first
            expect(form).to_be_visible(timeout=60_000)
            expect(form).to_contain_text("1 run · $0.04")
            run = form.locator("button.widget-button", has_text=re.compile(r"^\s*Run\s*$"))
            _shoot(form, f"form-empty-{theme}.png")

            form.locator(".flora-field textarea").first.fill("a lighthouse at dusk, risograph print")
            run.click()
            panel = form.locator(".flora-card", has_text="Poster Studio ·").first
            _shoot_if_in_progress(page, panel, f"panel-live-{theme}.png")
            _labels_fit(form)
            expect(panel).to_contain_text("completed", timeout=60_000)
            expect(panel).to_contain_text("$0.04")
            _images_loaded(page, ".flora-form .flora-card", 1)
            expect(panel.locator("[role=progressbar]")).to_have_count(1)
            expect(panel.locator("progress")).to_have_count(0)
            _shoot(form, f"form-run-{theme}.png")

            form.locator("button", has_text="vary").first.click()
            values = form.locator(".flora-field textarea").nth(1)
            expect(values).to_be_visible()
            values.fill("a fox in the snow\nan owl at midnight")
            expect(form).to_contain_text("2 runs · $0.08")
            _labels_fit(form)
            form.locator("button", has_text="Run 2 variations").click()
            gallery = form.locator(".flora-gallery")
            expect(gallery).to_be_visible(timeout=30_000)
            _images_loaded(page, ".flora-gallery", 2)
            expect(form.locator(".flora-card", has_text="2 / 2 done")).to_have_count(1, timeout=30_000)

            stars = gallery.locator(".flora-rating").first.locator("button.flora-star")
            expect(stars).to_have_count(5)
            stars.nth(3).click()
            # The kernel repaints the stars after run.rate() wrote the ledger: four full, one empty.
            expect(stars.nth(3)).to_have_text("\u2605", timeout=20_000)
            expect(stars.nth(4)).to_have_text("\u2606")
            gallery.locator(".flora-rating input").first.fill("warmest light")
            gallery.locator(".flora-rating input").first.press("Enter")
            assert "sk_sim_demo" not in page.content()
            _shoot(form.locator(".flora-card").filter(has=page.locator("[role=progressbar]")).first,
                   f"panel-sweep-{theme}.png")
            _shoot(gallery, f"gallery-{theme}.png")
            _upload_in_the_browser(page, root, theme)
            _audio_text_and_failures(page, theme)
            page.screenshot(path=str(SHOTS / f"form-page-{theme}.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(SHOTS / f"form-failure-{theme}.png"), full_page=True)
            raise
        finally:
            browser.close()


def _upload_in_the_browser(page, root: Path, theme: str) -> None:
    """Choose a local PNG in the file dialog: it becomes an asset URL with a thumbnail."""
    expect = sync_api.expect
    relight = page.locator(".flora-form").nth(1)
    relight.scroll_into_view_if_needed()
    with page.expect_file_chooser() as chooser:
        relight.locator("button", has_text="Upload").click()
    chooser.value.set_files(str(root / "sneaker.png"))
    url_field = relight.locator(".flora-field input[type=text]").first
    expect(url_field).to_have_value("sneaker.png", timeout=30_000)  # its name, not the asset's loopback URL
    _images_loaded(page, ".flora-form .flora-field", 1)
    expect(relight).to_contain_text("Uploaded sneaker.png")
    upload = relight.locator("button.widget-upload")
    # ipywidgets writes "Upload (0)" into the button; what a person sees is the form's own label.
    assert upload.evaluate("b => getComputedStyle(b).fontSize") == "0px"
    assert upload.evaluate("b => getComputedStyle(b, '::after').content") == '"Upload"'
    _labels_fit(relight)
    _shoot(relight, f"form-upload-{theme}.png")


def _labels_fit(scope) -> None:
    """Every visible button of the form shows its whole label (nothing cut off by its width)."""
    cut = scope.evaluate("""f => [...f.querySelectorAll('button.widget-button, button.widget-upload')]
        .filter(b => b.offsetParent !== null && b.scrollWidth > b.clientWidth + 1).map(b => b.textContent.trim())""")
    assert cut == [], cut


def _audio_text_and_failures(page, theme: str) -> None:
    """A run with audio and text outputs, and a sweep where some runs failed, as a reader sees them."""
    expect = sync_api.expect
    jingle = page.locator(".flora-card", has_text="Jingle Writer ·").first
    jingle.scroll_into_view_if_needed()
    expect(jingle).to_contain_text("completed", timeout=60_000)
    expect(jingle.locator("audio")).to_have_count(1, timeout=30_000)
    expect(jingle.locator(".flora-text")).to_contain_text("sea shanty")
    _shoot(jingle, f"panel-audio-{theme}.png")
    shaky = page.locator(".flora-card", has_text="12 / 12 done").first
    expect(shaky).to_be_visible(timeout=60_000)
    expect(shaky.locator(".flora-error").first).to_contain_text("failed")
    shaky.scroll_into_view_if_needed()
    _shoot(shaky, f"panel-failures-{theme}.png")


def _shoot_if_in_progress(page, panel, name: str) -> None:
    """A picture of the live bar while the run works (if the run is still going when the browser draws it)."""
    try:
        sync_api.expect(panel).to_contain_text(re.compile(r"in progress · ~?[1-9]\d*%"), timeout=5_000)
    except AssertionError:
        return  # the run finished first; the test goes on with the finished state
    _shoot(panel, name)

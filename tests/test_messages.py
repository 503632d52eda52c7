"""Messages in the user's words (issue 21, item 7): no request ids or class names unasked, file names
in the upload field, and a run shown with ``-o run`` then ``run.wait()`` draws one panel, not two."""

from __future__ import annotations

import base64
import datetime

import ipywidgets as w
import pytest
from IPython.core.interactiveshell import InteractiveShell

import flora_nb as fnb
from flora_nb import _display
from flora_nb._magic import FloraMagics

POSTER, RELIGHT = "poster-studio", "product-relight"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg==")


@pytest.fixture
def fl(tmp_path):
    with fnb.Flora.simulated(speed=100.0, persist=False, ledger_path=tmp_path / "l.sqlite") as session:
        yield session


def test_an_api_error_keeps_its_request_id_out_of_the_message(fl):
    with pytest.raises(fnb.NotFoundError) as info:
        fl.client.get_run("run_nobody_knows")
    err = info.value
    assert err.request_id and err.request_id.startswith("req_")  # there when asked for (a support ticket)
    assert "req_" not in str(err) and "request-id" not in str(err)


def test_the_rating_widget_says_what_is_wrong_without_class_names(fl):
    run = fl.run(POSTER, {"prompt": "fox"}).wait(30)
    stars = _display.RatingWidget(run)
    stars.stars[3].click()
    stars.note.value = "x" * 3000  # too long a note
    assert "at most 2000 characters" in stars.message.value and "Error" not in stars.message.value


def test_form_errors_name_the_form_controls_not_python_arguments(fl):
    form = fl.form(POSTER)
    form.vary("prompt", ["a", "b", "c"])
    form.budget.value = "0.05"
    form.run_button.click()  # 3 runs x $0.04 over a $0.05 budget: refused before anything starts
    message = form.message.value
    assert "over the budget of $0.05" in message and "Raise the budget" in message
    assert "budget=" not in message and "reuse=True" not in message and "Error" not in message
    assert fl.simulator.stats()["runs_created"] == 0


def _picked(name: str, data: bytes) -> tuple[dict, ...]:
    return ({"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
             "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)},)


def test_the_upload_field_shows_the_file_name_and_the_run_gets_the_asset(fl):
    form = fl.form(RELIGHT)
    part = form._parts["product_image"]
    part.upload.value = _picked("sneaker.png", PNG)
    assert form.fields["product_image"].value == "sneaker.png"  # not http://127.0.0.1:PORT/...
    form.run_button.click()
    [record] = fl.simulator.run_records()
    assert record["inputs"]["product_image"].startswith("http") and "asset_" in record["inputs"]["product_image"]
    # In vary mode each file is one line, by name; another file of the same name is told apart.
    part.vary.value = True
    other = PNG[:-12] + b"\x00" * 12
    part.upload.value = _picked("sneaker.png", other)
    assert part.lines() == ["sneaker.png", "sneaker.png (2)"]
    assert len({part.sent(line) for line in part.lines()}) == 2
    assert "upload" in part.upload._dom_classes[0]  # the label reads "Upload" (FORM_STYLE hides the count)


# ---------------------------------------------------------------- one panel per run


@pytest.fixture
def notebook(tmp_path, monkeypatch):
    """A shell that displays as a Jupyter kernel would (widgets on); ``shown`` collects what it displays."""
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    monkeypatch.setattr(_display, "widgets_available", lambda: True)
    shown: list[object] = []
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    shell = InteractiveShell.instance()
    magics = FloraMagics(shell=shell)
    shell.register_magics(magics)
    shell.run_cell("%flora connect --sim --speed 100 --no-persist").raise_error()
    yield shell, shown
    if magics.session is not None:
        magics.session.close()


def _panels(shown: list[object]) -> list[w.Widget]:
    return [x for x in shown if isinstance(x, w.Widget) and "flora-card" in x._dom_classes]


@pytest.mark.parametrize("start, wait", [
    (f'%flora run {POSTER} prompt="a lighthouse" -o run_1', "run_1.wait(30)"),
    (f"%flora sweep {POSTER} prompt=[fox,owl] -o sweep_1", "sweep_1.wait(30)"),
])
def test_waiting_on_a_shown_run_draws_one_panel(notebook, start, wait):
    shell, shown = notebook
    shell.run_cell(start).raise_error()
    assert len(_panels(shown)) == 1
    result = shell.run_cell(wait)  # the wait's cell shows the run it returns...
    result.raise_error()
    assert result.result.done
    assert len(_panels(shown)) == 1  # ...as one line, not a second live panel
    [line] = [x for x in shown if isinstance(x, w.HTML) and "flora-summary" in x._dom_classes]
    assert "flora-summary" in line.value and ("completed" in line.value or "2 / 2 done" in line.value)
    assert "$0.04" in line.value or "$0.08 spent" in line.value

"""The ipywidgets form, driven in Python against the simulator; the server's records are the truth."""

from __future__ import annotations

import datetime
import html
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import ipywidgets as w
import pytest

import flora_nb as fnb
from flora_nb import Flora
from flora_nb._form import input_for_field
from flora_nb.sim import FloraSimulator
from flora_nb.sim._catalog import BUILTIN_TECHNIQUES

POSTER, JINGLE, RELIGHT = "poster-studio", "jingle-writer", "product-relight"
IMG = "https://example.com/shoe.png"


class FakeClock:
    """Time that moves only when the test says so (the double-click window)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fl(tmp_path):
    with Flora.simulated(speed=100.0, seed=3, ledger_path=tmp_path / "l.sqlite") as session:
        yield session


@pytest.fixture
def clock():
    return FakeClock()


def _starts(fl: Flora) -> int:
    return fl.simulator.stats()["requests_by_route"].get("POST /runs/technique", 0)


def _records(fl: Flora) -> list[dict]:
    return fl.simulator.run_records()


def test_a_form_for_every_technique_in_the_catalog(fl):
    for entry in BUILTIN_TECHNIQUES:
        form = fl.form(entry["slug"])
        assert isinstance(form, fnb.Form) and isinstance(form, w.Widget)
        assert set(form.fields) == {i["id"] for i in entry["inputs"]}
        for spec in entry["inputs"]:
            value = form.fields[spec["id"]]
            part = form._parts[spec["id"]]
            if spec["type"] == "text":
                assert isinstance(value, w.Textarea) and part.upload is None
            else:  # a URL field plus a file upload and a preview area
                assert isinstance(value, w.Text) and isinstance(part.upload, w.FileUpload)
                expected = {"imageUrl": "image/*", "videoUrl": "video/*", "audioUrl": "audio/*"}[spec["type"]]
                assert part.upload.accept == expected
                assert part.preview is not None
            label = part.box.children[0].children[0].value
            assert spec["name"] in label and html.escape(spec["description"]) in label
            assert ("optional" in label) == bool(spec.get("optional"))
        assert isinstance(form.run_button, w.Button) and form.runs == [] and form.sweep is None
        assert form.workspace is None  # the demo key sees one workspace: no selector
        assert f"1 run · ${entry['run_cost']:.2f}" in form.cost_label.value
    assert _starts(fl) == 0


def test_constraints_audio_and_document_inputs(tmp_path):
    catalog = [{
        "technique_id": "tech_z1clip", "name": "Clip", "run_cost": 0.5,
        "inputs": [{"id": "frame", "name": "Frame", "type": "imageUrl", "description": "Key frame.",
                    "specified_aspect_ratio": "16:9"},
                   {"id": "prompt", "name": "Prompt", "type": "text", "specified_duration": 5, "optional": True},
                   {"id": "voice", "name": "Voice", "type": "audioUrl", "optional": True},
                   {"id": "brief", "name": "Brief", "type": "documentUrl", "optional": True}],
        "outputs": [{"id": "video", "name": "Video", "type": "videoUrl"}],
    }]
    with Flora.simulated(speed=100.0, catalog=catalog, ledger_path=tmp_path / "l.sqlite") as fl:
        form = fl.form("tech_z1clip")
        labels = [p.box.children[0].children[0].value for p in form._parts.values()]
        assert "aspect ratio 16:9" in labels[0] and "duration 5 s" in labels[1] and "optional" in labels[1]
        # Audio and document inputs (none in the built-in catalog) get a URL field and a matching upload.
        assert form._parts["voice"].upload.accept == "audio/*" and isinstance(form.fields["voice"], w.Text)
        assert form._parts["brief"].upload.accept == ".pdf,application/pdf"
        form.fields["brief"].value = "https://example.com/brief.pdf"
        assert "brief.pdf" in form._parts["brief"].preview.children[0].value  # a document shows its file name


def test_fill_and_click_starts_the_right_run(fl, clock):
    form = fl.form(JINGLE, clock=clock)
    form.fields["prompt"].value = "  a song about tea \n"
    form.fields["style"].value = "ukulele"
    form.run_button.click()
    assert form.errors == {} and len(form.runs) == 1 and not form.run_button.disabled
    [record] = _records(fl)
    assert record["inputs"] == {"prompt": "a song about tea", "style": "ukulele"}
    assert record["run_id"] == form.runs[0].id and record["technique_id"] == "tech_h8jingle"
    form.runs[0].wait(30)
    # An optional field left empty is left out (FLORA refuses empty strings).
    form.fields["style"].value = ""
    clock.now += 5
    form.run_button.click()
    assert _records(fl)[-1]["inputs"] == {"prompt": "a song about tea"}
    assert [r.id for r in form.runs] == [r["run_id"] for r in _records(fl)]


def test_the_button_is_disabled_while_a_start_is_in_flight(fl, clock, monkeypatch):
    form = fl.form(POSTER, clock=clock)
    form.fields["prompt"].value = "a red fox"
    seen = []
    real_run = fl.starter.run  # the form starts through the session's starter

    def watched(*args, **kwargs):
        seen.append((form.run_button.disabled, form.run_button.description))
        return real_run(*args, **kwargs)

    monkeypatch.setattr(fl.starter, "run", watched)
    form.run_button.click()
    assert seen == [(True, "Starting…")] and not form.run_button.disabled and form.run_button.description == "Run"


def test_a_double_click_starts_one_run(fl, clock):
    form = fl.form(POSTER, clock=clock)
    form.fields["prompt"].value = "a red fox"
    form.run_button.click()
    form.run_button.click()  # the kernel gets both clicks before the browser sees the button disabled
    assert fl.simulator.stats()["runs_created"] == 1 and _starts(fl) == 1
    assert "Ignored a second click" in form.message.value and len(form.runs) == 1
    form.fields["prompt"].value = "a blue fox"  # different inputs within the second: a new start
    form.run_button.click()
    assert fl.simulator.stats()["runs_created"] == 2
    clock.now += 1.5  # the same inputs again, later: the user means it
    form.run_button.click()
    assert fl.simulator.stats()["runs_created"] == 3 and len(form.runs) == 3
    keys = [r["idempotency_key"] for r in _records(fl)]
    assert len(set(keys)) == 3  # one idempotency key per click


def test_vary_two_by_three_starts_six_runs(fl, clock):
    form = fl.form(JINGLE, clock=clock)
    form.vary("prompt", ["sea", "city"]).vary("style", ["jazz", "punk", "folk"])
    assert form._parts["prompt"].varying and form.combine.layout.display == ""
    assert "6 runs · $0.36" in form.cost_label.value and form.run_button.description == "Run 6 variations"
    form.budget.value = "1"
    assert "36% of the $1.00 budget" in form.cost_label.value
    form.run_button.click()
    assert form.sweep is not None and len(form.sweep.runs) == 6 and len(form.runs) == 6
    form.sweep.wait(60)
    assert fl.simulator.stats()["runs_created"] == 6
    seen = {(r["inputs"]["prompt"], r["inputs"]["style"]) for r in _records(fl)}
    assert seen == {(p, s) for p in ("sea", "city") for s in ("jazz", "punk", "folk")}
    assert form.sweep.budget == 1.0


def test_vary_zip_and_values_with_newlines(fl, clock):
    form = fl.form(JINGLE, clock=clock)
    form.vary("prompt", ["sea", "city", "two\nlines"]).vary("style", ["jazz", "punk"])
    form.combine.value = "zip"
    assert "same number of values" in form.cost_label.value
    form.run_button.click()
    assert _starts(fl) == 0 and "Nothing was started" in form.message.value
    form.vary("style", ["jazz", "punk", "folk"])
    assert "3 runs · $0.18" in form.cost_label.value
    form.run_button.click()
    form.sweep.wait(60)
    pairs = sorted((r["inputs"]["prompt"], r["inputs"]["style"]) for r in _records(fl))
    assert pairs == sorted([("sea", "jazz"), ("city", "punk"), ("two\nlines", "folk")])


def test_vary_toggle_in_the_ui_uses_one_value_per_line(fl, clock):
    form = fl.form(POSTER, clock=clock)
    form.fields["prompt"].value = "fox"
    form._parts["prompt"].vary.value = True  # what clicking "vary" does
    assert form._parts["prompt"].values.value == "fox"  # the current value is the first line
    form._parts["prompt"].values.value = "fox\n\nowl\n"
    assert "2 runs · $0.08" in form.cost_label.value
    form.run_button.click()
    form.sweep.wait(60)
    assert sorted(r["inputs"]["prompt"] for r in _records(fl)) == ["fox", "owl"]


def test_client_side_validation_sends_nothing(fl, clock):
    form = fl.form(RELIGHT, clock=clock)
    form.run_button.click()
    assert form.errors == {"product_image": "Required."}
    assert "Required" in form._parts["product_image"].error.value
    form.fields["product_image"].value = "shoe.png"  # not a URL, not a file here
    form.fields["lighting"].value = "golden hour"
    form.run_button.click()
    assert "http(s) URL" in form.errors["product_image"]
    with pytest.raises(fnb.InputError, match="at least one value"):
        form.vary("lighting", [])
    form._parts["lighting"].vary.value = True  # the UI: vary on (the current value becomes line 1) ...
    assert form._parts["lighting"].values.value == "golden hour"
    form._parts["lighting"].values.value = "  \n"  # ... and every line cleared
    form.run_button.click()
    assert "at least one value" in form.errors["lighting"]
    form.budget.value = "lots"
    assert "not an amount of dollars" in form.cost_label.value
    assert fl.simulator.stats()["requests_by_route"].get("POST /runs/technique") is None
    form.vary("lighting", None)
    form.budget.value = ""
    form.fields["product_image"].value = IMG
    form.run_button.click()
    assert form.errors == {} and _records(fl)[0]["inputs"] == {"product_image": IMG, "lighting": "golden hour"}


def test_server_field_errors_land_on_their_field(fl, clock):
    # asset_ ids pass the client's shape check; only the server knows this one does not exist.
    form = fl.form(RELIGHT, clock=clock)
    form.fields["product_image"].value = "asset_doesnotexist"
    form.run_button.click()
    assert "product_image" in form.errors and "asset_" in form.errors["product_image"]
    assert "asset_" in form._parts["product_image"].error.value
    assert "input_validation_error" in form.message.value and form.runs == []
    assert not form.run_button.disabled and fl.simulator.stats()["runs_created"] == 0


def test_field_names_map_to_input_ids():
    ids, sent = ["prompt", "style"], ["style", "prompt"]
    assert input_for_field("inputs.prompt", ids, sent) == "prompt"
    assert input_for_field("prompt", ids, sent) == "prompt"
    assert input_for_field("inputs[0]", ids, sent) == "style"
    assert input_for_field("inputs.style.value", ids, sent) == "style"
    assert input_for_field("workspace_id", ids, sent) is None
    assert input_for_field("inputs[9]", ids, sent) is None


class _Refuser(BaseHTTPRequestHandler):
    """A FLORA that names fields the way the API reference does (``prompt``, no ``inputs.``)."""

    protocol_version = "HTTP/1.1"
    TECH = {"technique_id": "tech_a1poster", "name": "Poster Studio", "run_cost": 0.04,
            "inputs": [{"id": "prompt", "name": "Prompt", "type": "text"}], "outputs": []}

    def _answer(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # stdlib name
        if self.path.startswith("/api/v1/techniques/"):
            return self._answer(200, self.TECH)
        if self.path.startswith("/api/v1/workspaces"):
            return self._answer(200, {"workspaces": [{"workspace_id": "ws_x", "name": "X"}], "meta": {}})
        return self._answer(200, {"technique_runs": [], "meta": {"next_cursor": None}})

    def do_POST(self):  # stdlib name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(400, {"error": {"code": "input_validation_error", "message": "prompt: Too long",
                                     "fields": [{"field": "prompt", "message": "Too long"},
                                                {"field": "workspace_id", "message": "Odd"}]}})

    def log_message(self, *args):
        pass


def test_reference_style_field_names_from_a_real_server(tmp_path, clock):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuser)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    try:
        with Flora(api_key="sk_x", base_url=base, workspace="ws_x", ledger_path=tmp_path / "l.sqlite",
                   resume=False) as fl:
            form = fl.form("poster-studio", clock=clock)
            form.fields["prompt"].value = "x" * 50
            form.run_button.click()
            assert form.errors == {"prompt": "Too long"}
            assert "workspace_id: Odd" in form.message.value and form.runs == []
    finally:
        server.shutdown()
        server.server_close()


def test_an_exception_in_a_callback_shows_inside_the_form(fl, clock, monkeypatch):
    form = fl.form(POSTER, clock=clock)
    form.fields["prompt"].value = "fox"

    def broken(*args, **kwargs):
        raise RuntimeError("the <kernel> is sad")

    monkeypatch.setattr(fl.starter, "run", broken)
    form.run_button.click()  # must not raise
    assert "Unexpected error: RuntimeError" in form.message.value
    assert "the &lt;kernel&gt; is sad" in form.message.value and "<kernel>" not in form.message.value
    assert not form.run_button.disabled and form.run_button.description == "Run"
    # A FloraError (a session budget, a refused key ...) is shown as one clear line.
    monkeypatch.setattr(fl.starter, "run", lambda *a, **k: (_ for _ in ()).throw(fnb.BudgetExceededError("over budget")))
    clock.now += 5
    form.run_button.click()
    assert "over budget" in form.message.value and "Error" not in form.message.value  # the user's words only


def test_over_budget_starts_nothing(fl, clock):
    form = fl.form(POSTER, clock=clock)
    form.vary("prompt", ["a", "b", "c"])
    form.budget.value = "0.05"
    assert "over the $0.05 budget" in form.cost_label.value
    form.run_button.click()
    assert "over the budget of $0.05" in form.message.value and form.sweep is None
    assert "=" not in form.message.value.split(">", 1)[1] and "Error" not in form.message.value  # form words
    form.vary("prompt", None)
    form.fields["prompt"].value = "a"
    form.budget.value = "0.01"
    form.run_button.click()
    assert "over the budget of $0.01" in form.message.value
    assert fl.simulator.stats()["runs_created"] == 0


def test_workspace_selector_when_the_key_sees_several(tmp_path, clock):
    spaces = ["ws_sim_demo", "ws_sim_private"]
    with FloraSimulator(speed=100.0, key_workspaces={"sk_sim_demo": spaces}) as sim:
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=tmp_path / "l.sqlite") as fl:
            form = fl.form(POSTER, clock=clock)
            assert isinstance(form.workspace, w.Dropdown) and form.workspace.value is None
            assert [v for _, v in form.workspace.options] == spaces
            form.fields["prompt"].value = "fox"
            form.run_button.click()
            assert "Choose a workspace" in form.message.value and sim.stats()["runs_created"] == 0
            form.workspace.value = "ws_sim_private"
            form.run_button.click()
            assert [r["workspace_id"] for r in sim.run_records()] == ["ws_sim_private"]


def test_magic_form(fl):
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "flora_nb")
    fnb.session(fl)  # the magics use this session
    form = ip.run_line_magic("flora", f"form {POSTER}")
    assert isinstance(form, fnb.Form) and form.technique.technique_id == "tech_a1poster" and form.starter is fl.starter


# ---------------------------------------------------------------- uploads


def _png() -> bytes:
    from flora_nb.sim._media import png

    return png(b"\x01" * 32)


def _picked(name: str, data: bytes, ctype: str = "image/png") -> tuple[dict, ...]:
    """What the browser puts in a FileUpload's value when a file is chosen."""
    return ({"name": name, "type": ctype, "size": len(data), "content": memoryview(data),
             "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)},)


def _asset_posts(fl: Flora) -> int:
    return fl.simulator.stats()["requests_by_route"].get("POST /assets", 0)


def test_an_uploaded_png_becomes_an_asset_and_the_run_gets_its_url(fl, clock):
    form = fl.form(RELIGHT, clock=clock)
    part = form._parts["product_image"]
    data = _png()
    part.upload.value = _picked("shoe.png", data)
    assert form.fields["product_image"].value == "shoe.png"  # the file's name, not the asset's loopback URL
    assert _asset_posts(fl) == 1 and part.upload.value == ()
    [thumb] = part.preview.children
    assert isinstance(thumb, w.Image) and bytes(thumb.value) == data  # the preview, from the bytes
    form.run_button.click()
    [record] = _records(fl)
    url = record["inputs"]["product_image"]  # the run is sent the asset's URL
    assert url.startswith("http") and list(record["inputs"]) == ["product_image"]
    assert fl.client.fetch_media(url) == data  # the asset really is that file
    # The same file again (a second field of another form, or picked twice): uploaded once.
    other = fl.form("art-directors-critique", clock=clock)
    other._parts["image"].upload.value = _picked("again.png", data)
    assert other.fields["image"].value == "again.png" and other._parts["image"].sent("again.png") == url
    assert _asset_posts(fl) == 1


def test_a_local_path_in_the_url_field_is_uploaded_once(fl, clock, tmp_path):
    path = tmp_path / "shoe.png"
    path.write_bytes(_png())
    form = fl.form(RELIGHT, clock=clock)
    form.fields["product_image"].value = str(path)
    form.run_button.click()
    clock.now += 5
    form.fields["lighting"].value = "neon"
    form.run_button.click()
    records = _records(fl)
    assert len(records) == 2 and _asset_posts(fl) == 1
    assert records[0]["inputs"]["product_image"] == records[1]["inputs"]["product_image"]
    assert records[0]["inputs"]["product_image"].startswith("http")


def test_uploads_in_vary_mode_add_one_line_each(fl, clock):
    form = fl.form(RELIGHT, clock=clock)
    part = form._parts["product_image"]
    part.vary.value = True
    assert part.upload.multiple
    two = _picked("a.png", _png()) + _picked("b.png", _png()[:-12] + b"\x00" * 12)
    part.upload.value = two
    assert len(part.lines()) == 2 and "2 runs · $0.16" in form.cost_label.value


def test_a_file_flora_refuses_is_refused_in_the_form(fl, clock):
    form = fl.form(RELIGHT, clock=clock)
    form._parts["product_image"].upload.value = _picked("notes.txt", b"just text", "text/plain")
    assert "notes.txt" in form.message.value and form.fields["product_image"].value == ""
    assert "Error" not in form.message.value  # no class names in the form
    assert form.errors["product_image"].startswith("notes.txt: ")  # shown under the field too
    assert _asset_posts(fl) == 0  # refused before any request
    from flora_nb.sim._media import pdf

    form._parts["product_image"].upload.value = _picked("brief.pdf", pdf("Brief", ["x"]), "application/pdf")
    assert form.errors["product_image"].startswith("brief.pdf: ") and _asset_posts(fl) == 0  # not an image
    form._parts["product_image"].upload.value = _picked("shoe.png", _png())
    assert "product_image" not in form.errors and form.fields["product_image"].value == "shoe.png"
    assert _asset_posts(fl) == 1


def test_a_typed_url_previews_escaped_and_only_http(fl, clock):
    form = fl.form(RELIGHT, clock=clock)
    preview = form._parts["product_image"].preview
    form.fields["product_image"].value = "https://example.com/a.png?x='><script>alert(1)</script>"
    [thumb] = preview.children
    assert thumb.value.startswith("<img src='https://example.com/a.png?x=&#x27;&gt;&lt;script&gt;")
    assert "<script>" not in thumb.value
    form.fields["product_image"].value = "javascript:alert(1)"
    assert "<img" not in preview.children[0].value and "alert(1)" in preview.children[0].value  # a name only
    form.fields["product_image"].value = ""
    assert preview.children == ()


def test_a_session_budget_refusal_shows_in_the_form(tmp_path, clock):
    with Flora.simulated(speed=100.0, budget=0.05, ledger_path=tmp_path / "l.sqlite") as fl:
        form = fl.form(POSTER, clock=clock)
        form.fields["prompt"].value = "fox"
        form.run_button.click()
        assert len(form.runs) == 1
        form.runs[0].wait(30)
        clock.now += 5
        form.fields["prompt"].value = "owl"
        form.run_button.click()  # $0.04 spent of $0.05: the next $0.04 does not fit
        assert "session budget of $0.05" in form.message.value and len(form.runs) == 1
        assert not form.run_button.disabled and fl.simulator.stats()["runs_created"] == 1

"""Hostile servers and malformed answers (issue 12, items 1-10): a real loopback server answers."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
import traceback
from pathlib import Path

import pytest

import flora_nb as fnb
from flora_nb import Flora, FloraClient
from flora_nb._ledger import Ledger
from flora_nb._models import RunStart, RunState, Technique
from flora_nb._transitions import changes_for

from .hostile import KEY, TECH, WS, FakeFlora, HostileServer, Reply, run_json
from .waiting import PollerTime, until


@pytest.fixture
def api():
    server = FakeFlora()
    yield server
    server.close()


@pytest.fixture
def evil():
    server = HostileServer(lambda req: Reply(200, run_json("run_0001")))
    yield server
    server.close()


def client_of(api: FakeFlora, **options) -> FloraClient:
    options.setdefault("max_retries", 0)
    return FloraClient(api_key=KEY, base_url=api.base_url, **options)


def session_of(api: FakeFlora, tmp_path: Path, **options) -> Flora:
    options.setdefault("poll_interval", (0.05, 0.2))
    options.setdefault("max_retries", 0)
    return Flora(api_key=KEY, base_url=api.base_url, workspace=WS, ledger_path=tmp_path / "ledger.sqlite",
                 resume=False, **options)


# ------------------------------------------------------------------ 1. parser differentials

# {A} is the API's host:port, {E} the other server's. Each is read differently by urlsplit and
# urllib3, or hides the real host behind userinfo, whitespace, or unicode.
DIFFERENTIAL = [
    "http://{E}\\@{A}/api/v1/runs/run_0001",
    "http://{E}\\\\@{A}/api/v1/runs/run_0001",
    "http://{E}/\\@{A}/api/v1/runs/run_0001",
    "http://{A}\\@{E}/api/v1/runs/run_0001",
    "http://{A}#@{E}/api/v1/runs/run_0001",
    "http://{A}?@{E}/api/v1/runs/run_0001",
    "http://{E}%2f@{A}/api/v1/runs/run_0001",
    "http://{E}%40{A}/api/v1/runs/run_0001",
    "http://{E}\t@{A}/api/v1/runs/run_0001",
    "http://{E}\n@{A}/api/v1/runs/run_0001",
    "http://{E} @{A}/api/v1/runs/run_0001",
    "http://{E};@{A}/api/v1/runs/run_0001",
    "http://{A}@{E}/api/v1/runs/run_0001",
    "http://{A}:80@{E}/api/v1/runs/run_0001",
    "http://user:pw@{A}/api/v1/runs/run_0001",
    "http://127\u30020\u30020\u30021:{EP}/api/v1/runs/run_0001",
    "http://127\uff0e0\uff0e0\uff0e1:{AP}/api/v1/runs/run_0001",
    " http://{E}/api/v1/runs/run_0001",
    "http:\\\\{E}/api/v1/runs/run_0001",
]


def _hostile_url(template: str, api: HostileServer, evil: HostileServer) -> str:
    a, e = api.origin.removeprefix("http://"), evil.origin.removeprefix("http://")
    return template.format(A=a, E=e, AP=api.port, EP=evil.port)


@pytest.mark.parametrize("template", DIFFERENTIAL)
def test_parser_differential_poll_url_never_carries_the_key(api, evil, template):
    url = _hostile_url(template, api, evil)
    with client_of(api) as client:
        state = client.get_run("run_0001", url)  # refused, then polled by id on the API's origin
    assert state.run_id == "run_0001" and state.status == "completed"
    assert evil.keyed() == [] and evil.requests == []
    assert [r.path for r in api.hits("/api/v1/runs")] == ["/api/v1/runs/run_0001"]


@pytest.mark.parametrize("template", DIFFERENTIAL)
def test_parser_differential_media_url_never_reaches_another_host(api, evil, template):
    url = _hostile_url(template, api, evil)
    with client_of(api) as client:
        try:
            client.fetch_media(url)
        except fnb.UnsafeURLError:
            assert api.requests == []  # refused before anything was sent
        except fnb.NotFoundError:  # both parsers agree it is the API's origin (e.g. '#@', '?@'): no leak
            assert [r.path for r in api.requests] == ["/"]
    assert evil.requests == []


def test_live_poller_never_sends_the_key_elsewhere(api, evil, tmp_path):
    url = _hostile_url(DIFFERENTIAL[0], api, evil)

    def start(req):
        return Reply(201, {"run_id": "run_0001", "estimated_seconds": 0.01, "poll_url": url})
    api.on_start = start
    with session_of(api, tmp_path) as fl:
        run = fl.run(TECH, {"prompt": "a fox"})
        run.wait(10)
        assert run.status == "completed"
    assert evil.keyed() == []


# ------------------------------------------------------------------ 2. file names from server data


def _media_api(api: FakeFlora, output_ids: list[str]) -> None:
    outputs = [{"output_id": oid, "type": "imageUrl", "url": f"{api.base_url}/media/x.py"} for oid in output_ids]
    api.on_run = lambda req, run_id: Reply(200, run_json(run_id, outputs=outputs))
    api.on_other = lambda req: Reply(200, b"\x89PNG fake", {"Content-Type": "image/png"})


HOSTILE_IDS = ["../../x", "/tmp/flora_nb_abs_x", "..", "a/../../b", "c:\\x", "x:y*?<>|", ".pth"]


def test_output_save_is_confined_to_the_directory(api, tmp_path):
    _media_api(api, HOSTILE_IDS)
    target = tmp_path / "a" / "b" / "out"
    target.mkdir(parents=True)
    with session_of(api, tmp_path) as fl:
        run = fl.run(TECH, {"prompt": "x"}).wait(10)
        saved = [o.save(target) for o in run.outputs]
        downloaded = run.download(tmp_path / "a" / "b" / "dl")
    for path in saved + downloaded:
        assert path.parent.resolve() in (target.resolve(), (tmp_path / "a" / "b" / "dl").resolve())
        assert path.suffix == ".png" and path.read_bytes() == b"\x89PNG fake"
    assert len(set(saved)) == len(saved) and len(set(downloaded)) == len(downloaded)
    assert not Path("/tmp/flora_nb_abs_x").exists() and not (tmp_path / "a" / "x.png").exists()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".py", ".pth")) == []


def test_sweep_download_is_confined(api, tmp_path):
    _media_api(api, ["../../../sweep_escape"])
    with session_of(api, tmp_path) as fl:
        sweep = fl.sweep(TECH, grid={"prompt": ["../../up", "b"]}).wait(10)
        paths = sweep.download(tmp_path / "s")
    assert len(paths) == 2
    assert all(p.parent.resolve() == (tmp_path / "s").resolve() and p.suffix == ".png" for p in paths)


# ------------------------------------------------------------------ 3. one bad item in a page

BAD_ITEMS = [None, "run_str", 7, {"run_id": "run_bad1", "status": "completed", "created_at": 1e20},
             {"run_id": "run_bad2", "status": "completed", "outputs": "not a list"},
             {"run_id": "run_bad3", "status": "completed", "started_at": "yesterday"}]


def test_history_skips_and_counts_bad_items(api, tmp_path):
    api.on_list = lambda req: Reply(200, {"technique_runs": BAD_ITEMS + [run_json("run_good")], "meta": {}})
    with session_of(api, tmp_path) as fl:
        frame = fl.history()
        assert list(frame["run_id"]) == ["run_good"]
        assert fl.status()["invalid_answers"] == len(BAD_ITEMS)


def test_batch_poll_uses_the_rest_of_a_page(api, tmp_path, caplog):
    api.on_run = lambda req, run_id: Reply(200, run_json(run_id, status="running"))  # single polls: no news
    api.on_list = lambda req: Reply(200, {"technique_runs": BAD_ITEMS + [run_json(f"run_{n:04d}") for n in (2, 1)],
                                          "meta": {}})
    with session_of(api, tmp_path) as fl:
        runs = [fl.run(TECH, {"prompt": p}) for p in ("a", "b")]
        for run in runs:
            run.wait(10)
        assert [r.status for r in runs] == ["completed", "completed"]
        assert fl.status()["invalid_answers"] >= len(BAD_ITEMS)
    assert not [r for r in caplog.records if r.exc_info]  # no tracebacks


def test_lost_start_is_matched_despite_bad_items(api, tmp_path):
    created: list[int] = []

    def hang_up(req):  # the run is created, the answer never comes
        created.append(int(time.time() * 1000))
        req.handler.close_connection = True
        return None
    api.on_start = hang_up
    api.on_list = lambda req: Reply(200, {"technique_runs": BAD_ITEMS + [
        run_json("run_lost", created_at=created[0], started_at=created[0], completed_at=created[0])]
        if created else [], "meta": {}})
    with session_of(api, tmp_path, reconcile_grace=30.0) as fl:
        run = fl.run(TECH, {"prompt": "x"})
        until(lambda: run.id == "run_lost", what="the lost start to be matched to run_lost")
        run.wait(10)
        assert run.status == "completed" and fl.status()["reconciled"] == 1
        assert fl.status()["invalid_answers"] >= len(BAD_ITEMS)
    assert len(api.hits("/api/v1/runs/technique", "POST")) == 1


# ------------------------------------------------------------------ 4. endless pages


def _endless(api: FakeFlora, repeat: bool, stop_after: int = 200) -> None:
    def page(req):
        n = len(api.hits("/api/v1/technique-runs"))
        cursor = None if n >= stop_after else ("same" if repeat else f"c{n}")
        item = run_json(f"run_page{n}") if "technique-runs" in req.path else technique_json_page(n)
        key = "technique_runs" if "technique-runs" in req.path else "techniques"
        return Reply(200, {key: [item], "meta": {"next_cursor": cursor}})
    api.on_list = page
    api.on_other = lambda req: page(req) if req.path.endswith("/techniques") else Reply(404, {})


def technique_json_page(n: int) -> dict:
    return {"technique_id": f"tech_{n}", "name": f"T{n}", "run_cost": 0.1, "inputs": [], "outputs": []}


@pytest.mark.parametrize("repeat", [True, False])
def test_history_stops_on_repeated_cursor_or_page_cap(api, tmp_path, repeat):
    _endless(api, repeat)
    with session_of(api, tmp_path) as fl:
        fl.client.max_pages = 20
        with pytest.raises(fnb.InvalidResponseError, match="cursor|pages"):
            fl.history()
    assert len(api.hits("/api/v1/technique-runs")) <= 21


def test_techniques_stop_on_repeated_cursor(api, tmp_path):
    _endless(api, repeat=True)
    with client_of(api) as client:
        with pytest.raises(fnb.InvalidResponseError, match="cursor"):
            list(client.techniques())
    assert len(api.hits("/api/v1/techniques")) <= 2


def test_poller_falls_back_to_single_polls_on_endless_pages(api, tmp_path):
    _endless(api, repeat=False, stop_after=10_000)
    with session_of(api, tmp_path) as fl:
        fl.client.max_pages = 5
        runs = [fl.run(TECH, {"prompt": p}) for p in ("a", "b")]
        for run in runs:
            run.wait(10)
        assert [r.status for r in runs] == ["completed", "completed"]
        assert fl.poller.stats.batch_fallbacks >= 1
    assert len(api.hits("/api/v1/technique-runs")) <= 5 * (fl.poller.stats.cycles + 1)


# ------------------------------------------------------------------ 5. total deadline


class Trickle:
    """Answers with a JSON body sent one byte a second for 30 s; ``finished`` is set at the end."""

    def __init__(self):
        self.entered = threading.Event()
        self.finished = threading.Event()

    def __call__(self, req):
        self.entered.set()
        body = json.dumps(run_json("run_0001")).encode().ljust(30)[:30]
        h = req.handler
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "30")
        h.end_headers()
        try:
            for i in range(30):
                h.wfile.write(body[i:i + 1])
                h.wfile.flush()
                if i < 29:
                    self.finished.wait(1.0)  # never set early: just a 1 s pause per byte
        except OSError:
            return None
        self.finished.set()
        return None


def test_trickled_body_hits_the_total_deadline(api):
    trickle = Trickle()
    api.on_run = lambda req, run_id: trickle(req)
    with client_of(api, timeout=(1.0, 2.0), deadline=3.0) as client:
        with pytest.raises(fnb.FloraTimeout):
            client.get_run("run_0001")
    assert not trickle.finished.is_set()


def test_close_returns_promptly_while_a_poll_trickles(api, tmp_path):
    trickle = Trickle()
    api.on_run = lambda req, run_id: trickle(req)
    fl = session_of(api, tmp_path)
    fl.run(TECH, {"prompt": "x"})
    assert trickle.entered.wait(10)
    fl.close()
    assert not trickle.finished.is_set()  # close() came back long before the 30 s body ended
    assert not fl.poller._thread.is_alive()


# ------------------------------------------------------------------ 6. refused poll_url, answers without run_id


def test_refused_poll_url_falls_back_to_the_run_id(api, evil, tmp_path):
    api.on_start = lambda req: Reply(201, {"run_id": "run_0001", "estimated_seconds": 0.01,
                                           "poll_url": evil.origin + "/api/v1/runs/run_0001"})
    with session_of(api, tmp_path) as fl:
        run = fl.run(TECH, {"prompt": "x"}).wait(10)
        assert run.status == "completed"
    assert evil.requests == []


def test_poll_answer_without_run_id_is_rescheduled_not_spun_on(api, tmp_path):
    api.on_run = lambda req, run_id: Reply(200, {"status": "running", "progress": 5})

    def polls() -> int:
        return len(api.hits("/api/v1/runs/"))

    with session_of(api, tmp_path, poll_interval=(30.0, 30.0)) as fl:
        # The poller's clock and sleeps on virtual time: a second of it passes as fast as the poller
        # lets it, and what it sends in that second depends on nothing but the waits it chooses.
        second = PollerTime(fl.poller, 1.0, snapshot=polls, start_when=lambda: polls() >= 1)
        fl.run(TECH, {"prompt": "x"})
        fl.poller.track(fl.tracked_runs()[0], first_poll_in=0.0)
        until(lambda: polls() >= 1, what="the first poll")
        until(second.closed.is_set, what="a second of the poller's time to pass")
        # The next poll is due in 30 s: a poller that spins would send many more within a second.
        assert second.seen is not None and second.seen < 3, second.seen
        assert fl.status()["poller_errors"] >= 1 and "run_id" in fl.status()["poller_last_error"]


# ------------------------------------------------------------------ 7. malformed fields


@pytest.mark.parametrize("data, field", [
    ({"run_id": "r", "status": "completed", "outputs": "abc"}, "outputs"),
    ({"run_id": "r", "status": "completed", "created_at": 1e20}, "created_at"),
    ({"run_id": "r", "status": "completed", "completed_at": float("nan")}, "completed_at"),
    ({"run_id": "r", "status": "completed", "started_at": "yesterday"}, "started_at"),
    ({"run_id": "r", "status": ["completed"]}, "status"),
    ({"run_id": {"x": 1}, "status": "completed"}, "run_id"),
    ({"status": "completed"}, "run_id"),
    ("not an object", "run"),
    (None, "run"),
])
def test_malformed_run_fields_are_invalid_response_errors(data, field):
    with pytest.raises(fnb.InvalidResponseError, match=field) as info:
        RunState.from_api(data)
    assert isinstance(info.value, fnb.FloraError) and info.value.field.startswith(field)


def test_malformed_start_and_technique_answers():
    with pytest.raises(fnb.InvalidResponseError, match="run_id"):
        RunStart.from_api({"poll_url": "x"})
    with pytest.raises(fnb.InvalidResponseError, match="inputs"):
        Technique.from_api({"technique_id": "tech_1", "inputs": "prompt"})
    assert RunState.from_api({"run_id": "r", "status": "completed", "charged_cost": -1}).charged_cost is None
    assert RunState.from_api({"run_id": "r", "status": "completed", "charged_cost": "inf"}).charged_cost is None


def test_start_answer_without_run_id_is_reconciled_not_stored_empty(api, tmp_path):
    api.on_start = lambda req: (setattr(api, "started", api.started + 1), Reply(201, {"poll_url": "x"}))[1]
    with session_of(api, tmp_path, reconcile_grace=0.3) as fl:
        first = fl.run(TECH, {"prompt": "a"})
        second = fl.run(TECH, {"prompt": "b"})  # used to be a raw IntegrityError (run_id '' twice)
        assert first.id is None and second.id is None
        assert fl.ledger.known_run_ids(fl.endpoint) == set()
        assert {first.error_code, second.error_code} <= {"start_lost", "start_unconfirmed"}
    assert len(api.hits("/api/v1/runs/technique", "POST")) == 2  # never resent


# ------------------------------------------------------------------ 8. secrets echoed by a proxy


def _echo(req) -> Reply:
    echoed = json.dumps(req.headers)
    path = req.path.removeprefix("/api/v1")
    if path == "/workspaces":
        return Reply(200, ("<html>" + echoed + "</html>").encode(), {"Content-Type": "text/html",
                                                                     "request-id": req.auth or "-"})
    if path == f"/techniques/{TECH}":
        return Reply(200, {"technique_id": TECH, "name": "Fake", "run_cost": 0.25,
                           "inputs": [{"id": "prompt", "type": "text"}], "outputs": []})
    if path == "/runs/technique":
        return Reply(400, {"error": {"code": "input_validation_error", "message": "bad: " + echoed,
                                     "fields": [{"field": req.auth, "message": echoed}]}},
                     {"request-id": req.auth or "-"})
    if path.startswith("/runs/"):
        return Reply(200, run_json("run_0001", status="failed", error_code=req.auth, error_message=echoed),
                     {"request-id": "rid " + (req.auth or "")})
    return Reply(502, (echoed + "\n").encode(), {"Content-Type": "text/plain", "request-id": req.auth or "-"})


def test_echoed_key_is_scrubbed_everywhere(api, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    api.route = _echo
    texts = []
    with session_of(api, tmp_path) as fl:
        for call in (fl.client.workspaces, lambda: fl.run(TECH, {"prompt": "x"}),
                     lambda: fl.client.request("GET", "/elsewhere")):
            with pytest.raises(fnb.FloraError) as info:
                call()
            err = info.value
            texts += [str(err), repr(err), "".join(traceback.format_exception(err)), repr(vars(err))]
        state = fl.client.get_run("run_0001")
        texts += [repr(state), str(state.error_message), str(state.error_code)]
        run = fl.engine.adopt(fl.ledger.get(fl.ledger.add_intents([{
            "endpoint": fl.endpoint, "workspace_id": WS, "idempotency_key": "k1", "owner": fl.owner,
            "technique_id": TECH, "technique_name": "Fake", "estimated_cost": 0.25, "status": "pending",
            "inputs": {}, "labels": {}, "run_id": "run_0001"}])[0]))
        fl.poller.track(run, first_poll_in=0.0)
        run.wait(10)
        texts += [repr(run), run._repr_html_(), str(run.error_message), str(fl.runs().to_dict())]
        ledger_path = fl.ledger.path
    assert any("authorization" in t.lower() for t in texts)  # the echo reached every surface...
    assert all(KEY not in t for t in texts)  # ...but never the key
    assert all(KEY not in r.getMessage() and KEY not in str(r.args) for r in caplog.records)
    for path in ledger_path.parent.glob("ledger.sqlite*"):
        assert KEY.encode() not in path.read_bytes()


def test_key_spelled_with_json_escapes_is_scrubbed(api):
    escaped = f"\\u{ord(KEY[0]):04x}" + KEY[1:]  # the bytes never contain the key; the parsed text does
    body = '{"run_id": "run_0001", "status": "failed", "error_message": "echo ' + escaped + '"}'
    api.on_run = lambda req, run_id: Reply(200, body.encode())
    with client_of(api) as client:
        state = client.get_run("run_0001")
    assert KEY not in repr(state) and state.error_message == "echo <hidden>"


# ------------------------------------------------------------------ 9. redirects


def test_api_calls_do_not_follow_redirects(api, evil):
    api.on_start = lambda req: Reply(307, b"", {"Location": evil.origin + "/api/v1/runs/technique"})
    api.on_other = lambda req: Reply(302, b"", {"Location": evil.origin + "/api/v1/x"})
    with client_of(api) as client:
        with pytest.raises(fnb.APIError, match=evil.origin.removeprefix("http://")) as info:
            client.start_technique_run(TECH, WS, {"prompt": "x"})
        assert info.value.status == 307 and info.value.code == "redirect"
        with pytest.raises(fnb.APIError, match="redirect"):
            client.request("GET", "/somewhere")
    assert evil.requests == []


def test_media_follows_redirects_without_the_key(api, evil):
    evil.route = lambda req: Reply(200, b"media bytes", {"Content-Type": "image/png"})
    api.on_other = lambda req: Reply(302, b"", {"Location": evil.origin + "/media/x.png"})
    with client_of(api) as client:
        assert client.fetch_media(api.base_url + "/media/y.png") == b"media bytes"
    assert len(evil.requests) == 1 and evil.keyed() == [] and "authorization" not in evil.requests[0].headers


# ------------------------------------------------------------------ 10. small ones


def test_api_answers_are_capped(api):
    big = b'{"workspaces": [], "pad": "' + b"x" * (17 * 1024 * 1024) + b'"}'

    def chunked(req):
        h = req.handler
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        try:
            for i in range(0, len(big), 1 << 20):
                part = big[i:i + (1 << 20)]
                h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        return None
    api.on_other = lambda req: Reply(200, big) if req.path.endswith("/big") else chunked(req)
    with client_of(api) as client:
        for path in ("/big", "/chunked"):
            with pytest.raises(fnb.InvalidResponseError, match="MB"):
                client.request("GET", path)


def test_terminal_status_is_final(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    [local] = ledger.add_intents([{"endpoint": "e", "workspace_id": WS, "idempotency_key": "k", "owner": "o",
                                   "technique_id": TECH, "technique_name": "F", "estimated_cost": 0.1,
                                   "status": "pending", "inputs": {}, "labels": {}}])
    ledger.update(local, run_id="run_1", status="completed", progress=100.0, charged_cost=0.1)
    row = ledger.get(local)
    changes = changes_for(row, RunState.from_api(run_json("run_1", status="failed", error_code="oops")))
    assert "status" not in changes and "error_code" not in changes and "charged_cost" not in changes
    ledger.close()


def test_home_and_cache_are_private(api, tmp_path, monkeypatch):
    home = tmp_path / "newhome"
    monkeypatch.setenv("FLORA_NB_HOME", str(home))
    old = os.umask(0o022)
    try:
        _media_api(api, ["img"])
        with Flora(api_key=KEY, base_url=api.base_url, workspace=WS, resume=False, poll_interval=(0.05, 0.2)) as fl:
            run = fl.run(TECH, {"prompt": "x"}).wait(10)
            run.outputs[0].fetch()
            cache = fl.cache_dir
    finally:
        os.umask(old)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700



# ------------------------------------------------------------------ fidelity: inputs are map[unknown]


def test_client_sends_numbers_and_booleans_to_text_inputs(tmp_path):
    with Flora.simulated(speed=100.0, ledger_path=tmp_path / "l.sqlite") as fl:
        run = fl.run("poster-studio", {"prompt": 42}).wait(30)
        assert run.status == "completed" and run.inputs == {"prompt": 42}
        record = next(r for r in fl.simulator.run_records() if r["run_id"] == run.id)
        assert record["inputs"] == {"prompt": "42"}
        with pytest.raises(fnb.InputError, match="finite"):
            fl.run("poster-studio", {"prompt": float("nan")})
        with pytest.raises(fnb.InputError, match="must be a string"):
            fl.run("poster-studio", {"prompt": [1]})

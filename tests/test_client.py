"""FloraClient against the simulator over real loopback HTTP."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import traceback

import pytest

import flora_nb as fnb
from flora_nb import FloraClient
from flora_nb._throttle import Throttle
from flora_nb.sim import Faults
from tests.waiting import SimClock, until

from .conftest import make_client

IMAGE_URL = "https://example.com/photo.png"


def text_technique(client: FloraClient) -> fnb.Technique:
    """A technique whose only required input is text (a prompt)."""
    return next(t for t in client.techniques() if [i.type for i in t.required_inputs] == ["text"])


def prompt_inputs(tech: fnb.Technique, prompt: str = "a red fox") -> dict[str, str]:
    return {tech.required_inputs[0].id: prompt}


def wait_terminal(client: FloraClient, start: fnb.RunStart) -> fnb.RunState:
    def terminal() -> fnb.RunState | None:
        state = client.get_run(start.run_id, start.poll_url)
        return state if state.terminal else None

    return until(terminal, what=f"run {start.run_id} to end")


def start(client: FloraClient, sim, prompt: str = "a red fox", **kwargs) -> fnb.RunStart:
    tech = text_technique(client)
    return client.start_technique_run(tech.technique_id, sim.workspace_id, prompt_inputs(tech, prompt), **kwargs)


# ----------------------------------------------------------------------- resources


def test_workspaces(shared_client, shared_sim):
    spaces = shared_client.workspaces()
    assert [w.workspace_id for w in spaces] == [shared_sim.workspace_id]
    assert spaces[0].name and spaces[0].role
    assert spaces[0].created_at is None or spaces[0].created_at.tzinfo is not None


def test_techniques_cover_every_output_type(shared_client):
    techniques = list(shared_client.techniques())
    assert len(techniques) >= 6
    assert {o.type for t in techniques for o in t.outputs} >= {"imageUrl", "videoUrl", "audioUrl", "text", "documentUrl"}
    assert all(t.technique_id.startswith("tech_") and t.run_cost and t.run_cost > 0 for t in techniques)


def test_techniques_paginate_across_pages(shared_client, shared_sim):
    every = [t["technique_id"] for t in shared_client.paginate("/techniques", "techniques", {"limit": 2})]
    assert len(every) == len(set(every)) == len(list(shared_client.techniques()))
    assert len(every) > 2  # more than one page was needed


def test_techniques_search(shared_client):
    tech = text_technique(shared_client)
    word = tech.name.split()[0]
    found = list(shared_client.techniques(query=word.lower()))
    assert tech.technique_id in [t.technique_id for t in found]
    assert list(shared_client.techniques(query="no-such-technique-zzz")) == []


def test_technique_by_id_and_slug(shared_client):
    tech = text_technique(shared_client)
    assert shared_client.technique(tech.technique_id) == tech
    assert tech.slug, "the simulator's techniques carry slugs"
    assert shared_client.technique(tech.slug).technique_id == tech.technique_id


def test_unknown_technique_is_not_found_with_request_id_kept_out_of_the_message(shared_client):
    with pytest.raises(fnb.NotFoundError) as info:
        shared_client.technique("tech_doesnotexist")
    err = info.value
    assert (err.status, err.code) == (404, "not_found")
    assert err.request_id and err.request_id.startswith("req_")
    assert "req_" not in str(err)  # the id stays on the error for support, out of the message


def test_run_lifecycle_outputs_and_media(shared_client, shared_sim):
    begun = start(shared_client, shared_sim, "a blue whale")
    assert begun.run_id.startswith("run_") and begun.type == "technique"
    assert begun.charged_cost and begun.charged_cost > 0 and begun.estimated_seconds is not None
    assert begun.poll_url and begun.poll_url.startswith(shared_sim.base_url.split("/api")[0])
    state = wait_terminal(shared_client, begun)
    assert state.status == "completed" and state.progress == 100
    assert state.created_at <= state.started_at <= state.completed_at
    assert state.charged_cost is not None and state.outputs
    image = next(o for o in state.outputs if o.type == "imageUrl")
    assert shared_client.fetch_media(image.url).startswith(b"\x89PNG\r\n\x1a\n")


def test_get_run_without_poll_url(shared_client, shared_sim):
    begun = start(shared_client, shared_sim)
    assert shared_client.get_run(begun.run_id).run_id == begun.run_id


def test_technique_runs_paginate_newest_first(client, sim):
    ids = [start(client, sim, f"prompt {i}").run_id for i in range(7)]
    sim.reset_stats()
    seen = [r.run_id for r in client.technique_runs(page_size=3, workspace_id=sim.workspace_id)]
    assert seen == list(reversed(ids))
    assert sim.stats()["requests_by_route"]["GET /technique-runs"] == 3
    tech = text_technique(client)
    assert len(list(client.technique_runs(technique_id=tech.technique_id))) == 7
    assert all(r.workspace_id == sim.workspace_id and r.technique_id for r in client.technique_runs())


def test_technique_runs_stop_paging_when_caller_stops(client, sim):
    for i in range(5):
        start(client, sim, f"p{i}")
    sim.reset_stats()
    first = next(iter(client.technique_runs(page_size=2)))
    assert first.run_id
    assert sim.stats()["requests_by_route"]["GET /technique-runs"] == 1


def test_assets_upload_and_url(client, sim, tmp_path):
    png = tmp_path / "ref.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    uploaded = client.create_asset(png, workspace_id=sim.workspace_id)
    assert uploaded.asset_id.startswith("asset_") and uploaded.status == "ready"
    assert client.get_asset(uploaded.asset_id).asset_id == uploaded.asset_id
    assert client.fetch_media(uploaded.url) == png.read_bytes()
    linked = client.create_asset(url=IMAGE_URL, workspace_id=sim.workspace_id)
    assert linked.url == IMAGE_URL and linked.uploaded_via == "url"


def test_asset_too_big_is_refused_before_sending(client, sim, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(bytes(4 * 1024 * 1024 + 1))
    before = sim.stats()["requests_total"]
    with pytest.raises(fnb.InputError, match="4 MB"):
        client.create_asset(big, workspace_id=sim.workspace_id)
    assert sim.stats()["requests_total"] == before


# --------------------------------------------------------------------------- errors


def test_validation_error_lists_fields(client, sim):
    tech = text_technique(client)
    with pytest.raises(fnb.ValidationError) as info:
        client.start_technique_run(tech.technique_id, sim.workspace_id, {"nonsense": "x"})
    err = info.value
    assert (err.status, err.code) == (400, "input_validation_error")
    fields = {f["field"] for f in err.fields}
    assert any(tech.required_inputs[0].id in f for f in fields) and any("nonsense" in f for f in fields)
    assert sim.stats()["runs_created"] == 0


def test_invalid_json(client):
    with pytest.raises(fnb.ValidationError) as info:
        client.request("POST", "/runs/technique", data=b"{not json", idempotency_key="k1")
    assert info.value.code == "invalid_json"


def test_bad_key_is_authentication_error(sim):
    with FloraClient(api_key="sk_wrong_secret_123", base_url=sim.base_url) as bad:
        with pytest.raises(fnb.AuthenticationError) as info:
            bad.workspaces()
    assert info.value.status == 401 and "FLORA_API_KEY" in str(info.value)
    assert "sk_wrong_secret_123" not in str(info.value)


def test_insufficient_credits(client, sim):
    sim.faults = Faults(credits=0.0)
    with pytest.raises(fnb.InsufficientCreditsError) as info:
        start(client, sim)
    assert (info.value.status, info.value.code) == (402, "insufficient_credits")
    assert sim.stats()["runs_created"] == 0


def test_forbidden_workspace(client):
    tech = text_technique(client)
    with pytest.raises(fnb.PermissionDeniedError) as info:
        client.start_technique_run(tech.technique_id, "ws_sim_private", prompt_inputs(tech))
    assert (info.value.status, info.value.code) == (403, "forbidden")


def test_duplicate_idempotency_key(client, sim):
    start(client, sim, idempotency_key="flora_nb-same")
    with pytest.raises(fnb.IdempotencyDuplicateError) as info:
        start(client, sim, idempotency_key="flora_nb-same")
    assert (info.value.status, info.value.code) == (409, "idempotency_duplicate")
    assert sim.stats()["runs_created"] == 1
    assert sim.stats()["requests_by_route"]["POST /runs/technique"] == 2  # a 409 is never retried


def test_rate_limited_without_retries(sim):
    sim.faults = Faults(rate_limit=0.2)
    with make_client(sim, max_retries=0) as c:
        c.workspaces()
        with pytest.raises(fnb.RateLimitError) as info:
            c.workspaces()
    assert info.value.status == 429 and info.value.retry_after and info.value.retry_after > 1


def test_server_error_after_retries(sim):
    sim.faults = Faults(error_rate=1.0)
    with make_client(sim, max_retries=2) as c:
        with pytest.raises(fnb.ServerError) as info:
            c.workspaces()
    assert (info.value.status, info.value.code) == (500, "unknown_error")
    assert sim.stats()["requests_total"] == 3


def test_connection_refused_is_connection_error():
    with FloraClient(api_key="sk_x", base_url="http://127.0.0.1:9/api/v1", max_retries=1) as c:
        with pytest.raises(fnb.FloraConnectionError, match="no answer"):
            c.workspaces()


# -------------------------------------------------------------------------- retries


def _start_all(client: FloraClient, sim, n: int, threads: int = 4) -> list[object]:
    """Start n runs concurrently; each item is a RunStart or the error that start raised."""
    tech = text_technique(client)

    def one(i: int):
        try:
            return client.start_technique_run(tech.technique_id, sim.workspace_id, prompt_inputs(tech, f"v{i}"))
        except fnb.FloraError as exc:
            return exc

    with cf.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(n)))


def _keys_of_runs(sim) -> list[str]:
    return [r["idempotency_key"] for r in sim.run_records()]


def test_error_rate_retries_make_exactly_one_run_per_start(sim, monkeypatch):
    # How long a retry waits is not the promise here; a 30 % error rate makes runs of 5-6 errors
    # (3-8 s back-offs each) likely among 20 starts: wait a token time instead.
    monkeypatch.setattr(fnb.FloraClient, "_backoff", lambda self, attempt: 0.01)
    with make_client(sim, max_retries=10) as c:
        tech = text_technique(c)
        sim.reset_stats()
        sim.faults = Faults(error_rate=0.3)
        results = _start_all(c, sim, 20)
    assert all(isinstance(r, fnb.RunStart) for r in results), results
    stats = sim.stats()
    assert stats["errors_injected"] > 0
    assert stats["runs_created"] == 20 and len(set(_keys_of_runs(sim))) == 20
    assert tech.technique_id


def test_retry_reuses_the_idempotency_key(sim):
    with make_client(sim, max_retries=10) as c:
        tech = text_technique(c)
        sim.faults = Faults(error_rate=0.5)
        c.start_technique_run(tech.technique_id, sim.workspace_id, prompt_inputs(tech), idempotency_key="flora_nb-k")
    posts = [r for r in sim.requests() if r["method"] == "POST"]
    assert len(posts) >= 1 and {r["idempotency_key"] for r in posts} == {"flora_nb-k"}
    assert sim.stats()["runs_created"] == 1


def test_dropped_starts_never_create_a_second_run(sim):
    with make_client(sim, max_retries=10) as c:
        text_technique(c)
        sim.faults = Faults(drop_rate=0.3)
        results = _start_all(c, sim, 20)
    # A dropped response is retried with the same key; the server answers 409, which the
    # client surfaces as "already started" (the run engine reconciles it), never a new start.
    assert all(isinstance(r, (fnb.RunStart, fnb.IdempotencyDuplicateError)) for r in results), results
    assert any(isinstance(r, fnb.IdempotencyDuplicateError) for r in results)
    stats = sim.stats()
    assert stats["drops"] > 0 and stats["runs_created"] == 20
    assert len(set(_keys_of_runs(sim))) == 20


def test_429_is_retried_and_one_run_per_start(sim):
    with make_client(sim, max_retries=20) as c:
        text_technique(c)
        sim.faults = Faults(rate_limit=10.0)
        results = _start_all(c, sim, 20)
    assert all(isinstance(r, fnb.RunStart) for r in results), results
    stats = sim.stats()
    assert stats["rate_limited"] > 0 and stats["runs_created"] == 20


def test_retry_after_is_honoured(sim, monkeypatch):
    sim.faults = Faults(rate_limit=2.0)  # one token every 0.5 s, burst of 2
    clock = SimClock(sim, monkeypatch)  # the server's bucket and the client's waits on one fake clock
    with make_client(sim, max_retries=5) as c:
        c.throttle = Throttle(None, clock=clock, sleep=clock.sleep)  # the client's own throttle, as built, on it
        began = clock()
        for _ in range(5):
            c.workspaces()
        elapsed = clock() - began
    # Honouring the server's wait means each 429 costs one request, never a burst of them,
    # and five requests cannot finish before three refills of the bucket (burst 2).
    assert 0 < sim.stats()["rate_limited"] <= 5
    assert elapsed >= 3 * 0.5 * 0.9


def test_server_wait_is_capped(sim, monkeypatch):
    sim.faults = Faults(rate_limit=0.1)  # the server asks for a 10 s wait
    clock = SimClock(sim, monkeypatch)
    with make_client(sim, max_retries=1, max_retry_wait=0.2) as c:
        c.throttle = Throttle(None, clock=clock, sleep=clock.sleep)
        c.workspaces()
        began = clock()
        with pytest.raises(fnb.RateLimitError):
            c.workspaces()
    assert clock() - began < 5.0


def test_client_side_rate_limit_avoids_429(sim):
    sim.faults = Faults(rate_limit=20.0)
    with make_client(sim, rate_limit=15.0) as c:
        for _ in range(40):
            c.workspaces()
    assert sim.stats()["rate_limited"] == 0


def test_post_without_key_is_not_retried(sim):
    sim.faults = Faults(error_rate=1.0)
    with make_client(sim, max_retries=3) as c:
        with pytest.raises(fnb.ServerError):
            c.request("POST", "/assets", json={"source": IMAGE_URL, "workspace_id": sim.workspace_id})
    assert sim.stats()["requests_total"] == 1


# --------------------------------------------------------------- origin and secrets


def _other_origin(url: str) -> str:
    return url.replace("127.0.0.1", "localhost", 1)


def test_poll_url_on_another_origin_is_refused_and_polled_by_id(client, sim):
    begun = start(client, sim)
    before = sim.stats()["requests_total"]
    assert client.get_run(begun.run_id, _other_origin(begun.poll_url)).run_id == begun.run_id
    assert sim.stats()["requests_total"] == before + 1  # one poll, by run id, on the base URL's origin
    assert sim.requests()[-1]["path"].endswith(f"/runs/{begun.run_id}")


def test_media_on_another_origin_gets_no_authorization(client, sim):
    state = wait_terminal(client, start(client, sim))
    url = state.outputs[0].url if state.outputs[0].type != "text" else state.outputs[-1].url
    client.fetch_media(_other_origin(url))
    assert sim.stats()["media_requests_with_auth"] == 0
    client.fetch_media(url)  # same origin: the check above could have failed
    assert sim.stats()["media_requests_with_auth"] == 1


def test_key_never_leaks(sim, caplog):
    key = sim.api_key
    caplog.set_level(logging.DEBUG)
    texts = []
    with make_client(sim, max_retries=1) as c:
        texts += [repr(c), str(c)]
        sim.faults = Faults(error_rate=1.0)
        for call in (c.workspaces, lambda: c.technique("tech_nope"), lambda: c.get_run("run_x", "http://localhost:1/x")):
            try:
                call()
            except fnb.FloraError as exc:
                texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    with FloraClient(api_key=key, base_url="http://127.0.0.1:9/api/v1", max_retries=0) as dead:
        with pytest.raises(fnb.FloraConnectionError) as info:
            dead.workspaces()
        texts.append("".join(traceback.format_exception(info.value)))
    assert len(texts) >= 8
    assert all(key not in t for t in texts) and key not in caplog.text
    assert caplog.records, "the client logs its retries"


def test_user_agent(client, sim):
    client.workspaces()
    assert sim.requests()[-1]["user_agent"] == f"flora_nb/{fnb.__version__}"


# ----------------------------------------------------------------------- settings


def test_no_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("FLORA_API_KEY", raising=False)
    with pytest.raises(fnb.ConfigError, match="FLORA_API_KEY.*simulat"):
        FloraClient()


def test_settings_from_environment(monkeypatch, sim):
    monkeypatch.setenv("FLORA_API_KEY", sim.api_key)
    monkeypatch.setenv("FLORA_BASE_URL", sim.base_url + "/")
    with FloraClient() as c:
        assert c.base_url == sim.base_url
        assert c.workspaces()
    with FloraClient(base_url="http://127.0.0.1:9/api/v1") as c:
        assert c.base_url.endswith(":9/api/v1")  # an argument beats the environment


def test_bad_base_url(monkeypatch):
    with pytest.raises(fnb.ConfigError, match="http"):
        FloraClient(api_key="k", base_url="app.flora.ai")


def test_thread_safety(shared_client, shared_sim):
    tech = text_technique(shared_client)
    begun = start(shared_client, shared_sim)

    def work(i: int) -> int:
        for _ in range(10):
            assert shared_client.get_run(begun.run_id, begun.poll_url).run_id == begun.run_id
            assert shared_client.technique(tech.technique_id).technique_id == tech.technique_id
        return i

    with cf.ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(work, range(16))) == list(range(16))


def test_key_with_line_break_is_refused_without_echoing_it():
    with pytest.raises(fnb.ConfigError) as info:
        FloraClient(api_key="sk_live_SECRET\nX-Evil: 1", base_url="http://127.0.0.1:9/api/v1")
    assert "SECRET" not in str(info.value) and "line breaks" in str(info.value)


@pytest.mark.parametrize("headers, expected", [
    ({"retry-after": "soon"}, None), ({"retry-after": "nan"}, None), ({"retry-after": "inf"}, None),
    ({"retry-after": "2"}, 2.0), ({"retry-after-ms": "150"}, 0.15), ({"retry-after-ms": "0"}, 0.0),
    ({"retry-after-ms": "nan", "retry-after": "3"}, 3.0),
])
def test_server_wait_parsing(headers, expected):
    from flora_nb._client import _server_wait

    assert _server_wait(headers) == expected


def test_error_after_a_dropped_attempt_says_so(sim):
    sim.faults = Faults(drop_rate=1.0)
    with make_client(sim, max_retries=1) as c:
        tech = text_technique(c)
        with pytest.raises(fnb.IdempotencyDuplicateError) as info:
            c.start_technique_run(tech.technique_id, sim.workspace_id, prompt_inputs(tech))
    assert info.value.unanswered_attempt is True and sim.stats()["runs_created"] == 1

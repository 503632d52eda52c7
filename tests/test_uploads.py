"""Local files as inputs: fl.upload, paths in run/sweep/magic, refusals before any request, the cache."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

import flora_nb as fnb
from flora_nb import Flora
from flora_nb._magic import FloraMagics
from flora_nb.sim import FloraSimulator

RELIGHT = "product-relight"  # product_image* (imageUrl), lighting (text)
MOTION = "image-to-motion"  # prompt* (text), start_frame (imageUrl, optional)
MiB = 1024 * 1024


def png_bytes(width: int = 64, height: int = 64, filler: int = 200, seed: int = 0) -> bytes:
    """A PNG signature and IHDR header (all flora_nb and the simulator look at), then filler."""
    return (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + struct.pack(">II", width, height)
            + bytes([seed % 256]) * filler)


def write_png(folder: Path, name: str, seed: int = 0, size: int = 200) -> Path:
    path = folder / name
    path.write_bytes(png_bytes(filler=size, seed=seed))
    return path


@pytest.fixture
def fl(tmp_path):
    with Flora.simulated(speed=100.0, seed=5, ledger_path=tmp_path / "l.sqlite") as session:
        session.workspace_id  # noqa: B018 - resolve the workspace now, so request counts below are uploads only
        yield session


def routes(fl: Flora) -> dict[str, int]:
    return dict(fl.simulator.stats()["requests_by_route"])


def asset_posts(fl: Flora) -> int:
    return routes(fl).get("POST /assets", 0)


def server_inputs(fl: Flora) -> list[dict[str, str]]:
    return [r["inputs"] for r in fl.simulator.run_records()]


# ------------------------------------------------------------------ fl.upload


def test_upload_returns_a_ready_asset_whose_bytes_the_server_holds(fl, tmp_path):
    path = write_png(tmp_path, "ref.png")
    asset = fl.upload(path)
    assert isinstance(asset, fnb.Asset) and asset.asset_id.startswith("asset_") and asset.status == "ready"
    assert fl.client.fetch_media(asset.url) == path.read_bytes()
    assert fl.client.get_asset(asset.asset_id).extra["content_type"] == "image/png"
    assert asset_posts(fl) == 1 and routes(fl).get("POST /storage/uploads/{asset_id}", 0) == 0  # direct


def test_same_content_is_uploaded_once(fl, tmp_path):
    path = write_png(tmp_path, "a.png")
    first = fl.upload(path)
    again = fl.upload(str(path))
    as_bytes = fl.upload(path.read_bytes())  # same content, no name: same asset
    copy = tmp_path / "copy-of-a.png"
    copy.write_bytes(path.read_bytes())
    assert {first.asset_id, again.asset_id, as_bytes.asset_id, fl.upload(copy).asset_id} == {first.asset_id}
    assert asset_posts(fl) == 1
    other = fl.upload(write_png(tmp_path, "b.png", seed=1))
    assert other.asset_id != first.asset_id and asset_posts(fl) == 2


def test_cache_survives_a_new_session_and_reuploads_when_the_asset_is_gone(tmp_path):
    ledger = tmp_path / "l.sqlite"
    path = write_png(tmp_path, "a.png")
    with FloraSimulator(speed=100.0, seed=6) as sim:
        port = int(sim.base_url.rsplit(":", 1)[1].split("/")[0])
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=ledger) as fl:
            first = fl.upload(path)
        sim.reset_stats()
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger_path=ledger) as fl:
            again = fl.upload(path)
            fl.upload(path)
        stats = sim.stats()["requests_by_route"]
        # A new session checks the cached asset once, then trusts it.
        assert again.asset_id == first.asset_id and again.url == first.url
        assert stats.get("POST /assets", 0) == 0 and stats["GET /assets/{asset_id}"] == 1
    # A fresh server on the same address knows nothing of that asset: it answers 404, flora_nb uploads again.
    with FloraSimulator(speed=100.0, seed=6, port=port) as fresh:
        with Flora(api_key=fresh.api_key, base_url=fresh.base_url, ledger_path=ledger) as fl:
            assert fl.endpoint == f"http://127.0.0.1:{port}/api/v1"
            renewed = fl.upload(path)
            run = fl.run(RELIGHT, {"product_image": path}).wait(timeout=60)
        stats = fresh.stats()["requests_by_route"]
        assert renewed.asset_id != first.asset_id and stats["POST /assets"] == 1
        assert stats["GET /assets/{asset_id}"] == 1  # the 404; the new asset is trusted afterwards
        assert run.status == "completed" and run.inputs["product_image"] == renewed.url


# ------------------------------------------------------------------ refused before any request


def _refused(fl: Flora, match: str, source, **options) -> None:
    before = fl.simulator.stats()["requests_total"]
    with pytest.raises(fnb.InputError, match=match):
        fl.upload(source, **options)
    assert fl.simulator.stats()["requests_total"] == before


def test_files_flora_refuses_are_refused_before_any_request(fl, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    _refused(fl, "is empty", empty)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    _refused(fl, "does not take text/plain", text)
    _refused(fl, "cannot tell what kind of file", b"just some bytes")
    _refused(fl, "does not take application/zip", b"PK\x03\x04", content_type="application/zip")
    huge = tmp_path / "huge.mp4"
    with huge.open("wb") as handle:  # sparse: no 50 MB written
        handle.truncate(50 * MiB + 1)
    _refused(fl, "up to 50 MB", huge)
    _refused(fl, "150 MP", png_bytes(20_000, 10_000))
    _refused(fl, "not an existing file", tmp_path / "missing.png")
    _refused(fl, "is a URL already", "https://example.com/a.png")
    _refused(fl, "file path", 42)
    # A file that is fine as a file but wrong for the input, in a run.
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    fl.technique(RELIGHT)
    before = fl.simulator.stats()["requests_total"]
    with pytest.raises(fnb.InputError, match="imageUrl input takes an image"):
        fl.run(RELIGHT, {"product_image": clip})
    with pytest.raises(fnb.InputError, match="http\\(s\\) URL, an asset_ id or the path of an existing"):
        fl.run(RELIGHT, {"product_image": "no-such-file.png"})
    with pytest.raises(fnb.InputError, match="not an existing file"):
        fl.run(RELIGHT, {"product_image": tmp_path / "gone.png"})
    assert fl.simulator.stats()["requests_total"] == before


def test_bytes_are_typed_by_name_type_or_content(fl):
    by_content = fl.upload(png_bytes(seed=7))
    assert by_content.url.endswith("/upload.png")
    named = fl.upload(b"%PDF-1.4 tiny", file_name="brief.pdf")
    assert named.url.endswith("/brief.pdf")
    typed = fl.upload(b"RIFF\x00\x00\x00\x00WAVEfmt ", content_type="audio/x-wav", file_name="take")
    assert fl.client.get_asset(typed.asset_id).extra["content_type"] == "audio/wav"


# ------------------------------------------------------------------ paths as run and sweep inputs


def test_a_local_png_becomes_an_asset_and_the_run_gets_its_url(fl, tmp_path):
    path = write_png(tmp_path, "product.png")
    run = fl.run(RELIGHT, {"product_image": path, "lighting": "golden hour"}).wait(timeout=60)
    assert run.status == "completed"
    [sent] = server_inputs(fl)
    asset = fl.upload(path)  # from the cache
    assert sent["product_image"] == asset.url == run.inputs["product_image"]
    assert fl.client.fetch_media(sent["product_image"]) == path.read_bytes()
    assert asset_posts(fl) == 1
    # A string naming the file works too, and does not upload it again.
    fl.run(RELIGHT, {"product_image": str(path)}).wait(timeout=60)
    assert server_inputs(fl)[-1]["product_image"] == asset.url and asset_posts(fl) == 1


def test_sweep_uploads_each_distinct_file_once_before_queueing(fl, tmp_path):
    a, b, c = (write_png(tmp_path, f"{n}.png", seed=i) for i, n in enumerate("abc"))
    grid = fl.sweep(RELIGHT, grid={"product_image": [a, str(b)], "lighting": ["soft", "hard", "rim"]}).wait(60)
    assert len(grid.runs) == 6 and asset_posts(fl) == 2
    zipped = fl.sweep(RELIGHT, zip={"product_image": [c, a], "lighting": ["x", "y"]}).wait(60)
    explicit = fl.sweep(RELIGHT, variations=[{"product_image": c}, {"product_image": a, "lighting": "noon"}],
                        fixed={}).wait(60)
    fixed = fl.sweep(MOTION, grid={"prompt": ["p", "q"]}, fixed={"start_frame": str(c)}).wait(60)
    assert asset_posts(fl) == 3  # a, b and c, once each, whichever way they were given
    urls = {p.name: fl.upload(p).url for p in (a, b, c)}
    sent = server_inputs(fl)
    # What FLORA received for each variation, in variation order (a sweep starts its variations side by side,
    # so the order they reach the server in is not theirs).
    received = {r["run_id"]: r["inputs"] for r in fl.simulator.run_records()}

    def given(sweep, name: str) -> list[str]:
        return [received[r.id][name] for r in sorted(sweep.runs, key=lambda r: r.variation)]

    assert len(sent) == 12
    assert sorted(given(grid, "product_image")) == sorted([urls["a.png"]] * 3 + [urls["b.png"]] * 3)
    assert given(zipped, "product_image") == [urls["c.png"], urls["a.png"]]
    assert given(explicit, "product_image") == [urls["c.png"], urls["a.png"]]
    assert given(fixed, "start_frame") == [urls["c.png"]] * 2
    for sweep in (grid, zipped, explicit, fixed):
        assert all(r.status == "completed" for r in sweep.runs)
    frame = grid.to_dataframe()
    assert set(frame["input.product_image"]) == {urls["a.png"], urls["b.png"]}


def test_a_bad_file_in_a_sweep_stops_everything_before_any_request(fl, tmp_path):
    good = write_png(tmp_path, "good.png")
    bad = tmp_path / "bad.txt"
    bad.write_text("not an image")
    fl.technique(RELIGHT)
    before = fl.simulator.stats()["requests_total"]
    with pytest.raises(fnb.InputError, match="1 of 2 variations are invalid"):
        fl.sweep(RELIGHT, grid={"product_image": [good, bad]})
    assert fl.simulator.stats()["requests_total"] == before


def test_dry_run_uploads_nothing_but_shows_cached_urls(fl, tmp_path):
    known, new = write_png(tmp_path, "known.png"), write_png(tmp_path, "new.png", seed=3)
    url = fl.upload(known).url
    fl.technique(RELIGHT)
    before = fl.simulator.stats()["requests_total"]
    plan = fl.sweep(RELIGHT, grid={"product_image": [known, new]}, dry_run=True)
    assert list(plan["input.product_image"]) == [url, str(new)]
    assert fl.simulator.stats()["requests_total"] == before


def test_magic_run_and_sweep_take_local_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    write_png(tmp_path, "local.png")
    other = write_png(tmp_path, "other.png", seed=9)
    shell = InteractiveShell.instance()
    magics = FloraMagics(shell=shell)
    shell.register_magics(magics)
    try:
        shell.run_cell("%flora connect --sim --speed 100").raise_error()
        run = shell.run_cell(f"%flora run {RELIGHT} product_image=local.png --wait").result
        fl = magics.session
        assert run.status == "completed" and run.inputs["product_image"] == fl.upload(Path("local.png")).url
        result = shell.run_cell(f"%flora sweep {RELIGHT} product_image=[local.png, {other}]")
        result.raise_error()
        sweep = result.result.wait(timeout=60)
        sent = server_inputs(fl)
        # what FLORA received for each variation, in variation order (its two starts race to the server)
        received = {r["run_id"]: r["inputs"]["product_image"] for r in fl.simulator.run_records()}
        swept = [received[r.id] for r in sorted(sweep.runs, key=lambda r: r.variation)]
        assert len(sent) == 3 and swept[0] == sent[0]["product_image"]
        assert swept[1] == fl.upload(other).url and asset_posts(fl) == 2
    finally:
        if magics.session is not None:
            magics.session.close()


# ------------------------------------------------------------------ the signed-URL flow above 4 MB


def _upload_routes(fl: Flora) -> dict[str, int]:
    return {k: v for k, v in routes(fl).items() if "asset" in k}


def test_size_boundary_between_direct_and_signed_uploads(fl):
    at_limit = png_bytes(filler=4 * MiB - len(png_bytes(filler=0)))
    assert len(at_limit) == 4 * MiB
    direct = fl.upload(at_limit)
    assert direct.uploaded_via == "direct" and _upload_routes(fl) == {"POST /assets": 1}
    over = at_limit + b"\0"
    signed = fl.upload(over)
    assert signed.status == "ready" and signed.uploaded_via == "signed_url"
    counts = _upload_routes(fl)
    assert counts["POST /assets"] == 2 and counts["POST /storage/uploads/{asset_id}"] == 1
    assert counts["POST /assets/{asset_id}/complete"] == 1 and counts["GET /assets/{asset_id}"] >= 1
    assert fl.client.fetch_media(signed.url) == over
    # The signed upload went to storage without the API key; the API calls carried it.
    storage = [r for r in fl.simulator.requests() if r["route"].startswith("POST /storage")]
    assert [r["auth_header"] for r in storage] == [False] and storage[0]["status"] == 204
    api_calls = [r for r in fl.simulator.requests() if "/assets" in r["route"] and "storage" not in r["route"]]
    assert all(r["auth_header"] and r["authorized"] for r in api_calls)
    # Cached like any other upload.
    assert fl.upload(over).asset_id == signed.asset_id and _upload_routes(fl)["POST /assets"] == 2


def test_the_largest_accepted_file_goes_up_and_one_byte_more_is_refused(fl, tmp_path):
    largest = tmp_path / "largest.png"
    largest.write_bytes(png_bytes(filler=50 * MiB - len(png_bytes(filler=0))))
    assert largest.stat().st_size == 50 * MiB
    asset = fl.upload(largest)
    assert asset.status == "ready" and fl.client.get_asset(asset.asset_id).extra["size_bytes"] == 50 * MiB
    with largest.open("ab") as handle:
        handle.write(b"\0")
    _refused(fl, "up to 50 MB", largest)


def test_a_file_that_fails_processing_raises_and_is_not_cached(tmp_path):
    with Flora.simulated(speed=100.0, ledger_path=tmp_path / "l.sqlite", asset_processing_seconds=0.0) as fl:
        fake = b"this is not a png" + bytes(5 * MiB)
        with pytest.raises(fnb.FloraError, match="not a valid image/png") as info:
            fl.upload(fake, content_type="image/png", file_name="fake.png")
        assert not isinstance(info.value, fnb.InputError)
        assert fl.ledger.find_upload(fl.endpoint, fl.workspace_id, hashlib.sha256(fake).hexdigest()) is None
        failed = [r for r in fl.simulator.requests() if r["route"] == "GET /assets/{asset_id}"]
        assert len(failed) == 1


def test_waiting_for_an_asset_polls_every_second_and_gives_up_after_120_s(tmp_path):
    # The simulator takes 10 000 s (100 s of real time at speed 100) to process: the fake clock runs out first.
    with FloraSimulator(speed=100.0, asset_processing_seconds=10_000.0) as sim:
        with fnb.FloraClient(api_key=sim.api_key, base_url=sim.base_url) as client:
            now = [0.0]
            naps: list[float] = []

            def sleep(seconds: float) -> None:
                naps.append(seconds)
                now[0] += seconds

            data = png_bytes(filler=5 * MiB)
            with pytest.raises(fnb.FloraTimeout, match="still pending_upload after 120 s"):
                client.upload_asset(data, file_name="slow.png", content_type="image/png",
                                    workspace_id=sim.workspace_id, sleep=sleep, clock=lambda: now[0])
            assert naps == [1.0] * 120
            assert sim.stats()["requests_by_route"]["GET /assets/{asset_id}"] == 121


def test_signed_upload_never_sends_the_key_to_another_origin(sim):
    import http.server
    import threading

    seen: list[dict[str, str]] = []

    class Storage(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(dict(self.headers))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Storage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with fnb.FloraClient(api_key=sim.api_key, base_url=sim.base_url) as client:
            reserved = client.reserve_asset_upload(workspace_id=sim.workspace_id, content_type="image/png",
                                                   file_name="a.png")
            assert reserved.status == "pending_upload" and reserved.extra["upload"]["file_field"] == "file"
            elsewhere = fnb.Asset(reserved.asset_id, extra={"upload": {
                **reserved.extra["upload"], "url": f"http://127.0.0.1:{server.server_address[1]}/bucket"}})
            client.send_asset_bytes(elsewhere, png_bytes(), file_name="a.png", content_type="image/png")
    finally:
        server.shutdown()
        server.server_close()
    assert len(seen) == 1 and not any(k.lower() == "authorization" for k in seen[0])
    assert sim.api_key not in repr(seen)


def test_simulator_signed_upload_rules(sim):
    import requests

    with fnb.FloraClient(api_key=sim.api_key, base_url=sim.base_url) as client:
        with pytest.raises(fnb.ValidationError) as info:
            client.reserve_asset_upload(workspace_id=sim.workspace_id, content_type="text/plain", file_name="a.txt")
        assert info.value.fields[0]["field"] == "content_type"
        reserved = client.reserve_asset_upload(workspace_id=sim.workspace_id, content_type="image/png",
                                               file_name="a.png")
        # Completing before any bytes arrived is refused; the asset cannot be used as an input yet.
        with pytest.raises(fnb.ValidationError, match="Nothing was uploaded"):
            client.complete_asset(reserved.asset_id)
        with pytest.raises(fnb.ValidationError, match="not ready"):
            client.start_technique_run("tech_b2relight", sim.workspace_id, {"product_image": reserved.url})
        target = reserved.extra["upload"]
        wrong = requests.post(target["url"], data={"key": reserved.asset_id, "token": "forged"},
                              files={"file": ("a.png", png_bytes(), "image/png")}, timeout=30)
        assert wrong.status_code == 403
        too_big = requests.post(target["url"], data=target["form_fields"],
                                files={"file": ("a.png", bytes(50 * MiB + 1), "image/png")}, timeout=60)
        assert too_big.status_code == 413 and "50 MB" in too_big.json()["error"]["message"]
        client.send_asset_bytes(reserved, png_bytes(), file_name="a.png", content_type="image/png")
        client.complete_asset(reserved.asset_id)
        ready = client.wait_for_asset(reserved.asset_id, interval=0.01, timeout=30)
        assert ready.status == "ready" and ready.url == reserved.url
        run = client.start_technique_run("tech_b2relight", sim.workspace_id, {"product_image": ready.url})
        assert run.run_id.startswith("run_")
        assert sim.stats()["media_requests_with_auth"] == 0


def test_uploads_survive_server_errors_without_duplicates(tmp_path):
    from flora_nb.sim import Faults

    with Flora.simulated(speed=100.0, seed=8, ledger_path=tmp_path / "l.sqlite",
                         faults=Faults(error_rate=0.2)) as fl:
        small = [write_png(tmp_path, f"s{i}.png", seed=i) for i in range(6)]
        large = png_bytes(filler=5 * MiB, seed=99)
        assets = [fl.upload(p) for p in small] + [fl.upload(large)]
        assert all(a.status == "ready" for a in assets) and len({a.asset_id for a in assets}) == 7
        log = fl.simulator.requests()
        created = [r for r in log if r["route"] == "POST /assets" and r["status"] == 201]
        assert len(created) == 7  # retried with the same key after a 500: one asset per file
        assert any(r["outcome"] == "injected_error" for r in log)
        for path, asset in zip(small, assets):
            assert fl.client.fetch_media(asset.url) == path.read_bytes()


@pytest.mark.parametrize("size", [1000, 5 * MiB], ids=["direct", "signed"])
def test_a_duplicate_key_answer_creates_the_asset_anew(sim, monkeypatch, size):
    import flora_nb._client as client_module

    with fnb.FloraClient(api_key=sim.api_key, base_url=sim.base_url) as client:
        # An earlier attempt with this key was created, but its answer never came back.
        client.create_asset(data=png_bytes(), file_name="lost.png", content_type="image/png",
                            workspace_id=sim.workspace_id, idempotency_key="flora_nb-lost")
        keys = iter(["flora_nb-lost"])
        fresh = client_module.new_idempotency_key
        monkeypatch.setattr(client_module, "new_idempotency_key", lambda: next(keys, None) or fresh())
        data = png_bytes(filler=size, seed=4)
        asset = client.upload_asset(data, file_name="a.png", content_type="image/png",
                                    workspace_id=sim.workspace_id, poll_interval=0.01)
        assert asset.status == "ready" and client.fetch_media(asset.url) == data
    posts = [(r["idempotency_key"], r["status"]) for r in sim.requests() if r["route"] == "POST /assets"]
    assert posts[1] == ("flora_nb-lost", 409) and posts[2][1] == 201 and len(posts) == 3

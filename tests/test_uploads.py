"""Local files as inputs: fl.upload, paths in run/sweep/magic, refusals before any request, the cache."""

from __future__ import annotations

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
    assert sorted(r["product_image"] for r in sent[:6]) == sorted([urls["a.png"]] * 3 + [urls["b.png"]] * 3)
    assert [r["product_image"] for r in sent[6:8]] == [urls["c.png"], urls["a.png"]]
    assert [r["product_image"] for r in sent[8:10]] == [urls["c.png"], urls["a.png"]]
    assert [r["start_frame"] for r in sent[10:12]] == [urls["c.png"]] * 2
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
        result.result.wait(timeout=60)
        sent = server_inputs(fl)
        assert len(sent) == 3 and sent[1]["product_image"] == sent[0]["product_image"]
        assert sent[2]["product_image"] == fl.upload(other).url and asset_posts(fl) == 2
    finally:
        if magics.session is not None:
            magics.session.close()

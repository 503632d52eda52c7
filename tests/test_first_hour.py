"""What a new user sees in the first hour (issue 21, items 4 and 5): sweeps whose repeats are distinct
samples, comparisons laid out in the sweep's order, and simulated outputs that say they are placeholders.
Everything runs on the built-in simulator over loopback and is checked against its own records."""

from __future__ import annotations

import struct
import zlib

import pytest

from flora_nb import Flora

ESTIMATE = 24.0  # storyboard-frames' catalog duration (s); its runs stray up to 25% from it


@pytest.fixture
def fl(tmp_path):
    with Flora.simulated(speed=200.0, seed=2, persist=False, ledger_path=tmp_path / "ledger.sqlite") as session:
        yield session


def test_repeats_of_a_sweep_are_distinct_samples_on_the_server(fl):
    grid = {"script": ["a heron lands"], "style": ["noir", "watercolour"]}
    sweep = fl.sweep("storyboard-frames", grid=grid, repeat=3, max_concurrency=1).wait(60)  # one order: the same samples each time
    assert sweep.counts == {"completed": 6}
    took: dict[str, list[int]] = {}
    for record in fl.simulator.run_records():
        took.setdefault(record["inputs"]["style"], []).append(record["completed_at"] - record["started_at"])
    speed = fl.simulator.speed
    for style, times in took.items():
        assert len(times) == 3 and len(set(times)) == 3, (style, times)  # three repeats, three run times
        assert all(ESTIMATE * 0.75 * 1000 / speed - 2 <= t <= ESTIMATE * 1.25 * 1000 / speed + 2 for t in times)
    frame = sweep.to_dataframe()
    assert frame.groupby("variation")["run_seconds"].nunique().tolist() == [3, 3]  # the table shows it too


def test_compare_lays_variations_out_in_the_sweep_order(fl):
    grid = {"script": ["zebra at noon", "a heron lands", "mid-air"], "style": ["watercolour", "noir", "pencil"]}
    sweep = fl.sweep("storyboard-frames", grid=grid, max_concurrency=9).wait(60)
    table = sweep.compare(values="status")
    assert table.index.tolist() == grid["script"] and table.columns.tolist() == grid["style"]
    swapped = sweep.compare(values="run_seconds", index="style", columns="script")
    assert swapped.index.tolist() == grid["style"] and swapped.columns.tolist() == grid["script"]
    assert sweep.compare(values="charged_cost", index="variation").index.tolist() == list(range(9))


def test_compare_orders_a_two_level_index_as_the_sweep_does(fl):
    grid = {"prompt": ["sea", "city"], "style": ["punk", "jazz"]}
    sweep = fl.sweep("jingle-writer", grid=grid, max_concurrency=4).wait(60)
    rows = sweep.compare(values="status", index=["style", "prompt"]).index.tolist()
    assert rows == [("punk", "sea"), ("jazz", "sea"), ("punk", "city"), ("jazz", "city")]


def _banner_rows(png: bytes, height: int = 20) -> list[bytes]:
    """The bottom ``height`` rows of a 256x256 RGB PNG (filter bytes dropped)."""
    pos, idat = 8, b""
    while pos < len(png):
        length, tag = struct.unpack(">I4s", png[pos:pos + 8])
        idat += png[pos + 8:pos + 8 + length] if tag == b"IDAT" else b""
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + 256 * 3
    assert all(raw[i * stride] == 0 for i in range(256))  # unfiltered rows, as the simulator writes them
    return [raw[i * stride + 1:(i + 1) * stride] for i in range(256 - height, 256)]


def test_simulated_outputs_say_they_are_placeholders(fl):
    board = fl.run("storyboard-frames", {"script": "a heron lands"}).wait(60)
    jingle = fl.run("jingle-writer", {"prompt": "fresh bread"}).wait(60)
    book = fl.run("brand-book", {"brand_name": "Oakline"}).wait(60)
    assert {board.status, jingle.status, book.status} == {"completed"}
    media = {out.output_id: fl.client.fetch_media(out.url) for run in (board, jingle, book)
             for out in run.outputs if out.type != "text"}
    for name in ("frame_1", "frame_2", "moodboard"):  # a white caption on a dark strip along the foot
        pixels = {bytes(row[i:i + 3]) for row in _banner_rows(media[name]) for i in range(0, len(row), 3)}
        assert pixels == {b"\xff\xff\xff", b"\x1e\x1e\x1e"}, name
    assert b"Simulated placeholder: made by the flora_nb simulator, not by FLORA." in media["brand_book"]
    assert b"ICMT" in media["audio"] and b"Simulated placeholder" in media["audio"]
    lyrics = next(out.text for out in jingle.outputs if out.type == "text")
    assert lyrics.startswith("[simulated placeholder]\n")

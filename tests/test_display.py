"""Live panels, their throttle, the gallery and ratings: in fake time, against the simulator."""

from __future__ import annotations

import heapq
import html
import itertools
import math
import random
import re
import threading

import ipywidgets as w
import pytest

from flora_nb import Flora
from flora_nb._display import MAX_UPDATES_PER_SECOND, STYLE, RatingWidget, RunPanel, SweepPanel, Throttle, text_widget
from flora_nb._run import _listener_thread
from flora_nb.sim import Faults
from tests.waiting import TIMEOUT, until

POSTER = "poster-studio"


class FakeTime:
    """A clock and a scheduler that move only when ``advance`` is called (from any thread)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list = []
        self._seq = itertools.count()
        self._lock = threading.RLock()
        self._read = threading.local()

    def __call__(self) -> float:
        self._read.value = self.now
        return self.now

    def read_here(self) -> float:
        """The time this thread last read: when a draw on it was decided, even if other threads moved
        the clock on while it drew (a draw takes no fake time)."""
        return getattr(self._read, "value", self.now)

    def schedule(self, delay: float, fn) -> None:
        with self._lock:
            heapq.heappush(self._heap, (self.now + delay, next(self._seq), fn))

    def advance(self, seconds: float) -> None:
        with self._lock:
            end = self.now + seconds
            while self._heap and self._heap[0][0] <= end:
                due, _, fn = heapq.heappop(self._heap)
                self.now = max(self.now, due)
                fn()
            self.now = end


def _max_per_second(times: list[float]) -> int:
    """The most events in any one-second window (float noise aside)."""
    return max((sum(1 for u in times if t - 1.0 + 1e-9 < u <= t) for t in times), default=0)


@pytest.fixture
def fl(tmp_path):
    with Flora.simulated(speed=100.0, seed=4, ledger_path=tmp_path / "l.sqlite") as session:
        yield session


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


# ---------------------------------------------------------------- the throttle


def test_throttle_draws_the_last_change_and_at_most_ten_a_second():
    fake = FakeTime()
    state = {"value": 0}
    drawn: list[tuple[float, int]] = []
    throttle = Throttle(lambda: drawn.append((fake.now, state["value"])), clock=fake, schedule=fake.schedule)
    rng = random.Random(7)
    for value in range(1, 5001):  # bursts and lulls over about 6 fake seconds
        fake.advance(rng.choice([0.0, 0.0, 0.0005, 0.002, 0.05]))
        state["value"] = value
        throttle()
    fake.advance(1.0)
    times = [t for t, _ in drawn]
    assert _max_per_second(times) <= MAX_UPDATES_PER_SECOND
    assert all(b - a >= 0.1 - 1e-9 for a, b in itertools.pairwise(times))
    assert drawn[-1][1] == 5000  # the last change is drawn
    assert len(drawn) >= 50  # and it keeps drawing while changes flow, not only at the end


def test_a_change_inside_the_window_is_drawn_when_it_closes():
    fake = FakeTime()
    state = {"value": "a"}
    drawn: list[str] = []
    throttle = Throttle(lambda: drawn.append(state["value"]), clock=fake, schedule=fake.schedule)
    throttle()
    assert drawn == ["a"]  # leading edge: at once
    fake.advance(0.03)
    state["value"] = "b"
    throttle()
    assert drawn == ["a"]
    fake.advance(0.069)
    assert drawn == ["a"]
    fake.advance(0.002)  # the window closes: the change is drawn without another event
    assert drawn == ["a", "b"]
    fake.advance(5.0)
    assert drawn == ["a", "b"]  # nothing new, nothing drawn


def test_a_displayed_300_run_sweep_sends_at_most_ten_messages_a_second(fl):
    fake = FakeTime()
    sweep = fl.sweep(POSTER, grid={"prompt": [f"p{i}" for i in range(300)]}, max_concurrency=60, confirm=True)
    panel = SweepPanel(sweep, clock=fake, schedule=fake.schedule)
    sent: list[tuple[float, str]] = []
    send = panel.live.comm.send

    def counting_send(*args, **kwargs):  # runs in the drawing thread, right after the throttle read the clock
        sent.append((fake.read_here(), kwargs["data"]["state"].get("value", "")))
        return send(*args, **kwargs)

    panel.live.comm.send = counting_send
    changes = []
    for run in sweep.runs:  # every change any run goes through moves fake time on by 5 ms
        run.on_change(lambda r: (changes.append(r.status), fake.advance(0.005)))
    sweep.wait(120)
    told = threading.Event()  # changes seen in the background reach listeners on the listener thread, in order:
    _listener_thread(fl.engine).put(told.set)  # once this is told, every change before it was too
    assert told.wait(TIMEOUT)
    fake.advance(1.0)
    assert len(changes) >= 600  # starting, pending, completed ... for 300 runs
    assert _max_per_second([t for t, _ in sent]) <= MAX_UPDATES_PER_SECOND
    assert len(sent) < len(changes) / 5
    final = sent[-1][1]
    assert final == panel.live.value and "300 / 300 done" in final and "$12.00 spent" in final
    for run in sweep.runs:  # the final state of every run is drawn
        assert f"data-run='{run.local_id}' data-status='completed'" in final
    assert fl.simulator.stats()["runs_created"] == 300


# ---------------------------------------------------------------- the run panel


def _bar_value(html: str) -> int:
    return int(re.search(r"aria-valuenow='(\d+)'", html).group(1))


def test_run_panel_one_bar_and_words_that_agree(tmp_path):
    with Flora.simulated(speed=1.0, ledger_path=tmp_path / "l.sqlite") as slow:  # 12 s: stays in progress
        run = slow.run(POSTER, {"prompt": "fox"})
        began = run.snapshot.created_at or run.snapshot.intent_at
        panel = RunPanel(run, wall=lambda: began + 6.0)
        live = panel.live.value
        assert live.count("role='progressbar'") == 1 and "<progress" not in live
        assert "pending" not in re.sub("<[^>]+>", "", live) and _bar_value(live) == 50 and "in progress · ~50%" in live
        assert "6.0 s" in live and "est. $0.04" in live


def test_run_panel_shows_the_output_and_stars_when_done(fl):
    run = fl.run(POSTER, {"prompt": "owl"}).wait(30)
    panel = RunPanel(run)
    panel.fetched.result(30)
    live = panel.live.value
    assert "completed" in live and "$0.04" in live and _bar_value(live) == 100
    assert "var(--jp-success-color1" in live
    [image] = panel.outputs.children
    assert isinstance(image, w.Image) and bytes(image.value).startswith(b"\x89PNG")
    [stars] = panel.extra.children
    assert isinstance(stars, RatingWidget)
    stars.stars[4].click()
    assert fl.runs().set_index("run_id").loc[run.id, "rating"] == 5


def test_failed_run_shows_its_error_in_the_theme_colour(tmp_path):
    with Flora.simulated(speed=100.0, faults=Faults(run_failure_rate=1.0), ledger_path=tmp_path / "l.sqlite") as fl:
        run = fl.run(POSTER, {"prompt": "<b>fox</b>"}).wait(30)
        panel = RunPanel(run)
        live = panel.live.value
        assert run.status == "failed" and "class='flora-error'" in live and "$0 (refunded)" in live
        assert (run.error_message or "")[:20] in live.replace("&#x27;", "'")
        assert "var(--jp-error-color1" in live and "#b00" not in live
        assert ".flora-error { color: var(--jp-error-color1" in STYLE
        assert panel.outputs.children == () and panel.fetched is None


def test_text_more_toggle_shows_everything_on_demand():
    long = "Sentence number one is here. " * 30
    box = text_widget(long)
    body, toggle = box.children
    assert body.value.endswith("&hellip;</div>") and len(body.value) < len(long)
    excerpt = html.unescape(re.sub("<[^>]+>", "", body.value)).rstrip("\u2026")
    assert long.startswith(excerpt) and long[len(excerpt)] == " "  # cut between words, not mid-word
    toggle.click()
    assert long.strip() in body.value and toggle.description == "less"
    toggle.click()
    assert toggle.description == "more" and "&hellip;" in body.value
    assert isinstance(text_widget("short"), w.HTML)


# ---------------------------------------------------------------- gallery and ratings


def test_gallery_layout_skipped_runs_and_stars_reach_the_ledger(fl):
    sweep = fl.sweep("jingle-writer", grid={"prompt": ["sea", "a much longer prompt"], "style": ["jazz", "punk"]})
    sweep.wait(60)
    gallery = sweep.gallery()
    [grid] = [x for x in _walk(gallery) if isinstance(x, w.GridBox)]
    assert grid.layout.grid_template_columns.startswith("fit-content(")
    ratings = [x for x in _walk(gallery) if isinstance(x, RatingWidget)]
    assert len(ratings) == 4
    target = ratings[1]
    target.stars[3].click()  # four stars
    assert target.run.rating == 4 and target.stars[3].description == "\u2605" and target.stars[4].description == "\u2606"
    target.note.value = "the best one"
    frame = fl.runs(sweep_id=sweep.sweep_id).set_index("run_id")
    assert frame.loc[target.run.id, "rating"] == 4 and frame.loc[target.run.id, "note"] == "the best one"
    pivot = sweep.compare(values="rating")
    assert (pivot == 4).sum().sum() == 1
    target.stars[3].click()  # the same star again clears the rating
    assert math.isnan(fl.runs(sweep_id=sweep.sweep_id).set_index("run_id").loc[target.run.id, "rating"])


def test_a_note_before_any_star_says_what_to_do(fl):
    run = fl.run(POSTER, {"prompt": "fox"}).wait(30)
    widget = RatingWidget(run)
    widget.note.value = "nice"
    assert run.rating is None and "click a star" in widget.message.value
    widget.stars[1].click()
    assert run.rating == 2 and run.note == "nice"


def test_skipped_runs_say_not_started_and_cost_nothing(fl):
    sweep = fl.sweep(POSTER, grid={"prompt": [f"p{i}" for i in range(6)]}, max_concurrency=1)
    sweep.stop()
    sweep.wait(60)
    skipped = [r for r in sweep.runs if r.status == "skipped"]
    assert skipped
    captions = [x.value for x in _walk(sweep.gallery()) if isinstance(x, w.HTML) and "flora-muted" in x.value]
    assert sum("not started · $0" in c for c in captions) == len(skipped)
    assert not any("cost unknown" in c for c in captions)
    panel = SweepPanel(sweep)
    assert f"{len(skipped)} not started" in panel.live.value


def test_a_live_sweep_says_done_spent_and_eta(tmp_path):
    with Flora.simulated(speed=1.0, ledger_path=tmp_path / "l.sqlite") as slow:  # 12 s runs: still going
        sweep = slow.sweep(POSTER, grid={"prompt": ["a", "b", "c"]}, max_concurrency=1)
        started = threading.Event()
        sweep.runs[0].on_change(lambda r: r.estimated_seconds and started.set())
        assert sweep.runs[0].estimated_seconds or started.wait(30)  # the ETA needs FLORA's estimate
        panel = SweepPanel(sweep)
        text = re.sub("<[^>]+>", "", panel.live.value)
        assert re.search(r"Poster Studio · 0 / 3 done · \$0 spent · ETA \d+ (s|min)", text), text
        assert _bar_value(panel.live.value) == 0
        sweep.stop()
        until(lambda: not sweep.launching, what="the launcher to end")  # the launcher marks the rest skipped, then ends


def test_a_sweep_panel_stops_ticking_when_its_session_closes(tmp_path):
    from flora_nb._display import _TICKER

    with Flora.simulated(speed=1.0, ledger_path=tmp_path / "l.sqlite") as slow:  # 12 s runs: still going
        sweep = slow.sweep(POSTER, grid={"prompt": ["a"]})
        panel = SweepPanel(sweep)
        with _TICKER._lock:
            alive = next(a for a, tick in _TICKER._items if tick is panel.throttle)
        assert alive()
    assert not sweep.done and not alive()  # a closed session's ledger cannot be read: no more ticks


def test_a_gallery_caption_learns_a_late_charge(tmp_path):
    with Flora.simulated(speed=100.0, cost_lag=1.0, ledger_path=tmp_path / "l.sqlite") as fl:
        sweep = fl.sweep(POSTER, grid={"prompt": ["a", "b"]})
        gallery = sweep.gallery()
        sweep.wait(60)
        late = [r for r in sweep.runs if r.charged_cost is None]  # done, charge not known yet
        charged = threading.Event()
        for run in sweep.runs:
            run.on_change(lambda r: all(x.charged_cost is not None for x in sweep.runs) and charged.set())
        assert all(r.charged_cost is not None for r in sweep.runs) or charged.wait(30)
        assert late, "the simulator's cost lag should leave a charge unknown at completion"

        def captions():
            return [x.value for x in _walk(gallery) if isinstance(x, w.HTML) and "prompt=" in x.value]

        # Cells are filled off the poller thread: wait (with a deadline) until both show the charge.
        until(lambda: len(captions()) == 2 and all("$0.04" in c for c in captions()),
              what=lambda: f"both captions to show the charge: {captions()}")


def test_a_huge_sweep_keeps_each_redraw_small(fl):
    sweep = fl.sweep(POSTER, grid={"prompt": [f"p{i}" for i in range(2100)]}, max_concurrency=1, confirm=True)
    sweep.stop()
    until(lambda: not sweep.launching, what="the launcher to end")
    panel = SweepPanel(sweep)
    assert "data-run=" not in panel.live.value and len(panel.live.value) < 5_000
    assert "not started" in panel.live.value and "/ 2100 done" in panel.live.value


def test_panels_of_a_closed_session_stay_quiet(tmp_path, caplog):
    fl = Flora.simulated(speed=1.0, ledger_path=tmp_path / "l.sqlite")  # 12 s runs: still going at close
    run = fl.run(POSTER, {"prompt": "fox"})
    sweep = fl.sweep(POSTER, grid={"prompt": ["a", "b"]}, max_concurrency=1)
    panels = [RunPanel(run), SweepPanel(sweep)]
    sweep.stop()
    until(lambda: not sweep.launching, what="the launcher to end")
    fl.close()
    for panel in panels:  # the last state before the close (the run moved on while it was open)
        panel.draw()
    before = [p.live.value for p in panels]
    for panel in panels:  # what the ticker and a late timer do after the close
        panel.draw()
    assert [p.live.value for p in panels][0] == before[0]
    # the displays' own log (other tests' leftover threads may log elsewhere meanwhile)
    assert not [r for r in caplog.records if r.exc_info and r.name == "flora_nb.display"]


def test_settle_leaves_each_finished_panel_with_outputs_no_download_replaces_later(tmp_path):
    from flora_nb import _display

    with Flora.simulated(speed=200.0, ledger_path=tmp_path / "l.sqlite") as fl:
        run = fl.run(POSTER, {"prompt": "fox"}).wait(30)
        panel = RunPanel(run)  # done at birth: its download starts on the download thread
        _display.settle()
        shown = panel.outputs.children
        assert not _display._FETCHING and panel.fetched is not None and panel.fetched.done()
        assert [type(c).__name__ for c in shown] == ["Image"]
        assert panel.outputs.children is shown  # nothing drew over what settle drew

"""The poller's cadence, on a fake monotonic clock and a fake FLORA: what it costs, how late it notices.

No thread, no socket, no sleep: the test steps the clock to the poller's next due time and runs one
cycle, as the poller's own loop does. The fake FLORA answers from each run's true start and duration,
which the poller does not know (its estimate can be off, as FLORA's is).
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Iterator

import pytest

from flora_nb._models import RunState
from flora_nb._poller import PAGE_SIZE, Poller

EPOCH = 1_800_000_000.0  # wall-clock seconds at fake monotonic 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Truth:
    """What the server knows of one run."""

    run_id: str
    began: float
    duration: float
    fails_at: float | None = None  # share of the duration at which it fails

    @property
    def ends(self) -> float:
        return self.began + self.duration * (self.fails_at if self.fails_at is not None else 1.0)

    def state(self, now: float) -> RunState:
        created = dt.datetime.fromtimestamp(EPOCH + self.began, dt.timezone.utc)
        if now >= self.ends:
            status = "failed" if self.fails_at is not None else "completed"
            return RunState(self.run_id, status, 100.0, created, charged_cost=0.0 if status == "failed" else 0.04)
        progress = math.floor(1000 * (now - self.began) / self.duration) / 10.0
        return RunState(self.run_id, "running", progress, created)


@dataclass
class FakeRun:
    """The fields of ``Run`` the poller reads."""

    id: str
    estimated_seconds: float | None
    began: float
    workspace_id: str = "ws"
    status: str = "running"
    progress: float = 0.0
    charged_cost: float | None = None
    poll_url: str | None = None
    seen_done_at: float | None = None
    snapshot: SimpleNamespace = field(default_factory=SimpleNamespace)

    @property
    def done(self) -> bool:
        return self.status in ("completed", "failed")


class FakeFlora:
    """Answers the two reads the poller makes, counting requests as FLORA would."""

    def __init__(self, clock: Clock, truths: list[Truth]):
        self.clock, self.truths = clock, {t.run_id: t for t in truths}
        self.requests = 0
        self.max_pages = 100
        self.throttle = SimpleNamespace(paused_for=0.0)

    def technique_runs(self, page_size: int, max_pages: int, **_: object) -> Iterator[RunState]:
        started = [t for t in self.truths.values() if t.began <= self.clock.now]  # runs not started yet do not exist
        newest_first = sorted(started, key=lambda t: t.began, reverse=True)
        for index, truth in enumerate(newest_first[: page_size * max_pages]):
            if index % page_size == 0:
                self.requests += 1
            yield truth.state(self.clock.now)
        if not newest_first:
            self.requests += 1

    def get_run(self, run_id: str, poll_url: str | None) -> RunState:
        self.requests += 1
        return self.truths[run_id].state(self.clock.now)


class Sink:
    def __init__(self, clock: Clock):
        self.clock = clock

    def record(self, pairs: list[tuple[FakeRun, RunState]]) -> None:
        for run, state in pairs:
            run.status, run.progress, run.charged_cost = state.status, state.progress, state.charged_cost
            if run.done and run.seen_done_at is None:
                run.seen_done_at = self.clock.now


def world(truths: list[Truth], estimates: list[float | None]) -> tuple[Clock, FakeFlora, Poller, list[FakeRun]]:
    clock = Clock()
    flora = FakeFlora(clock, truths)
    poller = Poller(flora, Sink(clock), interval=(2.0, 5.0), clock=clock)  # type: ignore[arg-type]
    runs = []
    for truth, estimate in zip(truths, estimates):
        run = FakeRun(truth.run_id, estimate, truth.began)
        run.snapshot = SimpleNamespace(created_at=EPOCH + truth.began, intent_at=EPOCH + truth.began)
        runs.append(run)
    return clock, flora, poller, runs


def drive(clock: Clock, poller: Poller, runs: list[FakeRun], until: float = 1e6) -> None:
    """Track each run when it starts; step the clock to every next due time, one cycle each."""
    pending = sorted(runs, key=lambda r: r.began)
    while (pending or poller.tracked) and clock.now < until:
        dues = [e.due for e in poller._entries.values()]
        nxt = min(dues + [pending[0].began] if pending else dues)
        clock.now = max(clock.now, nxt)
        while pending and pending[0].began <= clock.now:
            poller.track(pending.pop(0))
        if any(e.due <= clock.now for e in poller._entries.values()):
            poller._cycle()


def lags(runs: list[FakeRun], truths: list[Truth]) -> list[float]:
    ends = {t.run_id: t.ends for t in truths}
    return [r.seen_done_at - ends[r.id] for r in runs]  # type: ignore[operator]


def test_runs_started_together_cost_few_requests_and_are_seen_within_a_second():
    truths = [Truth(f"r{i}", began=i * 0.01, duration=20.0) for i in range(200)]  # 200 starts in 2 s
    clock, flora, poller, runs = world(truths, [20.0] * 200)
    drive(clock, poller, runs)
    assert all(r.done for r in runs)
    assert flora.requests / 200 <= 0.2  # + 1 start each: at most 1.2 requests per run
    assert max(lags(runs, truths)) <= 1.0 + 1e-9


def test_runs_that_end_late_are_seen_within_a_second_of_their_end():
    rng = random.Random(3)
    truths = [Truth(f"r{i}", began=i * 0.01, duration=20.0 * rng.uniform(0.7, 1.3)) for i in range(200)]
    clock, flora, poller, runs = world(truths, [20.0] * 200)
    drive(clock, poller, runs)
    late = [lag for lag, t in zip(lags(runs, truths), truths) if t.duration > 20.0]
    assert late and max(late) <= 1.0 + 1e-9
    assert flora.requests / 200 <= 0.5


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_mixed_durations_with_wrong_estimates_cost_little_and_late_runs_are_seen_within_a_second(seed):
    # Harsher than a sweep (whose runs start as slots free up): 200 runs started together, four
    # techniques of 10-90 s, each run taking 0.7-1.3 x its estimate, so completions are spread over
    # 110 s and the history is two pages deep for every batch.
    rng = random.Random(seed)
    estimates = [rng.choice([10.0, 20.0, 40.0, 90.0]) for _ in range(200)]
    truths = [Truth(f"r{i}", began=i * 0.01, duration=e * rng.uniform(0.7, 1.3)) for i, e in enumerate(estimates)]
    clock, flora, poller, runs = world(truths, estimates)
    drive(clock, poller, runs)
    assert all(r.done for r in runs)
    assert flora.requests / 200 <= 0.7
    late = [lag for lag, t, e in zip(lags(runs, truths), truths, estimates) if t.duration > e]
    assert max(late) <= 1.1  # past the estimate: one batch a second (plus the 0.1 % progress rounding)
    found = sorted(lags(runs, truths))
    assert found[100] <= 0.6 and found[190] <= 1.1 and found[-1] <= 1.5  # early ones too: two looks measured their pace


def test_a_long_run_that_fails_early_is_noticed_within_a_minute():
    truths = [Truth("long", began=0.0, duration=3600.0, fails_at=30.0 / 3600.0)]
    clock, flora, poller, runs = world(truths, [3600.0])
    drive(clock, poller, runs)
    assert runs[0].status == "failed"
    assert 0.0 <= lags(runs, truths)[0] <= 60.0
    assert flora.requests <= 3


@pytest.mark.parametrize("share", [0.05, 0.5, 0.95])
def test_long_runs_failing_at_any_point_are_noticed_within_a_small_share_of_the_estimate(share):
    truths = [Truth(f"r{i}", began=i * 1.0, duration=3600.0, fails_at=share) for i in range(20)]
    clock, flora, poller, runs = world(truths, [3600.0] * 20)
    drive(clock, poller, runs)
    assert max(lags(runs, truths)) <= 60.0
    # watched together: about one batch a minute for all 20, not one request per run per minute
    assert flora.requests <= 3600.0 * share / 54.0 + 10


def test_a_run_with_no_estimate_is_looked_at_every_interval():
    truths = [Truth("r", began=0.0, duration=9.0)]
    clock, _flora, poller, runs = world(truths, [None])
    drive(clock, poller, runs)
    assert runs[0].done and lags(runs, truths)[0] <= 2.0 + 1e-9


def test_no_progress_reported_falls_back_to_the_estimate_then_one_look_a_second():
    truth = Truth("r", began=0.0, duration=30.0)
    truth.state = lambda now, t=truth: (  # type: ignore[method-assign]
        RunState("r", "completed", 100.0, charged_cost=0.04) if now >= 30.0 else RunState("r", "running", 0.0))
    clock, flora, poller, runs = world([truth], [20.0])
    drive(clock, poller, runs)
    assert runs[0].done and lags(runs, [truth])[0] <= 1.0 + 1e-9
    assert flora.requests <= 2 + 10 + 1  # at 20 s, then every second until 30 s


def test_a_batch_covers_every_due_run_of_a_workspace_in_one_request_per_page():
    truths = [Truth(f"r{i}", began=0.0, duration=5.0) for i in range(2 * PAGE_SIZE + 1)]
    clock, flora, poller, runs = world(truths, [5.0] * len(truths))
    drive(clock, poller, runs)
    assert all(r.done for r in runs)
    assert flora.requests == 6  # a look halfway and one at 5 s, three pages each: not one request per run


def test_under_a_known_rate_limit_the_beat_slows_so_polls_leave_room_for_starts():
    # Starts as a 2 requests/s limit lets them out, runs of 14-26 s: an end every half second or so.
    truths = [Truth(f"r{i}", began=i * 0.5, duration=20.0 * (0.7 + 0.6 * (i % 7) / 6)) for i in range(300)]
    clock, flora, poller, runs = world(truths, [20.0] * 300)
    flora.throttle.effective_rate = 2.0  # requests/s the client may send (set or learnt)
    drive(clock, poller, runs)
    assert all(r.done for r in runs)
    span = max(t.ends for t in truths) - min(t.began for t in truths)
    assert flora.requests / span <= 2.0 / 4 + 0.05  # polls used about a quarter of the rate at most
    assert max(lags(runs, truths)) <= 4 / 2.0 + 0.1  # and every end was still seen within about one beat

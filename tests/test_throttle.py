"""The token bucket and the 429 pause, on a fake clock (behaviour, not wall-clock speed)."""

from __future__ import annotations

import pytest

from flora_nb._throttle import Throttle


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_no_limit_never_waits():
    clock = FakeClock()
    t = Throttle(None, clock=clock, sleep=clock.sleep)
    assert [t.acquire() for _ in range(100)] == [0.0] * 100


def test_bucket_spaces_requests():
    clock = FakeClock()
    t = Throttle(4.0, burst=2, clock=clock, sleep=clock.sleep)
    waits = [t.acquire() for _ in range(6)]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2:] == pytest.approx([0.25] * 4)
    assert clock.now == pytest.approx(1.0)


def test_pause_holds_every_request():
    clock = FakeClock()
    t = Throttle(None, clock=clock, sleep=clock.sleep)
    t.pause(3.0)
    assert t.paused_for == pytest.approx(3.0)
    assert t.acquire() == pytest.approx(3.0)
    assert t.acquire() == 0.0


def test_rate_must_be_positive():
    with pytest.raises(ValueError):
        Throttle(0)

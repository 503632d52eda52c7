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


class ServerBucket:
    """The simulator's per-workspace token bucket (rate tokens/s, burst max(1, rate)), on the fake clock."""

    def __init__(self, clock: FakeClock, rate: float):
        self.clock, self.rate = clock, rate
        self.tokens, self.stamp = max(1.0, rate), clock.now
        self.refused = 0

    def take(self) -> float:
        """0.0 when the request is let through, else the seconds the server asks us to wait."""
        now = self.clock.now
        self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        self.refused += 1
        return (1.0 - self.tokens) / self.rate


def send(throttle: Throttle, server: ServerBucket, clock: FakeClock, n: int, gap: float = 0.001) -> int:
    """n requests as fast as the throttle allows (each takes ``gap``), retried after a 429; returns 429s."""
    for _ in range(n):
        while True:
            throttle.acquire()
            wait = server.take()
            clock.now += gap
            if not wait:
                break
            throttle.limited(wait)
    return server.refused


@pytest.mark.parametrize("server_rate", [2.0, 20.0, 100.0])
def test_the_servers_rate_is_learnt_from_its_429s(server_rate):
    clock = FakeClock()
    throttle = Throttle(None, clock=clock, sleep=clock.sleep)
    server = ServerBucket(clock, server_rate)
    requests = 3000
    refused = send(throttle, server, clock, requests)
    assert refused <= 0.01 * requests  # under 1% of requests answered 429
    assert throttle.learned is not None and 0.6 * server_rate <= throttle.effective_rate <= 1.2 * server_rate
    # and the work was not slowed to a crawl: close to what the server's limit allows
    assert clock.now <= requests / server_rate * 1.5 + 2.0


def test_no_429_means_no_limit_is_learnt():
    clock = FakeClock()
    throttle = Throttle(None, clock=clock, sleep=clock.sleep)
    assert send(throttle, ServerBucket(clock, 1e9), clock, 500) == 0
    assert throttle.learned is None and clock.slept == []


def test_a_learnt_rate_is_raised_after_a_quiet_spell_so_a_lifted_limit_is_found_again():
    clock = FakeClock()
    throttle = Throttle(None, clock=clock, sleep=clock.sleep)
    server = ServerBucket(clock, 10.0)
    send(throttle, server, clock, 300)
    before = throttle.effective_rate
    server.rate = 40.0  # the server lifts its limit
    send(throttle, server, clock, 4000)
    assert throttle.effective_rate > 2 * before
    assert server.refused <= 0.01 * 4300


def test_the_lower_of_the_users_rate_and_the_learnt_one_applies():
    clock = FakeClock()
    throttle = Throttle(5.0, clock=clock, sleep=clock.sleep)
    assert send(throttle, ServerBucket(clock, 100.0), clock, 50) == 0
    throttle.limited(0.1)  # refused at 5/s: the server's limit is lower than the user thought
    assert throttle.rate_limited == 1 and throttle.effective_rate < 5.0
    throttle.learned = 50.0
    assert throttle.effective_rate == 5.0


def test_a_429_with_nothing_sent_lately_only_pauses():
    clock = FakeClock()
    throttle = Throttle(None, clock=clock, sleep=clock.sleep)
    throttle.limited(2.0)
    assert throttle.learned is None and throttle.paused_for == pytest.approx(2.0)


def test_a_client_without_rate_limit_learns_the_simulators_limit_and_is_rarely_refused(monkeypatch):
    import threading

    from flora_nb import FloraClient
    from flora_nb.sim import Faults, FloraSimulator
    from tests.waiting import SimClock

    with FloraSimulator(speed=1000.0, seed=0, faults=Faults(rate_limit=100.0)) as sim, \
            FloraClient(api_key=sim.api_key, base_url=sim.base_url) as client:
        # The server's bucket and the client's throttle on one fake clock, so the 429s counted depend on
        # what the client sends when, not on how fast this machine answers (a busy one made 26 of 10).
        clock = SimClock(sim, monkeypatch)
        client.throttle = Throttle(None, clock=clock, sleep=clock.sleep)  # as the client builds it, on the clock
        run = client.start_technique_run("tech_a1poster", sim.workspace_id, {"prompt": "p"})

        def poll(n: int) -> None:
            with clock.taking_part():  # two threads sleeping at once: their sleeps overlap, as in real time
                for _ in range(n):
                    client.get_run(run.run_id, run.poll_url)

        threads = [threading.Thread(target=poll, args=(200,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = sim.stats()
    assert stats["requests_total"] >= 401
    # the limit bound, and was learnt: a handful of 429s while learning (2-5 seen), not one per extra request
    # (without learning, 159 of 427 requests were refused in one try; bench_engine.py r measures the share)
    assert 0 < stats["rate_limited"] <= 10
    assert client.throttle.learned is not None and client.throttle.effective_rate <= 100.0

"""The binding rule (flora_nb._matching): pure, with made-up clocks; no server, no sleeps."""

from __future__ import annotations

import itertools
import random

from flora_nb._matching import Binding, Candidate, Start, bind

INF = float("inf")
EXACT = (0.0, 0.0)  # server clock == ours


def by_id(bindings: list[Binding]) -> dict[int, Binding]:
    return {b.local_id: b for b in bindings}


def test_nothing_is_bound_while_the_clock_offset_is_unknown():
    starts = [Start(1, 10.0, 11.0)]
    runs = [Candidate("run_a", 10.5)]
    assert bind(starts, runs, None, listed_at=20.0) == []
    assert bind(starts, runs, EXACT, listed_at=20.0) == [Binding(1, "run_a")]


def test_a_start_that_may_still_be_in_flight_blocks_its_group():
    starts = [Start(1, 10.0, 11.0), Start(2, 10.8, INF)]
    runs = [Candidate("run_a", 10.9)]
    assert bind(starts, runs, EXACT, listed_at=20.0) == []
    # a start whose window ends after the listing was asked for blocks too (its run may come later)
    assert bind([Start(1, 10.0, 11.0)], runs, EXACT, listed_at=10.95) == []


def test_separate_windows_bind_exactly_and_a_start_without_run_made_none():
    starts = [Start(1, 0.0, 1.0, '{"a":1}'), Start(2, 2.0, 3.0, '{"a":2}'), Start(3, 4.0, 5.0, '{"a":3}')]
    runs = [Candidate("run_a", 0.5), Candidate("run_c", 4.5)]
    got = by_id(bind(starts, runs, EXACT, listed_at=9.0))
    assert got == {1: Binding(1, "run_a"), 2: Binding(2, None), 3: Binding(3, "run_c")}
    assert all(b.exact for b in got.values())


def test_the_clock_offset_shifts_every_window():
    starts = [Start(1, 0.0, 1.0), Start(2, 2.0, 3.0)]
    runs = [Candidate("run_a", 5.5), Candidate("run_b", 7.5)]  # server clock 5 s ahead
    assert bind(starts, runs, EXACT, listed_at=9.0) == [Binding(1, None), Binding(2, None)]
    got = by_id(bind(starts, runs, (4.9, 5.1), listed_at=9.0))
    assert got[1].run_id == "run_a" and got[2].run_id == "run_b" and got[1].exact and got[2].exact


def test_two_runs_both_starts_could_have_made_are_a_group_not_a_guess():
    starts = [Start(1, 0.0, 10.0, '{"a":1}'), Start(2, 4.0, 6.0, '{"a":2}')]
    runs = [Candidate("run_a", 5.0), Candidate("run_b", 5.5)]  # both fit both windows
    got = by_id(bind(starts, runs, EXACT, listed_at=20.0))
    assert {got[1].run_id, got[2].run_id} == {"run_a", "run_b"}
    assert got[1].group == got[2].group == (1, 2) and not got[1].exact


def test_forced_chain_is_exact():
    starts = [Start(1, 0.0, 10.0, '{"a":1}'), Start(2, 4.0, 6.0, '{"a":2}')]
    runs = [Candidate("run_a", 1.0), Candidate("run_b", 5.5)]  # run_a fits only start 1
    assert by_id(bind(starts, runs, EXACT, listed_at=20.0)) == {1: Binding(1, "run_a"), 2: Binding(2, "run_b")}


def test_overlapping_starts_with_different_inputs_are_a_group_that_says_so():
    starts = [Start(1, 0.0, 1.0, '{"a":1}'), Start(2, 0.0, 1.0, '{"a":2}')]
    runs = [Candidate("run_a", 0.4), Candidate("run_b", 0.6)]
    got = by_id(bind(starts, runs, EXACT, listed_at=2.0))
    assert {got[1].run_id, got[2].run_id} == {"run_a", "run_b"}
    assert got[1].group == got[2].group == (1, 2) and not got[1].same_inputs
    assert bind(starts, runs, EXACT, listed_at=2.0, groups=False) == []  # deferred while better may come


def test_identical_inputs_are_interchangeable_and_bound_at_once():
    starts = [Start(1, 0.0, 1.0, '{"a":1}'), Start(2, 0.0, 1.0, '{"a":1}'), Start(3, 0.0, 1.0, '{"a":1}')]
    runs = [Candidate("run_a", 0.4), Candidate("run_b", 0.6)]  # one of the three never reached FLORA
    got = bind(starts, runs, EXACT, listed_at=2.0, groups=False)
    assert sorted(b.run_id or "" for b in got) == ["", "run_a", "run_b"]
    assert all(b.group == (1, 2, 3) and b.same_inputs for b in got)


def test_more_runs_than_starts_means_a_foreign_run_so_nothing_is_decided():
    starts = [Start(1, 0.0, 1.0)]
    runs = [Candidate("run_a", 0.4), Candidate("run_b", 0.6)]
    assert bind(starts, runs, EXACT, listed_at=2.0) == []
    # a run outside every window is not ours and does not disturb the others
    assert bind(starts, [Candidate("run_a", 0.4), Candidate("run_z", 50.0)], EXACT, listed_at=2.0) == [
        Binding(1, "run_a")]


def _truth_holds(bindings, truth, starts):
    inputs = {s.local_id: s.inputs for s in starts}
    run_inputs = {run: inputs[local] for local, run in truth.items() if run is not None}
    for b in bindings:
        if b.exact:
            assert b.run_id == truth[b.local_id], (b, truth)
        elif b.run_id is not None and b.same_inputs:
            assert run_inputs[b.run_id] == inputs[b.local_id]
    groups: dict[tuple[int, ...], list[Binding]] = {}
    for b in bindings:
        if b.group:
            groups.setdefault(b.group, []).append(b)
    for group, members in groups.items():  # a group holds exactly its own runs, whatever their order
        assert sorted(m.run_id or "" for m in members) == sorted(truth[i] or "" for i in group)


def test_random_worlds_never_bind_wrongly():
    """Thousands of made-up worlds: starts with random windows, some lost before reaching the server,
    runs created inside their windows with a random clock offset known only within bounds."""
    rng = random.Random(7)
    bound = 0
    for _ in range(3000):
        n = rng.randint(1, 7)
        offset = rng.uniform(-5, 5)
        slack = rng.choice([0.0005, 0.01, 0.3, 1.0])
        starts, truth, runs = [], {}, []
        for local_id in range(1, n + 1):
            low = rng.uniform(0, 4)
            high = low + rng.choice([0.001, 0.05, 0.5, 3.0])
            inputs = f'{{"a":{rng.randint(1, 3)}}}'
            starts.append(Start(local_id, low, high, inputs))
            if rng.random() < 0.7:
                run_id = f"run_{local_id}"
                truth[local_id] = run_id
                runs.append(Candidate(run_id, round(rng.uniform(low, high) + offset, 3)))
            else:
                truth[local_id] = None
        rng.shuffle(runs)
        bounds = (offset - rng.uniform(0, slack) - 0.001, offset + rng.uniform(0, slack) + 0.001)
        got = bind(starts, runs, bounds, listed_at=10.0)
        _truth_holds(got, truth, starts)
        bound += sum(1 for b in got if b.run_id is not None)
        if got:  # every run of a decided group is bound: nothing charged goes missing
            decided = {b.local_id for b in got}
            assert {b.run_id for b in got if b.run_id} == {truth[i] for i in decided if truth[i]}
    assert bound > 3000  # the rule decides most worlds, not only the easy ones


def test_windows_each_start_could_not_have_made_are_never_bound():
    starts = [Start(i, float(i), i + 0.5) for i in range(1, 6)]
    runs = [Candidate(f"run_{i}", i + 0.25) for i in range(1, 6)]
    for perm in itertools.permutations(runs, 3):
        got = by_id(bind(starts, list(perm), EXACT, listed_at=10.0))
        for local_id, b in got.items():
            assert b.exact and b.run_id in (None, f"run_{local_id}")

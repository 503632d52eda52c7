"""Which server run belongs to which lost start: the binding rule, as a pure function.

A start whose answer was lost (dropped, timed out, killed, Ctrl-C) made at most one run, and
that run's server ``created_at`` lies in the start's window: ``[first send, last moment the
server could act on it]`` on our clock, shifted by the server-minus-local clock offset, which
is only known within bounds ``(low, high)``. Runs some ledger row already claims are no
candidates. The rule, applied per connected group of (start, run) pairs that fit in time:

- nothing is decided while the offset is unknown, or while a start of the group may still be
  in flight (its window has no end yet) or ends after the listing was taken;
- a group with more runs than starts is left alone (a run we did not start is in it);
- otherwise a run is bound to a start when every assignment that explains all the group's
  runs pairs them (an *exact* binding); a start that no such assignment gives a run made none;
- a start FLORA said it made a run for (it answered a resend "duplicate key") never gets "none":
  while some assignment leaves it without a run, its group waits (and is given up on, never
  declared not received);
- the starts left over can only be told apart as a group: the group's runs are bound to them in
  one consistent assignment, and each binding names its group (its pairing is unknown; when
  all the group's inputs are equal the inputs are right whatever the pairing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = ["Binding", "Candidate", "Start", "bind"]

MAX_GROUP = 64  # starts in one group searched exhaustively; larger groups wait (they split as time passes)


@dataclass(frozen=True)
class Start:
    """An unresolved start: its window on our clock (``high`` is inf while it may be in flight)."""

    local_id: int
    low: float
    high: float
    inputs: str = "{}"  # canonical JSON: equal text, interchangeable starts
    made: bool = False  # FLORA said this start made a run (a duplicate key): it never made none


@dataclass(frozen=True)
class Candidate:
    """A server run no ledger row claims; ``created`` is on the server's clock."""

    run_id: str
    created: float


@dataclass(frozen=True)
class Binding:
    """What a start became: a run, or none (``run_id`` None: the server never made one).

    ``group`` lists the starts it can only be told apart from as a group (empty when exact);
    ``same_inputs`` says whether those starts' inputs are all equal (then the inputs are right).
    """

    local_id: int
    run_id: str | None
    group: tuple[int, ...] = ()
    same_inputs: bool = True

    @property
    def exact(self) -> bool:
        return not self.group


def fits(start: Start, run: Candidate, offset: tuple[float, float]) -> bool:
    """Could ``start`` have created ``run``, given the offset bounds?"""
    return start.low + offset[0] <= run.created <= start.high + offset[1]


def bind(starts: Sequence[Start], runs: Sequence[Candidate], offset: tuple[float, float] | None,
         listed_at: float, groups: bool = True) -> list[Binding]:
    """The bindings the rule allows now (see the module docstring); ``listed_at`` is our clock when
    the listing of ``runs`` was asked for; ``groups=False`` defers group bindings whose inputs differ."""
    if offset is None or not starts:
        return []
    out: list[Binding] = []
    for comp_starts, comp_runs in _components(starts, runs, offset):
        if any(not math.isfinite(s.high) or s.high > listed_at for s in comp_starts):
            continue  # a start of the group may still make (or have just made) a run we did not list
        out.extend(_decide(comp_starts, comp_runs, offset, groups))
    return out


def _components(starts: Sequence[Start], runs: Sequence[Candidate],
                offset: tuple[float, float]) -> list[tuple[list[Start], list[Candidate]]]:
    parent = list(range(len(starts) + len(runs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for si, start in enumerate(starts):
        for ri, run in enumerate(runs):
            if fits(start, run, offset):
                parent[root(si)] = root(len(starts) + ri)
    comps: dict[int, tuple[list[Start], list[Candidate]]] = {}
    for si, start in enumerate(starts):
        comps.setdefault(root(si), ([], []))[0].append(start)
    for ri, run in enumerate(runs):
        key = root(len(starts) + ri)
        if key in comps:  # a run that fits no start is not ours: ignored
            comps[key][1].append(run)
    return list(comps.values())


def _decide(starts: list[Start], runs: list[Candidate], offset: tuple[float, float],
            groups: bool) -> list[Binding]:
    if len(runs) > len(starts) or len(starts) > MAX_GROUP:
        return []
    edges = {s.local_id: [r.run_id for r in runs if fits(s, r, offset)] for s in starts}
    ids, made = {r.run_id for r in runs}, frozenset(s.local_id for s in starts if s.made)
    matching = _cover(edges, ids, made)
    if matching is None:  # a run is not ours, or a start FLORA made a run for has none listed yet: wait
        return []
    options = {s.local_id: _options(s.local_id, edges, ids, made) for s in starts}
    exact = [s for s in starts if len(options[s.local_id]) == 1]
    loose = [s for s in starts if len(options[s.local_id]) != 1]
    out = [Binding(s.local_id, matching.get(s.local_id)) for s in exact]
    if loose:
        same = len({s.inputs for s in loose}) == 1
        if same or groups:
            group = tuple(sorted(s.local_id for s in loose))
            out.extend(Binding(s.local_id, matching.get(s.local_id), group, same) for s in loose)
    return out


def _options(local_id: int, edges: dict[int, list[str]], runs: set[str], made: frozenset[int]) -> set[str | None]:
    """Every outcome of ``local_id`` (a run, or None unless FLORA made it one) in some assignment that
    covers all runs and gives every made start a run."""
    found: set[str | None] = set()
    without = {k: v for k, v in edges.items() if k != local_id}
    if local_id not in made and _cover(without, runs, made) is not None:
        found.add(None)
    for run_id in edges[local_id]:
        rest = {k: [r for r in v if r != run_id] for k, v in without.items()}
        if _cover(rest, runs - {run_id}, made - {local_id}) is not None:
            found.add(run_id)
    return found


def _cover(edges: dict[int, list[str]], runs: Iterable[str], made: frozenset[int] = frozenset()) -> dict[int, str] | None:
    """A matching (start -> run) that gives every run a start and every ``made`` start a run, or None."""
    by_run: dict[str, list[int]] = {}
    for start, options in edges.items():
        for run_id in options:
            by_run.setdefault(run_id, []).append(start)
    taken: dict[int, str] = {}
    owner: dict[str, int] = {}

    def augment(run_id: str, seen: set[int]) -> bool:
        for start in by_run.get(run_id, ()):
            if start in seen:
                continue
            seen.add(start)
            if start not in taken or augment(taken[start], seen):
                taken[start], owner[run_id] = run_id, start
                return True
        return False

    def claim(start: int, seen: set[str]) -> bool:
        """Give ``start`` a run, moving runs along a path that ends at a start allowed to have none."""
        for run_id in edges.get(start, ()):
            if run_id in seen or run_id not in owner:
                continue
            seen.add(run_id)
            holder = owner[run_id]
            if holder not in made:
                del taken[holder]
            elif not claim(holder, seen):
                continue
            taken[start], owner[run_id] = run_id, start
            return True
        return False

    for run_id in sorted(runs):
        if not augment(run_id, set()):
            return None
    for start in sorted(made):
        if start in edges and start not in taken and not claim(start, set()):
            return None
    return taken

"""Huge sweeps: counted, checked, priced and refused from the grid's shape; a large dry run is built on demand.

The oracle for the shape is the plain way: build every variation (``itertools.product`` of the parts,
merged over ``fixed``), check each with ``check_inputs`` and match each against the ledger's
completed inputs. The shape must agree with it on every case, and never build a million dicts.
"""

from __future__ import annotations

import itertools
import math
import random
import tracemalloc

import pandas as pd
import pytest

import flora_nb as fnb
from flora_nb import Flora
from flora_nb._ledger import canonical_json
from flora_nb._models import Technique, TechniqueInput
from flora_nb._plan import MAX_RUNS, reuse_of, shape_of, validate
from flora_nb._sweep_plan import FRAME_UP_TO, PlannedRun, SweepPlan
from flora_nb._validation import check_inputs

JINGLE = "jingle-writer"  # prompt* + style (both text), $0.06 a run
PRICE = 0.06
MILLION = {"prompt": [f"p{i}" for i in range(1000)], "style": [f"s{i}" for i in range(1000)]}
MB = 1_000_000


@pytest.fixture
def fl(tmp_path):
    with Flora.simulated(speed=100.0, ledger_path=tmp_path / "l.sqlite") as session:
        session.technique(JINGLE)  # the catalog lookup is not what is measured
        yield session


def _sent(fl: Flora) -> int:
    stats = fl.simulator.stats()
    return stats["runs_created"] + stats["requests_by_route"].get("POST /runs/technique", 0)


def _peak(work) -> tuple[object, int]:
    """What ``work()`` returned (or raised) and the peak bytes traced while it ran."""
    tracemalloc.start()
    try:
        try:
            result: object = work()
        except fnb.FloraError as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------------ the million-variation dry run


def test_a_dry_run_of_a_million_variations_is_a_plan_built_on_demand(fl):
    plan, peak = _peak(lambda: fl.sweep(JINGLE, grid=MILLION, dry_run=True))
    assert peak < 100 * MB, f"{peak / MB:.0f} MB traced: the variations were built"
    assert isinstance(plan, SweepPlan) and len(plan) == 1_000_000 and plan.variations == 1_000_000
    assert plan.varied == ["prompt", "style"] and plan.estimated_total == pytest.approx(1_000_000 * PRICE)
    assert plan[0] == PlannedRun(0, 0, {"prompt": "p0", "style": "s0"}, "queued", PRICE, False, None)
    assert plan[123_456].inputs == {"prompt": "p123", "style": "s456"} and plan[-1].inputs == {"prompt": "p999",
                                                                                             "style": "s999"}
    assert [r.inputs["style"] for r in itertools.islice(plan, 3)] == ["s0", "s1", "s2"]
    assert [r.variation for r in plan[999_998:]] == [999_998, 999_999]
    with pytest.raises(IndexError):
        plan[1_000_000]
    head = plan.head(3)
    assert list(head.index) == [0, 1, 2] and list(head.columns[:4]) == ["variation", "repeat", "input.prompt",
                                                                          "input.style"]
    tail = plan.to_dataframe(999_998)
    assert list(tail.index) == [999_998, 999_999] and tail["input.prompt"].tolist() == ["p999", "p999"]
    assert plan.columns == list(fl.sweep(JINGLE, grid={"prompt": ["a", "b"], "style": ["x", "y"]}, dry_run=True).columns)
    assert "1,000,000 runs" in repr(plan) and "nothing" in repr(plan) and "<table" in plan._repr_html_()
    assert _sent(fl) == 0 and fl.runs().empty


def test_up_to_the_frame_limit_a_dry_run_is_still_a_dataframe(fl, monkeypatch):
    assert FRAME_UP_TO == 100_000
    monkeypatch.setattr("flora_nb._sweep_store.FRAME_UP_TO", 6)
    grid = {"prompt": ["a", "b", "c"], "style": ["x", "y"]}
    assert isinstance(fl.sweep(JINGLE, grid=grid, dry_run=True), pd.DataFrame)  # 6 runs
    assert isinstance(fl.sweep(JINGLE, grid=grid, repeat=2, dry_run=True), SweepPlan)  # 12 runs


SPECS = [dict(grid={"prompt": ["a", "b", "c"]}, fixed={"style": "x"}, repeat=4),
         dict(variations=[{"prompt": "a"}, {"prompt": "b", "style": "x"}, {"prompt": "a", "style": 2}], repeat=4),
         dict(zip={"prompt": ["b", "a"], "style": ["x", "x"]}, grid={}, repeat=5)]


@pytest.mark.parametrize("spec", SPECS, ids=["grid", "variations", "zip"])
def test_a_large_plan_is_the_dataframe_it_replaces(fl, monkeypatch, spec):
    """Rows, columns and reuse of a SweepPlan equal the DataFrame the same dry run gives (repeats,
    reuse taken and not, completed runs matched in order, inputs some variations lack)."""
    fl.sweep(JINGLE, grid={"prompt": ["a", "b"], "style": ["x"]}, repeat=3).wait(60)  # 6 completed runs to reuse
    for reuse in (False, True):
        frame = fl.sweep(JINGLE, **spec, reuse=reuse, dry_run=True)
        monkeypatch.setattr("flora_nb._sweep_store.FRAME_UP_TO", 0)
        plan = fl.sweep(JINGLE, **spec, reuse=reuse, dry_run=True)
        monkeypatch.undo()
        assert isinstance(frame, pd.DataFrame) and isinstance(plan, SweepPlan) and len(plan) == len(frame) >= 10
        pd.testing.assert_frame_equal(plan.to_dataframe(), frame)
        assert plan.columns == list(frame.columns)
        pd.testing.assert_frame_equal(pd.concat([plan.head(5), plan.to_dataframe(5, 7), plan.to_dataframe(7)]), frame)
        for chunk in (1000, 4):  # a whole column at once, and window by window
            monkeypatch.setattr("flora_nb._sweep_plan._CHUNK", chunk)
            for name in frame.columns:
                pd.testing.assert_series_equal(plan[name], frame[name])
            monkeypatch.undo()
        with pytest.raises(KeyError):
            plan["input.nothing"]
        assert [r.reused_from for r in plan] == [None if pd.isna(x) else x for x in frame["reused_from"]]
        assert [r.reusable for r in plan] == frame["reusable"].tolist()
        assert plan.reusable_runs == int(frame["reusable"].sum()) > 0
        assert plan.runs_to_pay == len(plan) - (plan.reusable_runs if reuse else 0)
    assert fl.simulator.stats()["runs_created"] == 6  # the dry runs sent nothing


def test_a_million_with_reuse_counts_the_ledger_runs_it_would_take(fl):
    fl.sweep(JINGLE, grid={"prompt": ["p7"], "style": ["s1", "s2"]}).wait(60)
    plan, peak = _peak(lambda: fl.sweep(JINGLE, grid=MILLION, reuse=True, dry_run=True))
    assert peak < 100 * MB and isinstance(plan, SweepPlan)
    assert plan.reusable_runs == 2 and plan.runs_to_pay == 999_998
    taken = plan[7001:7003]
    assert [r.status for r in taken] == ["completed", "completed"] and all(r.reused_from for r in taken)
    assert plan[7003].reused_from is None and plan[7003].estimated_cost == PRICE


def test_a_bad_value_in_a_million_variations_is_reported_without_building_them(fl):
    grid = {"prompt": [f"p{i}" for i in range(999)] + [""], "style": MILLION["style"]}
    error, peak = _peak(lambda: fl.sweep(JINGLE, grid=grid, dry_run=True))
    assert peak < 100 * MB and isinstance(error, fnb.InputError)
    text = str(error)
    assert "1000 of 1000000 variations are invalid" in text and "variation 999000 {'prompt': '', 'style': 's0'}" in text
    assert "... and 980 more" in text and "input 'prompt' is empty" in text


# ------------------------------------------------------------------ refused from the count


def test_absurd_sizes_are_refused_at_once_without_memory(fl):
    for spec in (dict(repeat=10**12, dry_run=True), dict(repeat=10_000_000), dict(repeat=10_000_000, budget=1.0),
                 dict(repeat=MAX_RUNS // 2 + 1, confirm=True)):
        error, peak = _peak(lambda spec=spec: fl.sweep(JINGLE, grid={"prompt": ["a", "b"]}, **spec))
        assert isinstance(error, fnb.InputError) and "one sweep is at most 1,000,000" in str(error), spec
        assert peak < 1 * MB, f"{spec}: {peak / MB:.1f} MB traced"
    assert _sent(fl) == 0 and fl.sweeps().empty


def test_a_million_over_any_budget_is_refused_before_it_is_built(tmp_path):
    with Flora.simulated(speed=100.0, ledger_path=tmp_path / "l.sqlite", budget=5.0) as fl:
        fl.technique(JINGLE)
        for reuse in (False, True):  # the session budget; with reuse=True, after counting what reuse takes
            error, peak = _peak(lambda reuse=reuse: fl.sweep(JINGLE, grid=MILLION, confirm=True, reuse=reuse))
            assert isinstance(error, fnb.BudgetExceededError) and "session budget" in str(error)
            assert error.estimate == pytest.approx(1_000_000 * PRICE)
            assert peak < 100 * MB, f"{peak / MB:.0f} MB traced: the variations were built"
        assert _sent(fl) == 0 and fl.runs().empty and fl.sweeps().empty


# ------------------------------------------------------------------ the shape against building every variation

TECH = Technique("tech_t", "T", run_cost=0.01, inputs=(
    TechniqueInput("a"), TechniqueInput("b", optional=True), TechniqueInput("img", type="imageUrl", optional=True)))
GOOD = {"a": ["x", "y", "x", 1, 1.0, True], "b": ["x", "z", 2.5, False], "img": ["https://e.com/i.png", "asset_1"],
        "zz": ["x"]}
BAD = ["", None, "not a url", [1, 2], math.nan]


def _built(grid, zip_, variations, fixed, repeat):
    """Every run built the plain way: (inputs per run, variation per run, varied keys), or the InputError text."""
    def parts_of(mapping):
        names = list(mapping or {})
        lists = [v if isinstance(v, (list, tuple, range)) else [v] for v in (mapping or {}).values()]
        return names, lists

    names, lists = parts_of(grid)
    grids = [dict(zip(names, c)) for c in itertools.product(*lists)]
    znames, zlists = parts_of(zip_)
    zips = [dict(zip(znames, row)) for row in zip(*zlists)] if zip_ else [{}]
    combos = []
    for parts in itertools.product(grids, zips, [dict(v) for v in variations] if variations is not None else [{}]):
        merged = dict(fixed)
        for part in parts:
            if (set(part) & set(merged)) - set(fixed):
                return "given by two"
            merged.update(part)
        combos.append(merged)
    order = list(dict.fromkeys(k for c in combos for k in c))
    varied = [k for k in order if len({repr(c.get(k)) for c in combos}) > 1]
    return combos, varied


def _random_case(rng):
    """grid/zip/variations/fixed/repeat: mostly valid values, some keys fixed and taken over by one or
    two factors (the overlapping case), now and then an unknown key or a key given twice."""
    def value(key):
        return rng.choice(GOOD[key]) if rng.random() < 0.85 else rng.choice(BAD)

    keys = ["a", "b", "img"] + (["zz"] if rng.random() < 0.1 else [])
    rng.shuffle(keys)
    homes = {k: [rng.choice(["fixed", "grid", "grid", "zip", "rows", "none"])] for k in keys}
    fixed = {k: value(k) for k in keys if homes[k] == ["fixed"] or (homes[k] != ["none"] and rng.random() < 0.3)}
    for k in fixed:
        if homes[k] == ["fixed"] and rng.random() < 0.5:
            homes[k] = [rng.choice(["grid", "zip", "rows"])]
        if homes[k] != ["fixed"] and rng.random() < 0.4:
            homes[k].append(rng.choice([h for h in ("grid", "zip", "rows") if h not in homes[k]]))
    if rng.random() < 0.05:  # a key given twice without being fixed: refused
        homes[keys[0]] = ["grid", "zip"]
    grid = {k: ([value(k) for _ in range(rng.randint(1, 3))] if rng.random() < 0.8 else value(k))
            for k in keys if "grid" in homes[k]}
    n = rng.randint(1, 3)
    zip_ = {k: [value(k) for _ in range(n)] for k in keys if "zip" in homes[k]}
    in_rows = [k for k in keys if "rows" in homes[k]]
    variations = None
    if in_rows or rng.random() < 0.3:
        variations = [{k: value(k) for k in in_rows if rng.random() < 0.8} for _ in range(rng.randint(1, 3))]
    return grid or None, zip_ or None, variations, fixed, rng.randint(1, 3)


def test_the_shape_agrees_with_building_every_variation():
    rng = random.Random(7)
    seen = {"invalid": 0, "valid": 0, "reused": 0, "overlapping": 0, "located": 0}
    for _ in range(600):
        grid, zip_, variations, fixed, repeat = _random_case(rng)
        built = _built(grid, zip_, variations, fixed, repeat)
        if isinstance(built, str):
            with pytest.raises(fnb.InputError, match=built):
                shape_of(grid, zip_, variations, fixed, repeat)
            continue
        combos, varied = built
        shape = shape_of(grid, zip_, variations, fixed, repeat)
        seen["overlapping"] += shape.overlapping
        plan = shape.expand()
        assert plan.inputs == [dict(c) for c in combos for _ in range(repeat)]
        assert [list(c) for c in combos] == [list(i) for i in plan.inputs[::repeat]]  # key order too
        assert plan.variation == [n for n in range(len(combos)) for _ in range(repeat)] and plan.varied == varied
        assert [shape.inputs(n) for n in range(len(combos))] == combos
        start = rng.randrange(len(combos))
        assert list(shape.walk(start)) == combos[start:]
        _check_validation(shape, combos, varied)
        seen["invalid" if any(check_inputs(TECH, c) for c in combos) else "valid"] += 1
        reused, located = _check_reuse(shape, combos, repeat, rng)
        seen["reused"] += reused
        seen["located"] += located
    assert min(seen.values()) >= 20, seen  # every path was taken often


def _check_validation(shape, combos, varied):
    bad = [n for n, c in enumerate(combos) if check_inputs(TECH, c)]
    if not bad:
        validate(shape, TECH)
        return
    with pytest.raises(fnb.InputError) as raised:
        validate(shape, TECH)
    lines = [f"  variation {n} {({k: combos[n].get(k) for k in varied} or combos[n])}: "
             + "; ".join(check_inputs(TECH, combos[n])) for n in bad[:20]]
    assert str(raised.value).startswith(f"{len(bad)} of {len(combos)} variations are invalid")
    assert str(raised.value).split("\n")[1:len(lines) + 1] == lines


def _check_reuse(shape, combos, repeat, rng) -> tuple[bool, bool]:
    """The k-th planned run with some inputs takes the k-th completed run with them, by either walk."""
    keys = [canonical_json(c) for c in combos]
    done = {k: [f"run_{k}_{i}" for i in range(rng.randint(1, 4))] for k in set(keys) if rng.random() < 0.6}
    done['{"a":"elsewhere"}'] = ["run_other"]
    used: dict[str, int] = {}
    expected = []
    for key in keys:
        for _ in range(repeat):
            pool, k = done.get(key, []), used.get(key, 0)
            expected.append(pool[k] if k < len(pool) else None)
            used[key] = k + 1
    padded = {**done, **{f'{{"pad":{i}}}': ["x"] for i in range(len(combos))}}  # more completed than planned
    for given in (done, padded):
        reuse = reuse_of(shape, given)
        assert [reuse.taken(i) for i in range(len(expected))] == expected
        assert reuse.count == sum(t is not None for t in expected)
    located = not shape.overlapping and len(done) < len(combos)  # reuse_of found the completed inputs in the factors
    return any(expected), located

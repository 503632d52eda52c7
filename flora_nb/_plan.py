"""Planning a sweep: grids, zipped lists and explicit variations as a ``Shape``, never built whole.

A shape is a product of factors (one per grid input, one for the zipped lists, one for the
explicit variations) over ``fixed``, repeated ``repeat`` times. It is counted, checked, priced and
matched against the ledger from its factors; variation ``n`` is built only when asked for, so a
million-variation dry run costs what its factors cost. ``expand`` builds every run (a sweep that
starts needs them all).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from ._errors import InputError
from ._ledger import canonical_json
from ._models import Technique
from ._validation import check_inputs

__all__ = ["MAX_RUNS", "Plan", "Reuse", "Shape", "expand", "plan_size", "reuse_of", "shape_of", "validate",
           "varied_keys"]

_MAX_LISTED_PROBLEMS = 20
MAX_RUNS = 1_000_000  # runs in one sweep: past this a sweep is a mistake, or wants splitting
_LISTS = (list, tuple, range)


@dataclass
class Plan:
    """The variations of a sweep, in launch order, and which inputs vary across them."""

    inputs: list[dict[str, Any]]  # one per run (repeats included)
    variation: list[int]  # variation number of each run (repeats share it)
    repeat_index: list[int]
    varied: list[str]  # input ids that take more than one value, in the order given
    fixed: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True)
class _Factor:
    """One factor of the product: equal-length ``columns`` (a grid input, the zipped lists) or ``rows``."""

    columns: dict[str, tuple[Any, ...]]
    rows: tuple[dict[str, Any], ...] | None = None  # explicit variations (then ``columns`` is empty)

    @functools.cached_property
    def size(self) -> int:
        return len(self.rows) if self.rows is not None else len(next(iter(self.columns.values())))

    @functools.cached_property
    def keys(self) -> list[str]:
        """Every input this factor sets somewhere, in first-seen order."""
        if self.rows is None:
            return list(self.columns)
        return list(dict.fromkeys(k for row in self.rows for k in row))

    def part(self, index: int) -> dict[str, Any]:
        if self.rows is not None:
            return self.rows[index]
        return {k: values[index] for k, values in self.columns.items()}


@dataclass(frozen=True)
class Shape:
    """A sweep's variations as a product of factors over ``fixed``; variation ``n`` is built on demand."""

    factors: tuple[_Factor, ...]
    fixed: dict[str, Any]
    repeat: int
    varied: list[str]  # input ids that take more than one value (as before files became URLs)

    @functools.cached_property
    def variations(self) -> int:
        return math.prod(f.size for f in self.factors)

    @property
    def runs(self) -> int:
        return self.variations * self.repeat

    @functools.cached_property
    def keys(self) -> list[str]:
        """Every input some variation has, in first-seen order."""
        return list(dict.fromkeys([*self.fixed, *(k for f in self.factors for k in f.keys)]))

    @functools.cached_property
    def overlapping(self) -> bool:
        """Does an input (one of ``fixed``) come from two factors? Then per-factor shortcuts do not hold."""
        keys = [k for f in self.factors for k in f.keys]
        return len(keys) != len(set(keys))

    def digits(self, number: int) -> list[int]:
        """Each factor's index in variation ``number`` (the last factor varies fastest)."""
        found = []
        for f in reversed(self.factors):
            number, digit = divmod(number, f.size)
            found.append(digit)
        return found[::-1]

    def number(self, digits: Sequence[int]) -> int:
        number = 0
        for f, digit in zip(self.factors, digits):
            number = number * f.size + digit
        return number

    def _merged(self, digits: Sequence[int]) -> dict[str, Any]:
        merged = dict(self.fixed)
        for f, digit in zip(self.factors, digits):
            merged.update(f.part(digit))
        return merged

    def inputs(self, number: int) -> dict[str, Any]:
        """The inputs of variation ``number`` (a new dict)."""
        if not 0 <= number < self.variations:
            raise IndexError(f"variation {number} out of range 0..{self.variations - 1}")
        return self._merged(self.digits(number))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The inputs of every variation, in order, one at a time."""
        return self.walk(0)

    def walk(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """The inputs of variations ``start``, ``start + 1``, ... (new dicts), one at a time.

        The merge of every factor but the last is kept, and redone only from the factor that moved.
        """
        if not 0 <= start < self.variations:
            return
        if not self.factors:
            yield dict(self.fixed)
            return
        digits, sizes, last = self.digits(start), [f.size for f in self.factors], self.factors[-1]
        prefix = [dict(self.fixed)]
        for f, digit in zip(self.factors[:-1], digits[:-1]):
            prefix.append({**prefix[-1], **f.part(digit)})
        columns = None if last.rows is not None else list(last.columns.items())
        while True:
            base = prefix[-1]
            for digit in range(digits[-1], sizes[-1]):  # the hot loop: a copy and a store per input
                if columns is None:
                    yield {**base, **last.part(digit)}
                    continue
                merged = base.copy()
                for key, values in columns:
                    merged[key] = values[digit]
                yield merged
            moved = len(sizes) - 2
            while moved >= 0 and digits[moved] + 1 == sizes[moved]:
                moved -= 1
            if moved < 0:
                return
            digits[moved:] = [digits[moved] + 1] + [0] * (len(sizes) - moved - 1)
            del prefix[moved + 1:]
            for f, digit in zip(self.factors[moved:-1], digits[moved:-1]):
                prefix.append({**prefix[-1], **f.part(digit)})

    def expand(self) -> Plan:
        """Every run built: inputs, variation and repeat numbers."""
        inputs, numbers, repeats = [], [], []
        for number, combo in enumerate(self):
            for r in range(self.repeat):
                inputs.append(dict(combo))
                numbers.append(number)
                repeats.append(r)
        return Plan(inputs, numbers, repeats, list(self.varied), dict(self.fixed))

    def resolved(self, resolve: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], keys: set[str]) -> Shape:
        """The shape with ``resolve`` applied, in one call, to each value of ``keys`` (local files to URLs)."""
        parts: list[dict[str, Any]] = [{k: v for k, v in self.fixed.items() if k in keys}]
        for f in self.factors:
            if f.rows is not None:
                parts += [{k: v for k, v in row.items() if k in keys} for row in f.rows]
            else:
                parts += [{k: v} for k, values in f.columns.items() if k in keys for v in values]
        if not any(parts):
            return self
        done = iter(resolve(parts))
        fixed = {**self.fixed, **next(done)}
        factors = []
        for f in self.factors:
            if f.rows is not None:
                factors.append(_Factor({}, tuple({**row, **next(done)} for row in f.rows)))
            else:
                factors.append(_Factor({k: tuple(next(done)[k] for _ in values) if k in keys else values
                                        for k, values in f.columns.items()}))
        return dataclasses.replace(self, factors=tuple(factors), fixed=fixed)


def _length(name: str, values: Any) -> int:
    """How many values a grid or zip entry holds, without copying them (a scalar is one)."""
    if isinstance(values, _LISTS):
        if len(values) == 0:
            raise InputError(f"{name} has an empty list of values; give at least one value or drop it.")
        return len(values)
    return 1


def _values(values: Any) -> tuple[Any, ...]:
    return tuple(values) if isinstance(values, _LISTS) else (values,)  # a scalar in a grid is simply fixed


def plan_size(grid: Mapping[str, Any] | None = None, zip: Mapping[str, Any] | None = None,
              variations: Sequence[Mapping[str, Any]] | None = None, repeat: int = 1) -> int:
    """How many runs a sweep would start, counted from its shape before anything is built.

    Raises InputError for a shape ``expand`` would refuse, and for more than ``MAX_RUNS`` runs.
    """
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise InputError(f"repeat must be a whole number >= 1, got {repeat!r}.")
    size = repeat
    for name, values in (grid or {}).items():
        size *= _length(f"grid[{name!r}]", values)
    if zip:
        lengths = {n: _length(f"zip[{n!r}]", v) for n, v in zip.items()}
        if len(set(lengths.values())) > 1:
            raise InputError(f"zip lists must have equal lengths; got {lengths}. Use grid= for every combination.")
        size *= next(iter(lengths.values()))
    if variations is not None:
        if not variations:
            raise InputError("variations is an empty list; give at least one dict of inputs.")
        size *= len(variations)
    if size > MAX_RUNS:
        raise InputError(f"This sweep would start {size:,} runs; one sweep is at most {MAX_RUNS:,}. "
                         "Trim the grid or the repeats, or split it into several sweeps. Nothing was started.")
    return size


def shape_of(grid: Mapping[str, Any] | None = None, zip: Mapping[str, Any] | None = None,
             variations: Sequence[Mapping[str, Any]] | None = None, fixed: Mapping[str, Any] | None = None,
             repeat: int = 1) -> Shape:
    """Every combination of grid x zip rows x explicit variations, with ``fixed`` under each, as a shape.

    Counted first (``plan_size``: InputError past ``MAX_RUNS``), then checked; nothing per variation is built.
    """
    plan_size(grid, zip, variations, repeat)
    fixed = dict(fixed or {})
    factors = [_Factor({name: _values(values)}) for name, values in (grid or {}).items()]
    if zip:
        factors.append(_Factor({name: _values(values) for name, values in zip.items()}))
    if variations is not None:
        factors.append(_Factor({}, tuple(dict(v) for v in variations)))
    seen: set[str] = set()
    for f in factors:
        keys = set(f.keys)
        clash = (keys & seen) - set(fixed)
        if clash:
            raise InputError(f"input(s) {sorted(clash)} are given by two of grid/zip/variations; give each once.")
        seen |= keys
    return Shape(tuple(factors), fixed, repeat, _varied(tuple(factors), fixed))


def _varied(factors: tuple[_Factor, ...], fixed: dict[str, Any]) -> list[str]:
    """``varied_keys`` of every variation, read from the factors: what a key takes comes from the last
    factor that sets it (rows that do not set it fall through to the factors before, then ``fixed``)."""

    def taken(key: str, upto: int) -> set[str]:
        for i in range(upto - 1, -1, -1):
            f = factors[i]
            if f.rows is None and key in f.columns:
                return {repr(v) for v in f.columns[key]}
            if f.rows is not None and any(key in row for row in f.rows):
                found = {repr(row[key]) for row in f.rows if key in row}
                return found | taken(key, i) if any(key not in row for row in f.rows) else found
        return {repr(fixed.get(key))}

    order = list(dict.fromkeys([*fixed, *(k for f in factors for k in f.keys)]))
    return [k for k in order if len(taken(k, len(factors))) > 1]


def expand(grid: Mapping[str, Any] | None = None, zip: Mapping[str, Any] | None = None,
           variations: Sequence[Mapping[str, Any]] | None = None, fixed: Mapping[str, Any] | None = None,
           repeat: int = 1) -> Plan:
    """Every combination of grid x zip rows x explicit variations, with ``fixed`` under each, built."""
    return shape_of(grid, zip, variations, fixed, repeat).expand()


def varied_keys(combos: Sequence[Mapping[str, Any]]) -> list[str]:
    order: list[str] = []
    for combo in combos:
        order += [k for k in combo if k not in order]
    return [k for k in order if len({repr(c.get(k)) for c in combos}) > 1]


# ---------------------------------------------------------------------------- validation


def validate(shape: Shape, tech: Technique) -> None:
    """Raise one InputError listing every bad variation (nothing is sent)."""
    count, first = _bad_variations(shape, tech)
    if not count:
        return
    bad = []
    for number in first:
        inputs = shape.inputs(number)
        shown = {k: inputs.get(k) for k in shape.varied} or inputs
        bad.append(f"  variation {number} {shown}: " + "; ".join(check_inputs(tech, inputs)))
    more = f"\n  ... and {count - _MAX_LISTED_PROBLEMS} more" if count > _MAX_LISTED_PROBLEMS else ""
    raise InputError(
        f"{count} of {shape.variations} variations are invalid for {tech.name} ({tech.technique_id}); "
        f"nothing was started:\n" + "\n".join(bad) + more
    )


def _bad_variations(shape: Shape, tech: Technique) -> tuple[int, list[int]]:
    """How many variations ``check_inputs`` refuses, and the first few of them.

    ``check_inputs`` judges each input on its own (its name, its value), so with every input coming
    from one factor a variation is bad exactly when one of its factors' parts is: each part is
    checked once, and the bad variations are counted by multiplying, not by building them.
    """
    if shape.overlapping:
        return _bad_by_building(shape, tech)
    declared = {i.id: i for i in tech.inputs}
    alone = {i.id: dataclasses.replace(tech, inputs=(i,)) for i in tech.inputs}

    def fine(key: str, value: Any) -> bool:
        return key in declared and not check_inputs(alone[key], {key: value})

    def rest_fine(covered: set[str]) -> bool:  # inputs no factor sets: their fixed value, or missing
        return all(fine(i.id, shape.fixed.get(i.id)) for i in tech.inputs if i.id not in covered)

    columns = {k for f in shape.factors if f.rows is None for k in f.columns}
    good: list[list[bool]] = []
    for f in shape.factors:
        if f.rows is not None:
            good.append([all(fine(k, v) for k, v in row.items()) and rest_fine(columns | set(row)) for row in f.rows])
        else:
            flags = [True] * f.size
            for key, values in f.columns.items():
                flags = [ok and fine(key, v) for ok, v in zip(flags, values)]
            good.append(flags)
    everywhere = all(k in declared for k in shape.fixed)
    if not any(f.rows is not None for f in shape.factors):
        everywhere = everywhere and rest_fine(columns)
    if not everywhere:
        return shape.variations, list(range(min(_MAX_LISTED_PROBLEMS, shape.variations)))
    count = shape.variations - math.prod(sum(flags) for flags in good)
    return count, _first_bad(shape, good, _MAX_LISTED_PROBLEMS) if count else []


def _first_bad(shape: Shape, good: list[list[bool]], limit: int) -> list[int]:
    """The first ``limit`` variations with a bad part, walking only subtrees that hold one."""
    sizes = [f.size for f in shape.factors]
    below = [math.prod(sizes[i + 1:]) for i in range(len(sizes))]  # variations under one part of factor i
    bad_after = [not all(all(flags) for flags in good[i:]) for i in range(len(good) + 1)]
    found: list[int] = []

    def visit(i: int, base: int) -> None:
        for digit in range(sizes[i]):
            start = base + digit * below[i]
            if not good[i][digit]:  # every variation under a bad part is bad
                found.extend(range(start, start + min(below[i], limit - len(found))))
            elif bad_after[i + 1]:  # some later factor has a bad part, so this subtree holds one
                visit(i + 1, start)
            if len(found) >= limit:
                return

    visit(0, 0)
    return found


def _bad_by_building(shape: Shape, tech: Technique) -> tuple[int, list[int]]:
    count, first = 0, list[int]()
    for number, inputs in enumerate(shape):
        if check_inputs(tech, inputs):
            count += 1
            if len(first) < _MAX_LISTED_PROBLEMS:
                first.append(number)
    return count, first


# ---------------------------------------------------------------------------- reuse


@dataclass(frozen=True)
class Reuse:
    """Which completed ledger runs the planned runs could take, each once, in plan order."""

    hits: dict[int, tuple[Sequence[str], int]]  # variation -> (runs with its inputs, earlier variations sharing them)
    repeat: int

    def taken(self, index: int) -> str | None:
        """The completed run planned run ``index`` could take, or None."""
        found = self.hits.get(index // self.repeat)
        if found is None:
            return None
        pool, before = found
        k = before * self.repeat + index % self.repeat
        return pool[k] if k < len(pool) else None

    @property
    def count(self) -> int:
        """How many planned runs a completed run could serve."""
        return sum(min(self.repeat, max(0, len(pool) - before * self.repeat)) for pool, before in self.hits.values())


def reuse_of(shape: Shape, done: Mapping[str, Sequence[str]]) -> Reuse:
    """Match ``done`` (canonical inputs JSON -> completed run ids) to the shape's variations.

    Whichever is smaller is walked: the variations (their JSON looked up), or the completed inputs
    (each found in the factors). The k-th planned run with some inputs takes the k-th such run.
    """
    if not done:
        return Reuse({}, shape.repeat)
    if shape.overlapping or shape.variations <= len(done):
        found: dict[str, list[int]] = {}
        for number, inputs in enumerate(shape):
            key = canonical_json(inputs)
            if key in done:
                found.setdefault(key, []).append(number)
        matched = [(done[k], numbers) for k, numbers in found.items()]
    else:
        locate = _locator(shape)
        matched = [(pool, numbers) for key, pool in done.items() if (numbers := locate(key))]
    hits = {number: (pool, before) for pool, numbers in matched for before, number in enumerate(numbers)}
    return Reuse(hits, shape.repeat)


def _locator(shape: Shape) -> Callable[[str], list[int]]:
    """A function from canonical inputs JSON to the variations (ascending) with exactly those inputs.

    Only for shapes whose factors set disjoint inputs: then each factor's part is read off the JSON.
    """
    columns = {k for f in shape.factors if f.rows is None for k in f.columns}
    indexes: list[dict[str, list[int]]] = []
    for f in shape.factors:
        index: dict[str, list[int]] = {}
        for i in range(f.size):
            part = {k: v for k, v in {**shape.fixed, **f.part(i)}.items() if k not in columns} if f.rows is not None \
                else f.part(i)
            index.setdefault(canonical_json(part), []).append(i)
        indexes.append(index)
    has_rows = any(f.rows is not None for f in shape.factors)
    rest = canonical_json({k: v for k, v in shape.fixed.items() if k not in columns})

    def locate(key: str) -> list[int]:
        try:
            inputs = json.loads(key)
        except ValueError:
            return []
        if not isinstance(inputs, dict) or not columns <= set(inputs):
            return []
        others = canonical_json({k: v for k, v in inputs.items() if k not in columns})
        if not has_rows and others != rest:
            return []
        choices = []
        for f, index in zip(shape.factors, indexes):
            part = others if f.rows is not None else canonical_json({k: inputs[k] for k in f.columns})
            choices.append(index.get(part, []))
        return [shape.number(digits) for digits in itertools.product(*choices)]

    return locate

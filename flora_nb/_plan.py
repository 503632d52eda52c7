"""Planning a sweep: expanding grids, zipped lists and explicit variations into input dicts."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ._errors import InputError
from ._models import Technique
from ._validation import check_inputs

__all__ = ["MAX_RUNS", "Plan", "expand", "plan_size", "validate"]

_MAX_LISTED_PROBLEMS = 20
MAX_RUNS = 1_000_000  # runs in one sweep: past this a sweep is a mistake, or wants splitting


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


def _length(name: str, values: Any) -> int:
    """How many values ``_as_list`` would give, without copying them."""
    if isinstance(values, (list, tuple, range)):
        if len(values) == 0:
            raise InputError(f"{name} has an empty list of values; give at least one value or drop it.")
        return len(values)
    return 1


def _as_list(name: str, values: Any) -> list[Any]:
    if isinstance(values, (list, tuple, range)):
        if len(values) == 0:
            raise InputError(f"{name} has an empty list of values; give at least one value or drop it.")
        return list(values)
    return [values]  # a scalar in a grid is simply fixed


def _grid(grid: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not grid:
        return [{}]
    names = list(grid)
    lists = [_as_list(f"grid[{n!r}]", grid[n]) for n in names]
    return [dict(zip(names, combo)) for combo in itertools.product(*lists)]


def _zipped(zipped: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not zipped:
        return [{}]
    lists = {n: _as_list(f"zip[{n!r}]", v) for n, v in zipped.items()}
    lengths = {n: len(v) for n, v in lists.items()}
    if len(set(lengths.values())) > 1:
        raise InputError(f"zip lists must have equal lengths; got {lengths}. Use grid= for every combination.")
    return [dict(zip(lists, row)) for row in zip(*lists.values())]


def _explicit(variations: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    if variations is None:
        return [{}]
    if not variations:
        raise InputError("variations is an empty list; give at least one dict of inputs.")
    return [dict(v) for v in variations]


def _merge(parts: Sequence[Mapping[str, Any]], fixed: Mapping[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = dict(fixed)
    for part in parts:
        clash = (set(part) & set(merged)) - set(fixed)
        if clash:
            raise InputError(f"input(s) {sorted(clash)} are given by two of grid/zip/variations; give each once.")
        merged.update(part)
    return merged


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


def expand(grid: Mapping[str, Any] | None = None, zip: Mapping[str, Any] | None = None,
           variations: Sequence[Mapping[str, Any]] | None = None, fixed: Mapping[str, Any] | None = None,
           repeat: int = 1) -> Plan:
    """Every combination of grid x zip rows x explicit variations, with ``fixed`` under each."""
    if not isinstance(repeat, int) or repeat < 1:
        raise InputError(f"repeat must be a whole number >= 1, got {repeat!r}.")
    fixed = dict(fixed or {})
    combos = [_merge(parts, fixed) for parts in itertools.product(_grid(grid), _zipped(zip), _explicit(variations))]
    inputs, numbers, repeats = [], [], []
    for number, combo in enumerate(combos):
        for r in range(repeat):
            inputs.append(dict(combo))
            numbers.append(number)
            repeats.append(r)
    return Plan(inputs, numbers, repeats, varied_keys(combos), fixed)


def varied_keys(combos: Sequence[Mapping[str, Any]]) -> list[str]:
    order: list[str] = []
    for combo in combos:
        order += [k for k in combo if k not in order]
    return [k for k in order if len({repr(c.get(k)) for c in combos}) > 1]


def validate(plan: Plan, tech: Technique) -> None:
    """Raise one InputError listing every bad variation (nothing is sent)."""
    bad = []
    seen: set[int] = set()
    for inputs, number in zip(plan.inputs, plan.variation):
        if number in seen:
            continue
        seen.add(number)
        problems = check_inputs(tech, inputs)
        if problems:
            shown = {k: inputs.get(k) for k in plan.varied} or inputs
            bad.append(f"  variation {number} {shown}: " + "; ".join(problems))
    if bad:
        more = f"\n  ... and {len(bad) - _MAX_LISTED_PROBLEMS} more" if len(bad) > _MAX_LISTED_PROBLEMS else ""
        raise InputError(
            f"{len(bad)} of {len(seen)} variations are invalid for {tech.name} ({tech.technique_id}); "
            f"nothing was started:\n" + "\n".join(bad[:_MAX_LISTED_PROBLEMS]) + more
        )

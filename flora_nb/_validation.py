"""Checking inputs against a technique before anything is sent."""

from __future__ import annotations

import math
from typing import Any, Mapping

from ._models import Technique

__all__ = ["check_inputs", "looks_like_url_or_asset"]

_URL_TYPES = frozenset({"imageUrl", "videoUrl", "audioUrl", "documentUrl"})


def looks_like_url_or_asset(value: str) -> bool:
    """An http(s) URL or an ``asset_`` id, as FLORA takes for media inputs."""
    return value.startswith(("http://", "https://")) or value.startswith("asset_")


def check_inputs(tech: Technique, values: Mapping[str, Any]) -> list[str]:
    """Every problem with ``values`` for ``tech`` (empty when they would be accepted)."""
    problems = []
    declared = {i.id: i for i in tech.inputs}
    for name in values:
        if name not in declared:
            problems.append(f"unknown input {name!r} (inputs: {', '.join(declared) or 'none'})")
    for spec in tech.inputs:
        value = values.get(spec.id)
        if value is None:
            if spec.required:
                problems.append(f"missing required input {spec.id!r} ({spec.type})")
        elif not isinstance(value, str):
            problem = _non_string_problem(spec.id, spec.type, value)
            if problem:
                problems.append(problem)
        elif value == "":
            problems.append(f"input {spec.id!r} is empty; omit an optional input instead")
        elif spec.type in _URL_TYPES and not looks_like_url_or_asset(value):
            problems.append(f"input {spec.id!r} ({spec.type}) must be an http(s) URL or an asset_ id, got {value!r}")
    return problems


def _non_string_problem(input_id: str, input_type: str, value: Any) -> str | None:
    """Inputs are ``map[unknown]`` in FLORA's reference: a text input takes a finite number or a
    boolean as it is (sent as JSON); media inputs and anything else must be strings."""
    if input_type not in _URL_TYPES and isinstance(value, (bool, int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return f"input {input_id!r} is {value!r}; send a finite number or a string"
        return None
    return f"input {input_id!r} ({input_type}) must be a string, got {type(value).__name__}"

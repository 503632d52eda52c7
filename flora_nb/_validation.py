"""Checking inputs against a technique before anything is sent."""

from __future__ import annotations

import math
from typing import Any, Mapping

from ._errors import InputError
from ._files import file_problem, local_path
from ._models import Technique, lone_surrogate

__all__ = ["check_inputs", "check_text", "looks_like_url_or_asset", "text_problem"]

_URL_TYPES = frozenset({"imageUrl", "videoUrl", "audioUrl", "documentUrl"})


def looks_like_url_or_asset(value: str) -> bool:
    """An http(s) URL or an ``asset_`` id, as FLORA takes for media inputs."""
    return value.startswith(("http://", "https://")) or value.startswith("asset_")


def check_inputs(tech: Technique, values: Mapping[str, Any]) -> list[str]:
    """Every problem with ``values`` for ``tech`` (empty when they would be accepted).

    A media input may also name a local file (``pathlib.Path``, or a string naming an existing
    file): it is checked here (type, size) and uploaded when the run starts.
    """
    problems = []
    declared = {i.id: i for i in tech.inputs}
    for name in values:
        if name not in declared:
            problems.append(f"unknown input {name!r} (inputs: {', '.join(declared) or 'none'})")
    for spec in tech.inputs:
        problem = _value_problem(spec.id, spec.type, values.get(spec.id), spec.required)
        if problem:
            problems.append(problem)
    return problems


def _value_problem(name: str, kind: str, value: Any, required: bool) -> str | None:
    if value is None:
        return f"missing required input {name!r} ({kind})" if required else None
    path = local_path(value) if kind in _URL_TYPES else None
    if path is not None:
        problem = file_problem(path, kind)
        return f"input {name!r} ({kind}): {problem}" if problem else None
    if not isinstance(value, str):
        return _non_string_problem(name, kind, value)
    if value == "":
        return f"input {name!r} is empty; omit an optional input instead"
    if kind in _URL_TYPES and not looks_like_url_or_asset(value):
        return (f"input {name!r} ({kind}) must be an http(s) URL, an asset_ id or the path of an existing "
                f"local file, got {value!r}")
    return text_problem(f"input {name!r}", value)  # sent to FLORA as it is: refused, never changed


def _non_string_problem(input_id: str, input_type: str, value: Any) -> str | None:
    """Inputs are ``map[unknown]`` in FLORA's reference: a text input takes a finite number or a
    boolean as it is (sent as JSON); media inputs and anything else must be strings."""
    if input_type not in _URL_TYPES and isinstance(value, (bool, int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return f"input {input_id!r} is {value!r}; send a finite number or a string"
        return None
    return f"input {input_id!r} ({input_type}) must be a string, got {type(value).__name__}"


def text_problem(what: str, value: Any) -> str | None:
    """Why ``value`` (text, or lists and dicts of it) is not text flora_nb can store or send, or None.

    A lone surrogate (``"\\ud800"``) is a valid Python ``str`` but no UTF-8 text: user text holding one
    is refused, never changed behind the user's back (server text is made storable instead, U+FFFD).
    """
    found = lone_surrogate(value)
    if found is None:
        return None
    return (f"{what} holds {found!a}, half of a UTF-16 surrogate pair on its own: not text the ledger or "
            "FLORA can take. Remove it, or decode the source with errors='replace' (bytes decoded with "
            "errors='surrogateescape' and some copy-pastes leave such characters)")


def check_text(what: str, value: Any) -> None:
    """Refuse (``InputError``, before it is stored) user text the ledger cannot store."""
    problem = text_problem(what, value)
    if problem:
        raise InputError(f"{problem}. Nothing was stored and no run was started.")

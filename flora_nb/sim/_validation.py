"""Validation of run-start bodies: every problem is collected, then one 400 lists them all."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ._catalog import TechniqueSpec
from ._responses import validation_error

URL_TYPES = ("imageUrl", "videoUrl", "audioUrl", "documentUrl")
# Spellings seen across FLORA's docs (imageUrl, image_url, IMAGE_URL) fold to one key.
_TYPE_SPELLINGS = {t.lower(): t for t in ("text", *URL_TYPES)}
MODES = ("async", "stream")

Problems = list[tuple[str, str]]


def normalise_type(sent: Any) -> str | None:
    """The canonical input type for a spelling like ``image_url``, or None."""
    if not isinstance(sent, str):
        return None
    return _TYPE_SPELLINGS.get(sent.replace("_", "").lower())


def is_http_url(value: str) -> bool:
    """An absolute http(s) URL with a host."""
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _prefixed(body: dict[str, Any], name: str, prefix: str, problems: Problems) -> str:
    value = body.get(name)
    if value is None:
        problems.append((name, "Required"))
    elif not isinstance(value, str) or not value.startswith(prefix):
        problems.append((name, f"Must start with {prefix}"))
    else:
        return value
    return ""


def top_level_body(body: Any) -> tuple[str, str, dict[str, Any]]:
    """``{technique_id, workspace_id, inputs}`` of POST /runs/technique, shape-checked."""
    if not isinstance(body, dict):
        raise validation_error([("body", "Expected an object")])
    problems: Problems = []
    technique_id = _prefixed(body, "technique_id", "tech_", problems)
    workspace_id = _prefixed(body, "workspace_id", "ws_", problems)
    inputs = body.get("inputs")
    if inputs is None:
        problems.append(("inputs", "Required"))
    elif not isinstance(inputs, dict):
        problems.append(("inputs", "Expected an object keyed by input id"))
    if problems:
        raise validation_error(problems)
    return technique_id, workspace_id, dict(inputs or {})


def nested_body(body: Any) -> tuple[dict[str, Any], dict[str, str], str | None]:
    """Inputs map, the types sent with them, and the body idempotency_key of the nested route."""
    if not isinstance(body, dict):
        raise validation_error([("body", "Expected an object")])
    problems: Problems = []
    if body.get("mode") not in MODES:
        problems.append(("mode", "Expected 'async' or 'stream'"))
    key = body.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not key):
        problems.append(("idempotency_key", "Expected a non-empty string"))
    items = body.get("inputs")
    values: dict[str, Any] = {}
    types: dict[str, str] = {}
    if not isinstance(items, list):
        problems.append(("inputs", "Required" if items is None else "Expected an array"))
    else:
        for index, item in enumerate(items):
            _nested_item(index, item, values, types, problems)
    if problems:
        raise validation_error(problems)
    return values, types, key


def _nested_item(
    index: int, item: Any, values: dict[str, Any], types: dict[str, str], problems: Problems
) -> None:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or "value" not in item:
        problems.append((f"inputs[{index}]", "Expected an object with id, type and value"))
        return
    input_id = item["id"]
    kind = normalise_type(item.get("type"))
    if input_id in values:
        problems.append((input_id, "Duplicate input"))
    elif kind is None:
        problems.append((input_id, "Expected type text, imageUrl or videoUrl"))
    else:
        values[input_id], types[input_id] = item["value"], kind


def technique_inputs(
    spec: TechniqueSpec,
    inputs: dict[str, Any],
    media_problem: Callable[[str], str | None],
    sent_types: dict[str, str] | None = None,
) -> dict[str, str]:
    """The inputs checked against the technique's schema; raises one 400 listing every problem.

    Problems name the bare input id, as the reference does (``prompt: Required``). Inputs are
    ``map[unknown]`` in the reference: a number or boolean is taken for a text input (as its
    JSON text); objects, arrays and null are not, and media inputs must be URL or asset strings.
    """
    declared = {field["id"]: field for field in spec.inputs}
    problems: Problems = [(k, "Unknown input") for k in inputs if k not in declared]
    for input_id, field in declared.items():
        name = input_id
        if input_id not in inputs:
            if not field.get("optional"):
                problems.append((name, "Required"))
            continue
        sent = (sent_types or {}).get(input_id, field["type"])
        problem = _value_problem(inputs[input_id], field["type"], sent, media_problem)
        if problem:
            problems.append((name, problem))
    if problems:
        raise validation_error(problems)
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in inputs.items()}


def _value_problem(
    value: Any, declared: str, sent: str, media_problem: Callable[[str], str | None]
) -> str | None:
    if sent != declared:
        return f"Expected type {declared}"
    if declared == "text" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if json.dumps(value) not in ("NaN", "Infinity", "-Infinity") else "Expected a finite number"
    if declared == "text" and isinstance(value, bool):
        return None
    if not isinstance(value, str):
        return "Expected a string" if declared in URL_TYPES else "Expected a string, number or boolean"
    if not value.strip():
        # FIELD: FLORA rejects empty strings even for optional inputs (omit the key instead).
        return "Must not be empty"
    if declared in URL_TYPES:
        if not (is_http_url(value) or value.startswith("asset_")):
            return "Expected an http(s) URL or an asset_ id"
        return media_problem(value)  # an asset (by id or by its URL) must exist and be ready
    return None

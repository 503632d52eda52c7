"""Small typed models parsed tolerantly from FLORA responses.

FLORA's current spec is snake_case, but older pages and SDKs used camelCase (``runId``,
``pollUrl``, ...): every model accepts both, and keeps fields it does not know in ``extra``.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

__all__ = [
    "TERMINAL",
    "Asset",
    "Output",
    "RunStart",
    "RunState",
    "RunStatus",
    "Technique",
    "TechniqueInput",
    "Workspace",
    "parse_timestamp",
    "snake_keys",
]

RunStatus = Literal["pending", "running", "completed", "failed"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed"})

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def _snake(name: str) -> str:
    return _CAMEL.sub(r"_\1", name).lower()


def snake_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys in snake_case (``pollUrl`` -> ``poll_url``); snake_case wins on clashes."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        snake = _snake(key)
        if snake not in out or snake == key:
            out[snake] = value
    return out


def parse_timestamp(value: Any) -> _dt.datetime | None:
    """A FLORA timestamp (unix ms or s as a number, or ISO-8601) as an aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # Unit is undocumented; anything past year 5138 in seconds is really milliseconds.
        seconds = value / 1000.0 if abs(value) > 1e11 else float(value)
        return _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc)
    if isinstance(value, str):
        try:
            parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.timezone.utc)
    return None


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _price(value: Any) -> float | None:
    """A price: a JSON number that is finite and >= 0; anything else is unknown (None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _split(data: Mapping[str, Any], known: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    norm = snake_keys(data)
    extra = {k: v for k, v in norm.items() if k not in known}
    return norm, extra


@dataclass(frozen=True)
class Workspace:
    """A FLORA workspace."""

    workspace_id: str
    name: str = ""
    role: str = ""
    created_at: _dt.datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Workspace:
        d, extra = _split(data, ("workspace_id", "name", "role", "created_at", "id"))
        return cls(
            workspace_id=str(d.get("workspace_id") or d.get("id") or ""),
            name=str(d.get("name") or ""),
            role=str(d.get("role") or ""),
            created_at=parse_timestamp(d.get("created_at")),
            extra=extra,
        )


@dataclass(frozen=True)
class TechniqueInput:
    """An input (or output) field of a technique."""

    id: str
    name: str = ""
    type: str = "text"
    description: str = ""
    optional: bool = False
    allow_multiple: bool = False
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def required(self) -> bool:
        return not self.optional

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> TechniqueInput:
        known = ("id", "name", "type", "description", "optional", "allow_multiple")
        d, extra = _split(data, known)
        return cls(
            id=str(d.get("id") or ""),
            name=str(d.get("name") or d.get("id") or ""),
            type=str(d.get("type") or "text"),
            description=str(d.get("description") or ""),
            optional=bool(d.get("optional", False)),
            allow_multiple=bool(d.get("allow_multiple", False)),
            extra=extra,
        )


@dataclass(frozen=True)
class Technique:
    """A FLORA technique: what it takes, what it makes, what one run costs (USD)."""

    technique_id: str
    name: str = ""
    description: str = ""
    run_cost: float | None = None
    inputs: tuple[TechniqueInput, ...] = ()
    outputs: tuple[TechniqueInput, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def slug(self) -> str | None:
        return self.extra.get("slug")

    @property
    def required_inputs(self) -> tuple[TechniqueInput, ...]:
        return tuple(i for i in self.inputs if i.required)

    def input(self, input_id: str) -> TechniqueInput | None:
        """The input with this id, or None."""
        return next((i for i in self.inputs if i.id == input_id), None)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Technique:
        known = ("technique_id", "id", "name", "description", "run_cost", "inputs", "outputs")
        d, extra = _split(data, known)
        return cls(
            technique_id=str(d.get("technique_id") or d.get("id") or ""),
            name=str(d.get("name") or ""),
            description=str(d.get("description") or ""),
            run_cost=_price(d.get("run_cost")),
            inputs=tuple(TechniqueInput.from_api(i) for i in d.get("inputs") or ()),
            outputs=tuple(TechniqueInput.from_api(o) for o in d.get("outputs") or ()),
            extra=extra,
        )

    def __str__(self) -> str:
        """A readable card: name, ids, cost, then one line per input and the outputs."""
        cost = "cost unknown" if self.run_cost is None else f"${self.run_cost:.4f} per run"
        ids = ", ".join(p for p in (self.technique_id, self.slug) if p)
        lines = [f"{self.name} ({ids}) · {cost}"]
        if self.description:
            lines.append(f"  {self.description}")
        width = max((len(i.id) for i in (*self.inputs, *self.outputs)), default=0)
        lines.append("  inputs:")
        for i in self.inputs:
            need = "required" if i.required else "optional"
            lines.append(f"    {i.id:<{width}}  {i.type:<11} {need:<8}  {i.description}".rstrip())
        lines.append("  outputs:")
        lines += [f"    {o.id:<{width}}  {o.type:<11} {o.description}".rstrip() for o in self.outputs]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self) if cycle else str(self))

    def _repr_html_(self) -> str:
        esc = html.escape
        cost = "unknown" if self.run_cost is None else f"${self.run_cost:.4f}"
        rows = "".join(
            f"<tr><td><code>{esc(i.id)}</code></td><td>{esc(i.type)}</td>"
            f"<td>{'required' if i.required else 'optional'}</td><td>{esc(i.description)}</td></tr>"
            for i in self.inputs
        )
        outs = ", ".join(esc(f"{o.id} ({o.type})") for o in self.outputs)
        return (
            f"<div><b>{esc(self.name)}</b> <code>{esc(self.technique_id)}</code> &middot; {esc(cost)} per run"
            f"<p>{esc(self.description)}</p><table><tr><th>input</th><th>type</th><th></th>"
            f"<th>description</th></tr>{rows}</table><p>outputs: {outs}</p></div>"
        )


@dataclass(frozen=True)
class Output:
    """One output of a run; for ``type == "text"`` FLORA carries the text in ``url``."""

    output_id: str
    type: str
    url: str
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def text(self) -> str | None:
        return self.url if self.type == "text" else None

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Output:
        d, extra = _split(data, ("output_id", "id", "type", "url"))
        return cls(
            output_id=str(d.get("output_id") or d.get("id") or ""),
            type=str(d.get("type") or ""),
            url=str(d.get("url") or ""),
            extra=extra,
        )


def _technique_ref(d: Mapping[str, Any]) -> tuple[str | None, str | None]:
    tech = d.get("technique")
    if isinstance(tech, Mapping):
        t = snake_keys(tech)
        return t.get("technique_id"), t.get("name")
    return d.get("technique_id"), None


@dataclass(frozen=True)
class RunStart:
    """What a start returns: the run's id, a cost quote and where to poll. No status."""

    run_id: str
    type: str = "technique"
    charged_cost: float | None = None
    estimated_seconds: float | None = None
    poll_url: str | None = None
    project_id: str | None = None
    technique_id: str | None = None
    technique_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> RunStart:
        known = ("run_id", "id", "type", "charged_cost", "estimated_seconds", "poll_url",
                 "project_id", "technique")
        d, extra = _split(data, known)
        tech_id, tech_name = _technique_ref(d)
        return cls(
            run_id=str(d.get("run_id") or d.get("id") or ""),
            type=str(d.get("type") or "technique"),
            charged_cost=_float(d.get("charged_cost")),
            estimated_seconds=_float(d.get("estimated_seconds")),
            poll_url=d.get("poll_url") or None,
            project_id=d.get("project_id"),
            technique_id=tech_id,
            technique_name=tech_name,
            extra=extra,
        )


@dataclass(frozen=True)
class RunState:
    """A run as one poll (or one history item) saw it."""

    run_id: str
    status: str
    progress: float = 0.0
    created_at: _dt.datetime | None = None
    started_at: _dt.datetime | None = None
    completed_at: _dt.datetime | None = None
    charged_cost: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    outputs: tuple[Output, ...] = ()
    poll_url: str | None = None
    project_id: str | None = None
    workspace_id: str | None = None
    technique_id: str | None = None
    technique_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> RunState:
        known = ("run_id", "technique_run_id", "id", "status", "progress", "created_at",
                 "started_at", "completed_at", "charged_cost", "error_code", "error_message",
                 "outputs", "poll_url", "project_id", "workspace_id", "technique")
        d, extra = _split(data, known)
        tech_id, tech_name = _technique_ref(d)
        return cls(
            run_id=str(d.get("run_id") or d.get("technique_run_id") or d.get("id") or ""),
            status=str(d.get("status") or "pending").lower(),
            progress=_float(d.get("progress")) or 0.0,
            created_at=parse_timestamp(d.get("created_at")),
            started_at=parse_timestamp(d.get("started_at")),
            completed_at=parse_timestamp(d.get("completed_at")),
            charged_cost=_float(d.get("charged_cost")),
            error_code=d.get("error_code"),
            error_message=d.get("error_message"),
            outputs=tuple(Output.from_api(o) for o in d.get("outputs") or ()),
            poll_url=d.get("poll_url") or None,
            project_id=d.get("project_id"),
            workspace_id=d.get("workspace_id"),
            technique_id=tech_id,
            technique_name=tech_name,
            extra=extra,
        )


@dataclass(frozen=True)
class Asset:
    """An uploaded (or URL-sourced) asset that can be used as a technique input."""

    asset_id: str
    status: str = ""
    url: str = ""
    uploaded_via: str = ""
    workspace_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Asset:
        known = ("asset_id", "id", "status", "url", "uploaded_via", "workspace_id")
        d, extra = _split(data, known)
        return cls(
            asset_id=str(d.get("asset_id") or d.get("id") or ""),
            status=str(d.get("status") or ""),
            url=str(d.get("url") or ""),
            uploaded_via=str(d.get("uploaded_via") or ""),
            workspace_id=d.get("workspace_id"),
            extra=extra,
        )

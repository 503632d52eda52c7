"""Small typed models parsed tolerantly from FLORA responses.

FLORA's current spec is snake_case, but older pages and SDKs used camelCase (``runId``,
``pollUrl``, ...): every model accepts both, and keeps fields it does not know in ``extra``.
"""

from __future__ import annotations

import datetime as _dt
import html
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from ._errors import InvalidResponseError
from ._look import usd
from ._states import TERMINAL

__all__ = [
    "Asset",
    "Output",
    "RunStart",
    "RunState",
    "RunStatus",
    "Technique",
    "TechniqueInput",
    "Workspace",
    "lone_surrogate",
    "parse_timestamp",
    "snake_keys",
    "storable",
]

log = logging.getLogger("flora_nb.models")

RunStatus = Literal["pending", "running", "completed", "failed"]

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
# Half of a UTF-16 pair, alone: JSON may spell one ("\\ud800") and Python keeps it in a str, but no
# UTF-8 text (the ledger, a request body, a file) can hold it. A valid pair is one character once parsed.
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(value: Any) -> str | None:
    """The first lone surrogate in ``value``'s text (in lists and dicts too, keys included), or None."""
    if isinstance(value, str):
        found = None if value.isascii() else _SURROGATE.search(value)
        return found.group() if found else None
    if isinstance(value, Mapping):
        value = [*value.keys(), *value.values()]
    if isinstance(value, (list, tuple)):
        return next((s for s in map(lone_surrogate, value) if s is not None), None)
    return None


def storable(value: Any) -> Any:
    """``value`` with every lone surrogate in its text (in lists and dicts too) made U+FFFD: text UTF-8 holds."""
    if isinstance(value, str):
        return value if value.isascii() else _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [storable(v) for v in value]
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    return value


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


_MAX_SECONDS = 253402300799.0  # 9999-12-31: anything later is not a real timestamp


def _invalid(field: str, problem: str, value: Any) -> InvalidResponseError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return InvalidResponseError(f"FLORA sent a malformed answer: {field} {problem} (got {shown}).", field=field)


def parse_timestamp(value: Any, field: str = "timestamp") -> _dt.datetime | None:
    """A FLORA timestamp (unix ms or s as a number, or ISO-8601) as an aware UTC datetime.

    Raises ``InvalidResponseError`` naming ``field`` for anything else (out of range, NaN, text).
    """
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # Unit is undocumented; anything past year 5138 in seconds is really milliseconds.
        seconds = value / 1000.0 if abs(value) > 1e11 else float(value)
        if not (math.isfinite(seconds) and 0.0 <= seconds <= _MAX_SECONDS):
            raise _invalid(field, "is out of range", value)
        return _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc)
    if isinstance(value, str):
        try:
            parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _invalid(field, "is not a timestamp", value) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.timezone.utc)
    raise _invalid(field, "is not a timestamp", value)


def _float(value: Any) -> float | None:
    """A finite number, or None (tolerant: for figures where unknown is an honest answer)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _price(value: Any) -> float | None:
    """A price: a JSON number that is finite and >= 0; anything else is unknown (None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _charge(value: Any) -> float | None:
    """A charge in USD: anything but a finite number >= 0 is recorded as unknown, never guessed."""
    number = _float(value)
    if number is not None and number >= 0:
        return number
    if value is not None:  # logged, never printed: the flora_nb logger has only a NullHandler
        log.warning("flora_nb: FLORA reported an amount of %r, which is not a finite amount >= 0; it stays unknown",
                    value)
    return None


def _number(d: Mapping[str, Any], name: str, where: str) -> float | None:
    value = d.get(name)
    if value is None:
        return None
    number = _float(value)
    if number is None:
        raise _invalid(f"{where}{name}", "is not a finite number", value)
    return number


def _text(d: Mapping[str, Any], name: str, where: str = "", default: str | None = "") -> str | None:
    """A string field (None when absent); any other type is a malformed answer."""
    value = d.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _invalid(f"{where}{name}", "is not a string", value)
    return storable(value)  # server text is kept, made storable where it is parsed


def _ident(d: Mapping[str, Any], names: tuple[str, ...], where: str, required: bool = True) -> str:
    """An id: a short printable string, from the first of ``names`` present."""
    value = next((d[n] for n in names if d.get(n) not in (None, "")), None)
    field = f"{where}{names[0]}"
    if value is None:
        if required:
            raise _invalid(field, "is missing", None)
        return ""
    if not isinstance(value, str) or len(value) > 256 or not value.isprintable():
        raise _invalid(field, "is not an id", value)
    return value


def _mapping(data: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise _invalid(where, "is not an object", data)
    return data


def _items(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(field, "is not a list", value)
    return value


def _split(data: Any, known: tuple[str, ...], where: str = "answer") -> tuple[dict[str, Any], dict[str, Any]]:
    norm = snake_keys(_mapping(data, where))
    extra = {storable(k): storable(v) for k, v in norm.items() if k not in known}
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
        d, extra = _split(data, ("workspace_id", "name", "role", "created_at", "id"), "workspace")
        return cls(
            workspace_id=_ident(d, ("workspace_id", "id"), "workspace."),
            name=_text(d, "name", "workspace.") or "",
            role=_text(d, "role", "workspace.") or "",
            created_at=parse_timestamp(d.get("created_at"), "workspace.created_at"),
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
    def from_api(cls, data: Mapping[str, Any], where: str = "inputs[]") -> TechniqueInput:
        known = ("id", "name", "type", "description", "optional", "allow_multiple")
        d, extra = _split(data, known, where)
        ident = _ident(d, ("id",), where + ".")
        return cls(
            id=ident,
            name=_text(d, "name", where + ".") or ident,
            type=_text(d, "type", where + ".") or "text",
            description=_text(d, "description", where + ".") or "",
            optional=bool(d.get("optional", False)),
            allow_multiple=bool(d.get("allow_multiple", False)),
            extra=extra,
        )


def _fields(value: Any, name: str) -> tuple[TechniqueInput, ...]:
    return tuple(TechniqueInput.from_api(item, f"{name}[{n}]") for n, item in enumerate(_items(value, name)))


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
        d, extra = _split(data, known, "technique")
        return cls(
            technique_id=_ident(d, ("technique_id", "id"), "technique."),
            name=_text(d, "name", "technique.") or "",
            description=_text(d, "description", "technique.") or "",
            run_cost=_price(d.get("run_cost")),
            inputs=_fields(d.get("inputs"), "inputs"),
            outputs=_fields(d.get("outputs"), "outputs"),
            extra=extra,
        )

    def __str__(self) -> str:
        """A readable card: name, ids, cost, then one line per input and the outputs."""
        cost = f"{usd(self.run_cost)} per run" if self.run_cost is not None else "cost unknown"
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
        cost = "unknown" if self.run_cost is None else usd(self.run_cost)
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
    def from_api(cls, data: Mapping[str, Any], where: str = "outputs[]") -> Output:
        d, extra = _split(data, ("output_id", "id", "type", "url"), where)
        return cls(
            output_id=_ident(d, ("output_id", "id"), where + ".", required=False),
            type=_text(d, "type", where + ".") or "",
            url=_text(d, "url", where + ".") or "",
            extra=extra,
        )


def _technique_ref(d: Mapping[str, Any], where: str) -> tuple[str | None, str | None]:
    tech = d.get("technique")
    if tech is not None:
        t = snake_keys(_mapping(tech, where + "technique"))
        return _ident(t, ("technique_id", "id"), where + "technique.", required=False) or None, \
            _text(t, "name", where + "technique.", None)
    return _ident(d, ("technique_id",), where, required=False) or None, None


def _outputs(value: Any) -> tuple[tuple[Output, ...], tuple[str, ...]]:
    """A run's outputs, and what was wrong with any malformed entry: one bad output never rejects the
    run (its status and charge matter more), it is kept with a marked id or dropped, and said so."""
    kept: list[Output] = []
    problems: list[str] = []
    for n, item in enumerate(_items(value, "outputs")):
        output, problem = _output(item, f"outputs[{n}]")
        if output is not None:
            kept.append(output)
        if problem:
            problems.append(problem)
    return tuple(kept), tuple(problems)


def _output(item: Any, where: str) -> tuple[Output | None, str | None]:
    """One output entry, else the same entry with its id marked (an id is only a label), else nothing."""
    try:
        return Output.from_api(item, where), None
    except InvalidResponseError as exc:
        problem = exc.message
    try:
        d = snake_keys(_mapping(item, where))
        marked = Output.from_api({**d, "output_id": _marked_id(d), "id": None}, where)
    except InvalidResponseError as worse:  # not only its id: nothing of it can be used
        return None, f"{worse.message} That output was dropped."
    return marked, f"{problem} That output was kept as {marked.output_id!r}."


def _marked_id(d: Mapping[str, Any]) -> str:
    """An output's id made printable (U+FFFD for what is not) and short; "" for what is not text at all."""
    value = d.get("output_id") if d.get("output_id") not in (None, "") else d.get("id")
    if not isinstance(value, str):
        return ""
    return "".join(c if c.isprintable() else "\ufffd" for c in value[:256])


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
        d, extra = _split(data, known, "start answer")
        tech_id, tech_name = _technique_ref(d, "")
        return cls(
            run_id=_ident(d, ("run_id", "id"), ""),
            type=_text(d, "type") or "technique",
            charged_cost=_charge(d.get("charged_cost")),
            estimated_seconds=_charge(d.get("estimated_seconds")),
            poll_url=_text(d, "poll_url", default=None) or None,
            project_id=_ident(d, ("project_id",), "", required=False) or None,
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
    problems: tuple[str, ...] = ()  # what was wrong with parts FLORA sent that were dropped or marked
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> RunState:
        known = ("run_id", "technique_run_id", "id", "status", "progress", "created_at",
                 "started_at", "completed_at", "charged_cost", "error_code", "error_message",
                 "outputs", "poll_url", "project_id", "workspace_id", "technique")
        d, extra = _split(data, known, "run")
        tech_id, tech_name = _technique_ref(d, "")
        run_id = _ident(d, ("run_id", "technique_run_id", "id"), "")
        outputs, problems = _outputs(d.get("outputs"))
        if problems:  # logged, never printed: the flora_nb logger has only a NullHandler
            log.warning("flora_nb: run %s: %s", run_id, " ".join(problems))
        return cls(
            run_id=run_id,
            status=(_text(d, "status") or "pending").lower(),
            progress=_number(d, "progress", "") or 0.0,
            created_at=parse_timestamp(d.get("created_at"), "created_at"),
            started_at=parse_timestamp(d.get("started_at"), "started_at"),
            completed_at=parse_timestamp(d.get("completed_at"), "completed_at"),
            charged_cost=_charge(d.get("charged_cost")),
            error_code=_text(d, "error_code", default=None),
            error_message=_text(d, "error_message", default=None),
            outputs=outputs,
            poll_url=_text(d, "poll_url", default=None) or None,
            project_id=_ident(d, ("project_id",), "", required=False) or None,
            workspace_id=_ident(d, ("workspace_id",), "", required=False) or None,
            technique_id=tech_id,
            technique_name=tech_name,
            problems=problems,
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
        d, extra = _split(data, known, "asset")
        return cls(
            asset_id=_ident(d, ("asset_id", "id"), "asset."),
            status=_text(d, "status", "asset.") or "",
            url=_text(d, "url", "asset.") or "",
            uploaded_via=_text(d, "uploaded_via", "asset.") or "",
            workspace_id=_ident(d, ("workspace_id",), "asset.", required=False) or None,
            extra=extra,
        )

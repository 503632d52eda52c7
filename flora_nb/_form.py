"""The ipywidgets form: built from a technique's declared inputs, one small builder per input type.

Follows the shape of ipywidgets' ``interaction.py`` (``widget_from_*``): ``BUILDERS`` maps an
input type to a function that returns a ``FieldWidgets``; replace an entry (or pass
``builders=``) to change how one type is edited. The Run button is disabled while a start is in
flight and re-enabled in ``finally``; every callback shows its errors inside the form.
"""

from __future__ import annotations

import html
import itertools
import json
import math
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import urlsplit

import ipywidgets as w

from ._budget import confirmation_needed
from ._display import STYLE, RunPanel, SweepPanel, usd
from ._errors import APIError, FloraError, InputError
from ._models import Technique, TechniqueInput

if TYPE_CHECKING:
    from ._run import Run
    from ._starts import Starter
    from ._sweep import Sweep

__all__ = ["BUILDERS", "FieldWidgets", "Form", "media_field", "text_field"]

URL_TYPES = ("imageUrl", "videoUrl", "audioUrl", "documentUrl")
ACCEPT = {"imageUrl": "image/*", "videoUrl": "video/*", "audioUrl": "audio/*", "documentUrl": ".pdf,application/pdf"}
DOWNLOADS = "flora_outputs"  # the form's Download button saves here (the demo's folder too)
DOUBLE_CLICK_SECONDS = 1.0  # a second click this soon after a start, with the same inputs, is ignored
MAX_PANELS = 8  # panels kept visible below the form (every run stays in form.runs and the ledger)
# Errors are written for Python callers; the form shows them with its own controls' words instead.
_FORM_TERMS: tuple[tuple[str, str], ...] = (
    (r" \(Flora\(budget=None\)\)", " (connected without a budget)"),
    (r"\bRaise budget=", "Raise the budget"),
    (r",? or use reuse=True\b", ""),  # the form offers reuse itself when these inputs already ran
    (r"\breuse=True would", "reusing them would"),
    (r"(?<![\w.])budget=(?=[,.;\s]|$)", "the budget"),
    (r"pass content_type='image/png' \(or the right type\) or a file_name with its extension",
     "give the file its extension (.png, .jpg ...)"),
)
_CONSTRAINTS = {"specified_aspect_ratio": "aspect ratio {}", "specified_duration": "duration {} s",
                "allow_multiple": "several values allowed", "accepts_element": "accepts an element id"}


@dataclass
class FieldWidgets:
    """The widgets of one input: its value, its vary-mode values, upload, preview and error."""

    spec: TechniqueInput
    value: w.ValueWidget
    values: w.Textarea
    vary: w.ToggleButton
    box: w.VBox
    error: w.HTML
    upload: w.FileUpload | None = None
    preview: w.Box | None = None
    given: list[str] | None = field(default=None)  # values set by Form.vary (may contain newlines)
    uploaded: dict[str, str] = field(default_factory=dict)  # a file's name as the field shows it -> its asset's URL

    @property
    def varying(self) -> bool:
        return bool(self.vary.value)

    def sent(self, value: str) -> str:
        """What a value the field shows sends: an uploaded file's name stands for its asset's URL."""
        return self.uploaded.get(value, value)

    def show_upload(self, name: str | None, url: str) -> str:
        """The name this field shows for an uploaded file (another file of the same name gets " (2)")."""
        base = (name or "").strip().replace("\n", " ") or "uploaded file"
        shown, n = base, 1
        while self.uploaded.get(shown, url) != url:
            n += 1
            shown = f"{base} ({n})"
        self.uploaded[shown] = url
        return shown

    def lines(self) -> list[str]:
        """The vary-mode values: those given to ``Form.vary`` unless edited since, else one per line."""
        if self.given is not None and self.values.value == "\n".join(self.given):
            return list(self.given)
        return [line.strip() for line in self.values.value.splitlines() if line.strip()]


def label_html(spec: TechniqueInput) -> str:
    """Name, "optional" marker, description and constraints (aspect ratio, duration) of an input."""
    esc = html.escape
    marker = "" if spec.required else " <span class='flora-pill'>optional</span>"
    notes = [text.format(spec.extra[k]) for k, text in _CONSTRAINTS.items()
             if spec.extra.get(k) not in (None, False, "")]
    if spec.allow_multiple:
        notes.append(_CONSTRAINTS["allow_multiple"])
    hints = f"<div class='flora-muted'>{esc(spec.description)}</div>" if spec.description else ""
    if notes:
        hints += f"<div class='flora-muted'>{esc(' · '.join(notes))}</div>"
    ident = f" <code>{esc(spec.id)}</code>" if spec.id.lower() != (spec.name or spec.id).lower() else ""
    return f"<div class='flora-label'><b>{esc(spec.name or spec.id)}</b>{ident}{marker}</div>{hints}"


def _shell(spec: TechniqueInput, editor: w.Widget, value: w.ValueWidget, extra: tuple[w.Widget, ...] = (),
           upload: w.FileUpload | None = None, preview: w.Box | None = None) -> FieldWidgets:
    """Wrap an editor in the parts every field shares: label, vary toggle, values area, error."""
    vary = w.ToggleButton(description="vary", tooltip="try several values: one run per value",
                          icon="list", layout=w.Layout(width="76px", height="28px"))
    values = w.Textarea(placeholder="one value per line", rows=3, layout=w.Layout(width="auto", display="none"))
    error = w.HTML(layout=w.Layout(margin="0"))
    head = w.HBox([w.HTML(label_html(spec), layout=w.Layout(flex="1")), vary],
                  layout=w.Layout(justify_content="space-between", align_items="flex-start"))
    box = w.VBox([head, editor, values, *extra, error], layout=w.Layout(margin="0 0 10px 0"))
    box.add_class("flora-field")
    return FieldWidgets(spec, value, values, vary, box, error, upload, preview)


def text_field(spec: TechniqueInput) -> FieldWidgets:
    """``text``: a text area."""
    area = w.Textarea(placeholder="" if spec.description else spec.name, rows=2, layout=w.Layout(width="auto"))
    return _shell(spec, area, area)


def media_field(spec: TechniqueInput) -> FieldWidgets:
    """``imageUrl`` / ``videoUrl`` / ``audioUrl`` / ``documentUrl``: a URL field, an upload button, a preview."""
    url = w.Text(placeholder="https://... or asset_... or upload a file", continuous_update=False,
                 layout=w.Layout(flex="1"))
    upload = w.FileUpload(accept=ACCEPT.get(spec.type, ""), multiple=False, description="Upload",
                          icon="upload", tooltip="choose a file on this computer: it is uploaded to FLORA once",
                          layout=w.Layout(width="auto", min_width="96px"))
    upload.add_class("flora-upload")  # its label reads "Upload", without ipywidgets' file count (FORM_STYLE)
    preview = w.HBox(layout=w.Layout(margin="4px 0 0 0"))
    editor = w.HBox([url, upload], layout=w.Layout(width="auto"))
    return _shell(spec, editor, url, (preview,), upload, preview)


BUILDERS: dict[str, Callable[[TechniqueInput], FieldWidgets]] = {
    "text": text_field, **{t: media_field for t in URL_TYPES},
}


def field_for(spec: TechniqueInput, builders: Mapping[str, Callable[[TechniqueInput], FieldWidgets]]) -> FieldWidgets:
    """The field for one input: its type's builder; unknown types are edited as text."""
    return builders.get(spec.type, builders.get("text", text_field))(spec)


def url_problem(value: str, input_type: str | None = None) -> str | None:
    """What is wrong with a media input value (an http(s) URL, an asset id, or a local file to upload)."""
    from ._files import file_problem, local_path

    if value.startswith("asset_"):
        return None
    parts = urlsplit(value)
    if parts.scheme in ("http", "https") and parts.netloc:
        return None
    path = local_path(value)
    if path is not None:
        return file_problem(path, input_type)  # type and size checked before any request
    return "expected an http(s) URL, an asset_ id, a file on the kernel's machine or an upload"


def input_for_field(name: str, ids: list[str], sent: list[str]) -> str | None:
    """The input a server field error names: ``inputs.prompt``, ``prompt`` or ``inputs[0]`` -> ``prompt``."""
    name = str(name or "")
    rest = name[len("inputs"):] if name.startswith("inputs") else name
    if rest.startswith("["):
        index = rest[1:].split("]", 1)[0]
        return sent[int(index)] if index.isdigit() and int(index) < len(sent) else None
    key = rest.lstrip(".").split(".", 1)[0].split("[", 1)[0]
    return key if key in ids else None


@dataclass
class _Plan:
    """What one click would start: fixed inputs, varied inputs, how many runs."""

    fixed: dict[str, str]
    varied: dict[str, list[str]]
    mode: str
    count: int
    workspace: str | None
    budget: float | None

    @property
    def signature(self) -> str:
        return json.dumps([self.fixed, self.varied, self.mode, self.workspace], sort_keys=True)


class Form(w.VBox):
    """A form for one technique: fill it, vary fields, see the cost, click Run, watch the runs.

    ``fields[input_id]`` is the value widget of each input; ``vary(input_id, values)`` switches a
    field to one run per value; ``run_button``, ``cost_label``, ``runs``, ``sweep``, ``errors``.
    """

    def __init__(self, starter: Starter, technique: str | Technique, *, clock: Callable[[], float] = time.monotonic,
                 builders: Mapping[str, Callable[[TechniqueInput], FieldWidgets]] | None = None):
        self.starter = starter
        self.technique = technique if isinstance(technique, Technique) else starter.technique(technique)
        self.clock = clock
        self.runs: list[Run] = []
        self.sweep: Sweep | None = None
        self.errors: dict[str, str] = {}
        self._parts = {spec.id: field_for(spec, builders or BUILDERS) for spec in self.technique.inputs}
        self.fields: dict[str, w.ValueWidget] = {k: f.value for k, f in self._parts.items()}
        self._last_start: tuple[str, float] | None = None
        self._armed: tuple[str, float] | None = None  # (plan, when): a click above confirm_above asked to confirm
        self._busy = False
        self._build_controls()
        super().__init__([w.HTML(STYLE + FORM_STYLE), self._title(), *[f.box for f in self._parts.values()],
                          self._settings, self.combine, self._run_row, self.message, self.repeat_hint, self.panels])
        self.add_class("flora-form")
        self._wire()
        self._guard(self.refresh)

    # ---------------------------------------------------------------- building

    def _title(self) -> w.HTML:
        tech, esc = self.technique, html.escape
        cost = "cost per run unknown" if tech.run_cost is None else f"{usd(tech.run_cost)} per run"
        return w.HTML(f"<div class='flora-title'><b>{esc(tech.name or tech.technique_id)}</b> "
                      f"<span class='flora-muted'>{esc(cost)} · {esc(tech.technique_id)}</span></div>"
                      f"<div class='flora-muted'>{esc(tech.description)}</div>")

    def _build_controls(self) -> None:
        self.message = w.HTML()
        self.workspace = self._workspace_picker()
        self.budget = w.Text(placeholder="no limit", description="Budget $", continuous_update=True,
                             layout=w.Layout(width="190px"), style={"description_width": "initial"})
        self.budget_error = w.HTML()
        settings = [x for x in (self.workspace, self.budget, self.budget_error) if x is not None]
        self._settings = w.HBox(settings, layout=w.Layout(align_items="center", flex_flow="row wrap"))
        self._settings.add_class("flora-row")
        self.combine = w.ToggleButtons(options=[("every combination", "grid"), ("pair up in order (zip)", "zip")],
                                       value="grid", description="Combine", layout=w.Layout(display="none"),
                                       style={"button_width": "auto"})
        self.run_button = w.Button(description="Run", button_style="primary", icon="play", tooltip="start the run",
                                   layout=w.Layout(width="auto", min_width="110px", flex="none"))
        self.run_button.add_class("flora-run")  # as wide as its words ("Confirm: spend up to $1,250.00"): never cut
        self.cost_label = w.HTML()
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True, layout=w.Layout(width="auto"),
                                    tooltip="stop launching the sweep (runs already on FLORA keep going and are charged)")
        self.download_button = w.Button(description="Download outputs", icon="download", layout=w.Layout(width="auto"),
                                        tooltip=f"save the outputs of this form's runs into ./{DOWNLOADS}/ (beside the notebook)")
        self._run_row = w.HBox([self.run_button, self.stop_button, self.cost_label, self.download_button],
                               layout=w.Layout(align_items="center", flex_flow="row wrap"))
        self.repeat_hint = w.VBox()  # "these inputs already ran": show it / run again (or reuse, for a sweep)
        self._choice: tuple[str, str] | None = None  # (plan signature, "again" | "reuse") the user picked
        self._run_row.add_class("flora-row")
        self.panels = w.VBox(layout=w.Layout(margin="10px 0 0 0"))

    def _workspace_picker(self) -> w.Dropdown | None:
        """A workspace selector, only when the key sees more than one workspace."""
        try:
            spaces = self.starter.workspaces()
        except FloraError as exc:
            self.message.value = _note(f"Could not list workspaces ({exc}); runs go to the session's workspace.")
            return None
        if len(spaces) < 2:
            return None
        try:
            current: str | None = self.starter.workspace_id
        except FloraError:
            current = None  # the user must choose: a wrong workspace spends someone else's credits
        options = [(f"{s.name} ({s.workspace_id})" if s.name else s.workspace_id, s.workspace_id) for s in spaces]
        value = current if current in [o[1] for o in options] else None
        return w.Dropdown(options=options, value=value, description="Workspace", layout=w.Layout(width="320px"),
                          style={"description_width": "initial"})

    def _wire(self) -> None:
        refresh = self._guarded(self.refresh)
        for part in self._parts.values():
            part.value.observe(refresh, names="value")
            part.values.observe(refresh, names="value")
            part.vary.observe(self._guarded(lambda change, p=part: self._toggle(p)), names="value")
            if part.upload is not None:
                part.upload.observe(self._guarded(lambda change, p=part: self._uploaded(p, change)), names="value")
                part.value.observe(self._guarded(lambda change, p=part: self._preview(p)), names="value")
        for control in (self.combine, self.budget, self.workspace):
            if control is not None:
                control.observe(refresh, names="value")
        self.run_button.on_click(self._guarded(lambda _: self.click()))
        self.stop_button.on_click(self._guarded(lambda _: self.stop()))
        self.download_button.on_click(self._guarded(lambda _: self.download()))

    def __repr__(self) -> str:
        # The widget repr lists every child; a terminal (no widgets) gets one readable line instead.
        ids = ", ".join(self._parts) or "no inputs"
        return f"<Form {self.technique.name or self.technique.technique_id} ({ids}): {len(self.runs)} runs started>"

    # ---------------------------------------------------------------- public

    def vary(self, input_id: str, values: list[Any] | None) -> Form:
        """Switch a field to vary mode with these values (one run each); ``None`` switches back."""
        part = self._part(input_id)
        if values is None:
            part.vary.value = False
            return self
        given = [str(v) for v in values]
        if not given:
            raise InputError(f"vary({input_id!r}, ...): give at least one value.")
        part.given = given
        part.values.value = "\n".join(given)
        part.vary.value = True
        self.refresh()
        return self

    def click(self) -> None:
        """What the Run button does (``run_button.click()`` calls this too); errors show in the form."""
        self._guard(self._click)

    # ---------------------------------------------------------------- plan, cost, validation

    def _part(self, input_id: str) -> FieldWidgets:
        if input_id not in self._parts:
            raise InputError(f"{self.technique.name} has no input {input_id!r}; inputs: {', '.join(self._parts)}.")
        return self._parts[input_id]

    def _plan(self) -> tuple[_Plan, dict[str, str], list[str]]:
        """What a click would start, the problems per field, and problems with the form's settings."""
        fixed, varied, problems = {}, {}, {}
        for input_id, part in self._parts.items():
            if part.varying:
                values = [part.sent(v) for v in part.lines()]
                problem = self._values_problem(part, values)
                varied[input_id] = values
            else:
                value = part.sent(str(part.value.value or "").strip())
                problem = self._value_problem(part, value)
                if value:
                    fixed[input_id] = value
            if problem:
                problems[input_id] = problem
        mode = self.combine.value if len(varied) > 1 else "grid"
        count, general = _count(varied, mode)
        budget, budget_problem = self._budget()
        general += [budget_problem] if budget_problem else []
        workspace = self.workspace.value if self.workspace is not None else None
        if self.workspace is not None and workspace is None:
            general.append("Choose a workspace: your key sees several.")
        return _Plan(fixed, varied, mode, count, workspace, budget), problems, general

    @staticmethod
    def _value_problem(part: FieldWidgets, value: str) -> str | None:
        if not value:
            return "Required." if part.spec.required else None
        return url_problem(value, part.spec.type) if part.spec.type in URL_TYPES else None

    @staticmethod
    def _values_problem(part: FieldWidgets, values: list[str]) -> str | None:
        if not values:
            return "Give at least one value, one per line."
        if part.spec.type in URL_TYPES:
            bad = [(n, v, url_problem(v, part.spec.type)) for n, v in enumerate(values, 1)]
            bad = [b for b in bad if b[2]]
            if bad:
                n, v, problem = bad[0]
                return f"line {n} ({v[:40]!r}): {problem}"
        return None

    def _budget(self) -> tuple[float | None, str | None]:
        text = self.budget.value.strip().lstrip("$").strip()
        if not text:
            return None, None
        try:
            budget = float(text)
        except ValueError:
            return None, f"Budget: {self.budget.value!r} is not an amount of dollars (e.g. 1.50)."
        if not math.isfinite(budget) or budget <= 0:
            return None, "Budget: give a positive amount of dollars, or leave it empty for no limit."
        return budget, None

    def refresh(self, *_: Any) -> None:
        """Redraw the cost line, the button's words and the combine switch from the fields."""
        plan, _problems, general = self._plan()
        varying = bool(plan.varied)
        self.combine.layout.display = "" if len(plan.varied) > 1 else "none"
        self.cost_label.value = self._cost_html(plan, general)
        if self._armed is not None and self._armed[0] != plan.signature:
            self._armed = None  # the inputs changed: the price asked about is not this one
        if not self._busy and self._armed is None:
            self.run_button.description = f"Run {plan.count} variations" if varying and plan.count != 1 else "Run"
            self.run_button.tooltip = "start a sweep: one run per variation" if varying else "start the run"
            self.run_button.button_style = "primary"

    def _cost_html(self, plan: _Plan, general: list[str]) -> str:
        price = self.technique.run_cost
        runs = f"{plan.count} run{'s' if plan.count != 1 else ''}"
        total = None if price is None else plan.count * price
        text = f"{runs} · {usd(total) if total is not None else 'cost unknown'}"
        share = ""
        if plan.budget is not None and total is not None:
            used = total / plan.budget
            over = used > 1 + 1e-9
            words = f"over the {usd(plan.budget)} budget" if over else f"{used:.0%} of the {usd(plan.budget)} budget"
            share = f" · <span class='{'flora-error' if over else 'flora-muted'}'>{html.escape(words)}</span>"
        problems = "".join(f"<div class='flora-error'>{html.escape(p)}</div>" for p in general)
        return f"<span class='flora-cost'>{html.escape(text)}</span>{share}{problems}"

    # ---------------------------------------------------------------- clicking

    def _click(self) -> None:
        if self._busy:
            self._say("A start is already in flight; this click was ignored.")
            return
        self._show_errors({})
        plan, problems, general = self._plan()
        if problems or general:
            self._show_errors(problems)
            self._say("Nothing was started: " + "; ".join(
                [f"{self._parts[k].spec.name or k}: {v}" for k, v in problems.items()] + general), error=True)
            return
        now = self.clock()
        if self._last_start and self._last_start[0] == plan.signature and now - self._last_start[1] < DOUBLE_CLICK_SECONDS:
            self._say("Ignored a second click within a second of the last start with the same inputs "
                      "(it would have paid twice). Click again to start another.")
            return
        if not self._new_or_chosen(plan) or not self._confirmed(plan, now):
            return
        self._busy = True
        self.run_button.disabled = True
        self.run_button.description = "Starting…"
        try:
            self._start(plan, now)
        finally:
            self._busy = False
            self.run_button.disabled = False
            self.refresh()

    def _new_or_chosen(self, plan: _Plan) -> bool:
        """Inputs that already completed in this ledger are not paid for again without a choice: a hint
        offers the earlier run ("show it") or a new one ("run again"); for a sweep, reuse or run all."""
        if self._choice is not None and self._choice[0] == plan.signature:
            return True
        tech = self.technique.technique_id
        if plan.varied:
            done = sum(1 for inputs in _variations(plan) if self.starter.completed_before(tech, inputs, plan.workspace))
            if not done:
                return True
            self._offer(f"{done} of {plan.count} variations already completed in this ledger.",
                        [("Reuse them", "reuse"), ("Run all again", "again")], plan)
            return False
        earlier = self.starter.completed_before(tech, plan.fixed, plan.workspace)
        if not earlier:
            return True
        last = earlier[-1]
        when = last.completed_at.strftime("%Y-%m-%d %H:%M UTC") if last.completed_at else "earlier"
        self._offer(f"These inputs already ran: {last.id} ({usd(last.charged_cost)}, {when}).",
                    [("Show it", last), ("Run again", "again")], plan)
        return False

    def _offer(self, text: str, choices: list[tuple[str, Any]], plan: _Plan) -> None:
        buttons = []
        for label, choice in choices:
            button = w.Button(description=label, layout=w.Layout(width="auto"))
            button.on_click(self._guarded(lambda _, c=choice: self._chose(c, plan)))
            buttons.append(button)
        note = w.HTML(f"<span class='flora-note'>{html.escape(text)} Nothing was started.</span>")
        self.repeat_hint.children = (w.HBox([note, *buttons], layout=w.Layout(align_items="center",
                                                                              flex_flow="row wrap")),)

    def _chose(self, choice: Any, plan: _Plan) -> None:
        self.repeat_hint.children = ()
        if not isinstance(choice, str):  # "show it": the earlier run, no new spend
            self._show(RunPanel(choice).widget)
            self._say(f"Showing {choice.id}: nothing was started.", quiet=True)
            return
        self._choice = (plan.signature, choice)
        self.click()

    def download(self) -> list[Any]:
        """Save the outputs of every completed run of this form into ``./flora_outputs/<technique>/``."""
        folder = Path(DOWNLOADS) / (self.technique.slug or self.technique.technique_id)
        done = [r for r in self.runs if r.status == "completed"]
        paths = [p for run in done for p in run.download(folder)]
        self._say(f"Saved {len(paths)} file(s) of {len(done)} run(s) to {folder}/." if paths
                  else "Nothing to download yet: no run of this form has completed.", quiet=not paths)
        return paths

    def stop(self) -> None:
        """Stop launching the form's sweep: queued variations become ``skipped``; says what it leaves."""
        if self.sweep is None:
            self._say("Nothing to stop: no sweep was started from this form.")
            return
        self.sweep.stop(quiet=True)
        self.stop_button.disabled = True
        self._say(self.sweep.stop_summary())

    def _confirmed(self, plan: _Plan, now: float) -> bool:
        """Above ``confirm_above`` the first click shows the price on a confirm button; the next click
        (not a double click) starts. Any change to the inputs takes the question back."""
        why = confirmation_needed(self.technique.name or self.technique.technique_id, plan.count,
                                  self.starter.worst_price(self.technique), self.starter.confirm_above)
        if why is None:
            return True
        if self._armed is not None and self._armed[0] == plan.signature:
            if now - self._armed[1] >= DOUBLE_CLICK_SECONDS:
                return True
            self._say("A double click does not confirm a spend: click the confirm button once more.")
            return False
        self._armed = (plan.signature, now)
        price = self.starter.worst_price(self.technique)
        total = "an unknown amount" if price is None else f"up to {usd(plan.count * price)}"
        self.run_button.description = f"Confirm: spend {total}"
        self.run_button.tooltip = "click again to start; change any field to take it back"
        self.run_button.button_style = "warning"
        self._say(f"{why} Click the button again to start, or change the fields.")
        return False

    def _start(self, plan: _Plan, now: float) -> None:
        try:
            if plan.varied:
                self._start_sweep(plan)
            else:
                self._start_run(plan)
        except APIError as exc:
            self._server_said(exc, plan)
            return
        self._last_start = (plan.signature, now)
        self._armed = self._choice = None

    def _start_run(self, plan: _Plan) -> None:
        price = self.technique.run_cost
        if plan.budget is not None and price is not None and price > plan.budget + 1e-9:
            raise InputError(f"One run costs {usd(price)}, over the budget of {usd(plan.budget)}. "
                             "Nothing was started: raise the budget or clear it.")
        run = self.starter.run(self.technique.technique_id, plan.fixed, workspace=plan.workspace, confirm=True)
        self.runs.append(run)
        self._show(RunPanel(run).widget)
        self._say(f"Started {run.id or 'a run'} · {usd(run.estimated_cost)}.", quiet=True)

    def _start_sweep(self, plan: _Plan) -> None:
        grid, zipped = (None, plan.varied) if plan.mode == "zip" else (plan.varied, None)
        reuse = self._choice == (plan.signature, "reuse")
        sweep = self.starter.sweep(self.technique.technique_id, grid=grid, zip=zipped, fixed=plan.fixed,
                                   budget=plan.budget, workspace=plan.workspace, confirm=True, reuse=reuse)
        self.sweep = sweep
        self.stop_button.disabled = False
        self.runs.extend(sweep.runs)
        self._show(w.VBox([SweepPanel(sweep).widget, sweep.gallery()]))
        self._say(f"Started sweep {sweep.sweep_id}: {len(sweep.runs)} runs.", quiet=True)

    def _server_said(self, exc: APIError, plan: _Plan) -> None:
        """A rejected start: field errors go next to their fields, the rest to the message area."""
        ids = list(self._parts)
        sent = list(plan.fixed)
        placed: dict[str, str] = {}
        loose: list[str] = []
        for item in exc.fields:
            target = input_for_field(item.get("field", ""), ids, sent)
            message = str(item.get("message") or "rejected")
            if target is None:
                loose.append(f"{item.get('field', '?')}: {message}")
            else:
                placed[target] = f"{placed[target]}; {message}" if target in placed else message
        self._show_errors(placed)
        head = f"FLORA refused the start ({exc.code or exc.status}): {exc.message}"
        self._say(" ".join([head, *loose]) + (" See the fields marked above." if placed else ""), error=True)

    # ---------------------------------------------------------------- uploads and previews

    def _toggle(self, part: FieldWidgets) -> None:
        varying = part.varying
        editor = part.box.children[1]
        editor.layout.display = "none" if varying else ""
        part.values.layout.display = "" if varying else "none"
        if varying and not part.values.value.strip() and str(part.value.value or "").strip():
            part.values.value = str(part.value.value).strip()
        if part.upload is not None:
            part.upload.multiple = varying
            part.box.children[1].layout.display = ""  # the upload button stays in vary mode
            part.value.layout.display = "none" if varying else ""
        self.refresh()

    def _uploaded(self, part: FieldWidgets, change: dict[str, Any]) -> None:
        files = list(change.get("new") or ())
        if not files:
            return
        workspace = self.workspace.value if self.workspace is not None else None
        done = []
        try:
            for item in files:
                data = bytes(item["content"])
                asset = self._upload(part, data, item.get("name"), item.get("type") or None, workspace)
                done.append((part.show_upload(item.get("name"), asset.url), data, item.get("name")))
        except FloraError as exc:  # a refused file: say so under its field, and in the message area
            self._show_errors({**self.errors, part.spec.id: f"{item.get('name')}: {exc}"})
            raise
        finally:
            if part.upload is not None:
                part.upload.value = ()  # ready for the next file (the same one again, too)
        self._show_errors({k: v for k, v in self.errors.items() if k != part.spec.id})
        if part.varying:
            part.given = None
            part.values.value = "\n".join(part.lines() + [shown for shown, _, _ in done])
        else:
            part.value.value = done[-1][0]  # the file's name; the run is sent its asset's URL
        if part.preview is not None:  # from the bytes we have: no need for the browser to reach FLORA
            part.preview.children = tuple(preview_widget(part.spec.type, shown, data, name) for shown, data, name in done)
        self._say(f"Uploaded {', '.join(str(name) for _, _, name in done)}.", quiet=True)

    def _upload(self, part: FieldWidgets, data: bytes, name: str | None, content_type: str | None,
                workspace: str | None) -> Any:
        """``fl.upload`` (once per content), checking the file suits this input (an image for imageUrl ...)."""
        return self.starter.upload(data, file_name=name, content_type=content_type, workspace=workspace,
                                           input_type=part.spec.type)

    def _preview(self, part: FieldWidgets, data: bytes | None = None, name: str | None = None) -> None:
        """A thumbnail, a player or a file name once a media field has a value."""
        if part.preview is None:
            return
        url = str(part.value.value or "").strip()
        part.preview.children = (preview_widget(part.spec.type, url, data, name),) if (url or data) else ()

    # ---------------------------------------------------------------- messages

    def _show(self, panel: w.Widget) -> None:
        self.panels.children = (panel, *self.panels.children)[:MAX_PANELS]

    def _show_errors(self, problems: dict[str, str]) -> None:
        self.errors = dict(problems)
        for input_id, part in self._parts.items():
            problem = problems.get(input_id)
            part.error.value = f"<div class='flora-error'>{html.escape(problem)}</div>" if problem else ""

    def _say(self, text: str, error: bool = False, quiet: bool = False) -> None:
        kind = "flora-error" if error else ("flora-muted" if quiet else "flora-note")
        self.message.value = f"<div class='{kind}'>{html.escape(text)}</div>"

    def _guard(self, action: Callable[[], Any]) -> None:
        """Run ``action``; any exception is shown inside the form, never raised into the frontend."""
        try:
            action()
        except FloraError as exc:  # the message says what happened and what to do; no class names
            self._say(in_form_terms(str(exc)), error=True)
        except Exception as exc:  # a bug: say so, with the traceback one click away
            details = html.escape("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
            self.message.value = (f"<div class='flora-error'>Unexpected error: {html.escape(type(exc).__name__)}: "
                                  f"{html.escape(str(exc))}</div><details><summary class='flora-muted'>details"
                                  f"</summary><pre class='flora-muted'>{details}</pre></details>")

    def _guarded(self, action: Callable[..., Any]) -> Callable[..., None]:
        return lambda *args: self._guard(lambda: action(*args))


def _variations(plan: _Plan) -> list[dict[str, str]]:
    """Every input dict a click would start (grid: each combination; zip: pairs in order)."""
    names = list(plan.varied)
    rows = zip(*plan.varied.values()) if plan.mode == "zip" else itertools.product(*plan.varied.values())
    return [{**plan.fixed, **dict(zip(names, row))} for row in rows]


def _count(varied: dict[str, list[str]], mode: str) -> tuple[int, list[str]]:
    """How many runs the varied values make (grid: the product; zip: the common length)."""
    if not varied:
        return 1, []
    lengths = [len(v) for v in varied.values()]
    if mode == "zip":
        if len(set(lengths)) > 1:
            sizes = ", ".join(f"{k}: {len(v)}" for k, v in varied.items())
            return min(lengths), [f"Pairing up in order needs the same number of values in every varied field ({sizes})."]
        return lengths[0], []
    return math.prod(lengths), []


def in_form_terms(text: str) -> str:
    """A message written for Python, with its hints spelled as the form's controls."""
    for pattern, replacement in _FORM_TERMS:
        text = re.sub(pattern, replacement, text)
    return text


def _note(text: str) -> str:
    return f"<div class='flora-muted'>{html.escape(text)}</div>"


def preview_widget(kind: str, url: str, data: bytes | None, name: str | None) -> w.Widget:
    """Uploaded bytes are shown from the kernel; a typed URL is loaded by the browser itself."""
    esc = html.escape
    if data is not None and kind in ("imageUrl", "videoUrl", "audioUrl"):
        cls = {"imageUrl": w.Image, "videoUrl": w.Video, "audioUrl": w.Audio}[kind]
        fmt = (os.path.splitext(name or "")[1].lstrip(".") or {"imageUrl": "png", "videoUrl": "mp4"}.get(kind, "wav"))
        options = {} if cls is w.Image else {"autoplay": False}
        return cls(value=data, format=fmt, layout=w.Layout(max_width="160px", max_height="120px"), **options)
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        src = esc(url, quote=True)
        tag = {"imageUrl": f"<img src='{src}' style='max-width:160px;max-height:120px;border-radius:4px'>",
               "videoUrl": f"<video src='{src}' controls style='max-width:200px;max-height:120px'></video>",
               "audioUrl": f"<audio src='{src}' controls></audio>"}.get(kind)
        if tag:
            return w.HTML(tag)
    label = name or os.path.basename(parts.path) or url
    return w.HTML(f"<span class='flora-muted'>&#128196; {esc(label)}</span>")


FORM_STYLE = """<style>
.flora-form { border: 1px solid var(--jp-border-color2, #e0e0e0); border-radius: 10px; padding: 14px 16px;
  max-width: 760px; background: var(--jp-layout-color1, #fff); color: var(--jp-ui-font-color1, #212121); }
.flora-title { font-size: var(--jp-ui-font-size3, 16px); margin-bottom: 2px; }
.flora-label { font-size: var(--jp-ui-font-size1, 13px); }
.flora-label code { font-size: var(--jp-ui-font-size0, 11px); color: var(--jp-ui-font-color2, #616161);
  background: transparent; }
.flora-pill { font-size: var(--jp-ui-font-size0, 11px); color: var(--jp-ui-font-color2, #616161);
  border: 1px solid var(--jp-border-color1, #bdbdbd); border-radius: 8px; padding: 0 6px; margin-left: 4px; }
.flora-note { color: var(--jp-ui-font-color1, #212121); }
.flora-cost { font-weight: 600; }
.flora-row { gap: 12px; margin: 4px 0; }
.flora-form textarea, .flora-form input[type=text] { border-radius: 6px; }
.flora-form .flora-run { max-width: none; overflow: visible; }
.flora-form .flora-upload.widget-upload { font-size: 0 !important; }
.flora-form .flora-upload.widget-upload > i { font-size: var(--jp-widgets-font-size, 13px); margin-right: 4px; }
.flora-form .flora-upload.widget-upload::after { content: "Upload"; font-size: var(--jp-widgets-font-size, 13px); }
</style>"""

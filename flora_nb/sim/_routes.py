"""The API endpoints under ``/api/v1`` and the public media routes, as FLORA shapes them."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import quote, unquote

from ._accounts import Accounts
from ._assets import (
    MAX_SIGNED_UPLOAD_BYTES,
    MAX_UPLOAD_BYTES,
    PROCESSING_SECONDS,
    Asset,
    AssetStore,
    Part,
    accepted,
    guess_type,
    new_asset_id,
    new_upload_token,
    normalise_type,
    parse_multipart,
)
from ._catalog import Catalog, TechniqueSpec
from ._media import FILE_TYPES, output_digest, render, text_output
from ._pagination import page
from ._responses import (
    DUPLICATE,
    FORBIDDEN,
    INSUFFICIENT_CREDITS,
    INVALID_JSON,
    NOT_FOUND,
    UNKNOWN_ERROR,
    ApiError,
    Response,
    json_response,
    validation_error,
)
from ._state import (
    STATUSES,
    DuplicateIdempotencyKey,
    InsufficientCredits,
    Run,
    StartOrder,
    World,
    to_ms,
)
from ._validation import is_http_url, nested_body, technique_inputs, top_level_body

API_PREFIX = "/api/v1"
STORAGE_PREFIX = "/storage/uploads/"  # where signed uploads go (public: the form's token authorises)
POLL_URL_STYLES = ("runs", "techniques")


@dataclass(frozen=True)
class Call:
    """One authenticated API request as the endpoints see it."""

    path: str
    query: dict[str, str]
    headers: Message
    body: bytes
    grants: tuple[str, ...]

    def json(self) -> Any:
        """The body as JSON, or 400 invalid_json."""
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise ApiError(INVALID_JSON) from None

    def idempotency_key(self) -> str | None:
        """The ``Idempotency-Key`` header, if sent."""
        return self.headers.get("Idempotency-Key") or None

    def require_workspace(self, workspace_id: str) -> None:
        """403 unless this key may use the workspace (unknown workspaces too: no existence leak)."""
        if workspace_id not in self.grants:
            raise ApiError(FORBIDDEN)


Handler = Callable[["Api", Call, dict[str, str]], Response]


@dataclass(frozen=True)
class Route:
    """A method + path template, e.g. ``GET /runs/{run_id}``, and its endpoint."""

    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"


def _route(method: str, template: str, handler: Handler) -> Route:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
    return Route(method, template, re.compile(f"^{regex}$"), handler)


class Api:
    """Endpoints; every method takes a Call and path parameters and returns a Response."""

    def __init__(
        self,
        *,
        world: World,
        catalog: Catalog,
        assets: AssetStore,
        accounts: Accounts,
        cost_lag: float,
        poll_url_style: str,
        asset_processing_seconds: float = PROCESSING_SECONDS,
    ) -> None:
        self.world = world
        self.catalog = catalog
        self.assets = assets
        self.accounts = accounts
        self.cost_lag = cost_lag
        self.poll_url_style = poll_url_style
        self.asset_processing_seconds = asset_processing_seconds  # complete -> ready, before speed
        self.origin = ""

    @property
    def base_url(self) -> str:
        return self.origin + API_PREFIX

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route for an API path (prefix already removed) and its unquoted parameters."""
        path = path.rstrip("/") or "/"
        for route in ROUTES:
            if route.method == method:
                found = route.pattern.match(path)
                if found:
                    return route, {k: unquote(v) for k, v in found.groupdict().items()}
        return None

    # -- workspaces and techniques -------------------------------------------------------

    def list_workspaces(self, call: Call, _: dict[str, str]) -> Response:
        found = (self.accounts.workspace(ws) for ws in call.grants)
        return json_response(200, {"workspaces": [ws.view() for ws in found if ws]})

    def list_techniques(self, call: Call, _: dict[str, str]) -> Response:
        workspace_id = call.query.get("workspace_id")
        if workspace_id:
            call.require_workspace(workspace_id)
        items, meta = page(self.catalog.search(call.query.get("query")), call.query)
        return json_response(200, {"techniques": [spec.view() for spec in items], "meta": meta})

    def get_technique(self, call: Call, params: dict[str, str]) -> Response:
        return json_response(200, self._technique(params["technique_id"]).view())

    def _technique(self, id_or_slug: str) -> TechniqueSpec:
        spec = self.catalog.get(id_or_slug)
        if spec is None:
            raise ApiError(NOT_FOUND)
        return spec

    # -- starting runs -------------------------------------------------------------------

    def start_run(self, call: Call, _: dict[str, str]) -> Response:
        """POST /runs/technique: inputs keyed by id; answers the RunStart shape (no status)."""
        technique_id, workspace_id, raw_inputs = top_level_body(call.json())
        call.require_workspace(workspace_id)
        spec = self._technique(technique_id)
        inputs = technique_inputs(spec, raw_inputs, self._media_problem)
        run = self._start(
            spec,
            workspace_id,
            inputs,
            "POST /runs/technique",
            call.idempotency_key(),
            self._top_level_poll_url(spec),
        )
        return self._created(
            run,
            {
                "run_id": run.run_id,
                "type": "technique",
                "charged_cost": run.quote,
                "estimated_seconds": round(run.estimate if run.estimate is not None else run.duration, 3),
                "poll_url": run.poll_url,
                "project_id": run.project_id,
                "technique": {"name": spec.name, "technique_id": spec.technique_id},
            },
        )

    def start_nested(self, call: Call, params: dict[str, str]) -> Response:
        """POST /techniques/{id}/runs: inputs as [{id, type, value}]; answers a RunStatus."""
        sent_id = params["technique_id"]
        spec = self._technique(sent_id)
        raw_inputs, types, body_key = nested_body(call.json())
        inputs = technique_inputs(spec, raw_inputs, self._media_problem, types)
        workspace_id = call.grants[0]  # the nested route has no workspace_id: the key's own
        base = f"{self.base_url}/techniques/{quote(sent_id, safe='')}/runs/"
        run = self._start(
            spec,
            workspace_id,
            inputs,
            "POST /techniques/{technique_id}/runs",
            call.idempotency_key() or body_key,
            lambda run_id: base + run_id,
        )
        with self.world.lock:
            view = self._status_view(run, run.created_at)
        return self._created(run, view)

    def _top_level_poll_url(self, spec: TechniqueSpec) -> Callable[[str], str]:
        if self.poll_url_style == "techniques":
            base = f"{self.base_url}/techniques/{spec.technique_id}/runs/"
        else:
            base = f"{self.base_url}/runs/"
        return lambda run_id: base + run_id

    def _start(
        self,
        spec: TechniqueSpec,
        workspace_id: str,
        inputs: dict[str, str],
        route: str,
        key: str | None,
        poll_url: Callable[[str], str],
    ) -> Run:
        workspace = self.accounts.workspace(workspace_id)
        project_id = workspace.project_id if workspace else "prj_" + workspace_id[3:]
        order = StartOrder(spec, workspace_id, project_id, inputs, route, key, poll_url)
        try:
            return self.world.start(order)
        except DuplicateIdempotencyKey:
            raise ApiError(DUPLICATE) from None
        except InsufficientCredits:
            raise ApiError(INSUFFICIENT_CREDITS) from None

    def _created(self, run: Run, payload: dict[str, Any]) -> Response:
        # drop_rate: the run exists and its key is stored, but the client never hears back.
        if self.world.chance(self.world.faults.drop_rate):
            return Response(201, drop=True, outcome="dropped")
        if self.world.chance(self.world.faults.error_after_create_rate):
            return ApiError(UNKNOWN_ERROR, outcome="error_after_create").response()
        return json_response(201, payload)

    # -- reading runs --------------------------------------------------------------------

    def get_run(self, call: Call, params: dict[str, str]) -> Response:
        return self._run_response(call, params["run_id"], None)

    def get_nested_run(self, call: Call, params: dict[str, str]) -> Response:
        spec = self._technique(params["technique_id"])
        return self._run_response(call, params["run_id"], spec.technique_id)

    def _run_response(self, call: Call, run_id: str, technique_id: str | None) -> Response:
        with self.world.lock:
            now = self.world.advance()
            run = self.world.get(run_id)
            if run is None or run.workspace_id not in call.grants:
                raise ApiError(NOT_FOUND)
            if technique_id and run.spec.technique_id != technique_id:
                raise ApiError(NOT_FOUND)  # the nested route only answers for the run's technique
            return json_response(200, self._status_view(run, now))

    def list_runs(self, call: Call, _: dict[str, str]) -> Response:
        """GET /technique-runs: newest first, only the key's workspaces, full status per item."""
        keep = self._run_filter(call)
        with self.world.lock:
            now = self.world.advance()
            items, meta = page(self.world.newest_first(keep), call.query)
            listed = [self._list_item(run, now) for run in items]
        return json_response(200, {"technique_runs": listed, "meta": meta})

    def _run_filter(self, call: Call) -> Callable[[Run], bool]:
        query = call.query
        status = query.get("status")
        if status and status not in STATUSES:
            raise validation_error([("status", "Expected one of " + ", ".join(STATUSES))])
        workspace_id = query.get("workspace_id")
        if workspace_id:
            call.require_workspace(workspace_id)
        wanted = query.get("technique_id")
        spec = self.catalog.get(wanted) if wanted else None
        technique_id = spec.technique_id if spec else wanted
        project_id = query.get("project_id")
        grants = set(call.grants)

        def keep(run: Run) -> bool:
            return (
                run.workspace_id in grants
                and (not workspace_id or run.workspace_id == workspace_id)
                and (not status or run.status == status)
                and (not technique_id or run.spec.technique_id == technique_id)
                and (not project_id or run.project_id == project_id)
            )

        return keep

    def _status_view(self, run: Run, now: float) -> dict[str, Any]:
        """RunStatus: optional fields are left out until they have a value."""
        view: dict[str, Any] = {
            "run_id": run.run_id,
            "status": run.status,
            "progress": run.progress_at(now),
            "created_at": to_ms(run.created_at),
            "poll_url": run.poll_url,
        }
        if run.started_at is not None:
            view["started_at"] = to_ms(run.started_at)
        if run.completed_at is not None:
            view["completed_at"] = to_ms(run.completed_at)
            # FIELD: charged_cost is eventually consistent, briefly absent after the end.
            if now >= run.completed_at + self.cost_lag:
                view["charged_cost"] = run.charged_cost()
        if run.status == "failed" and run.failure is not None:
            view["error_code"] = run.failure.code
            view["error_message"] = run.failure.message
        if run.status == "completed":
            view["outputs"] = self._outputs(run)
        return view

    def _list_item(self, run: Run, now: float) -> dict[str, Any]:
        item = self._status_view(run, now)
        item.update(
            project_id=run.project_id,
            workspace_id=run.workspace_id,
            technique_run_id=run.run_id,
            technique={"name": run.spec.name, "technique_id": run.spec.technique_id},
        )
        return item

    def _outputs(self, run: Run) -> list[dict[str, str]]:
        outputs = []
        for field in run.spec.outputs:
            output_id, kind = field["id"], field["type"]
            if kind in FILE_TYPES:
                url = f"{self.origin}/media/{run.run_id}/{output_id}.{FILE_TYPES[kind][0]}"
            else:
                digest = self._digest(run, output_id)
                url = text_output(run.spec.name, run.inputs, digest, output_id)
            outputs.append({"output_id": output_id, "type": kind, "url": url})
        return outputs

    def _digest(self, run: Run, output_id: str) -> bytes:
        return output_digest(self.world.seed, run.spec.technique_id, run.inputs, output_id)

    # -- assets --------------------------------------------------------------------------

    def _media_problem(self, value: str) -> str | None:
        return self.assets.problem(value, self.origin, self.world.clock())

    def create_asset(self, call: Call, _: dict[str, str]) -> Response:
        """POST /assets: multipart with a ``file`` part, JSON naming a public URL, or a signed-url reservation."""
        content_type = call.headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            asset = self._uploaded_asset(call, content_type)
        else:
            asset = self._json_asset(call)
        call.require_workspace(asset.workspace_id)
        key = call.idempotency_key()
        with self.world.lock:
            now = self.world.advance()
            store = self.world.idempotency
            if key and store.seen(asset.workspace_id, "POST /assets", key, now):
                raise ApiError(DUPLICATE)
            self.assets.add(asset)
            if key:
                store.store(asset.workspace_id, "POST /assets", key, now)
        if asset.status == "pending_upload":
            return json_response(201, asset.reservation(self.origin + STORAGE_PREFIX + asset.asset_id))
        return json_response(201, asset.view())

    def _uploaded_asset(self, call: Call, content_type: str) -> Asset:
        parts = parse_multipart(content_type, call.body)
        if parts is None:
            raise validation_error([("body", "Malformed multipart/form-data body")])
        problems = []
        upload = parts.get("file")
        workspace = parts.get("workspace_id")
        if workspace is None or not workspace.text().startswith("ws_"):
            problems.append(("workspace_id", "Required, must start with ws_"))
        if upload is None or upload.file_name is None:
            problems.append(("file", "Required"))
        elif len(upload.data) > MAX_UPLOAD_BYTES:
            problems.append(("file", "File exceeds 4 MB; upload larger files with source \"signed-url\""))
        elif not upload.data:
            problems.append(("file", "File is empty"))
        elif not accepted(_part_type(upload)):
            problems.append(("file", f"Unsupported content type {_part_type(upload)}"))
        if problems or upload is None or workspace is None or upload.file_name is None:
            raise validation_error(problems)
        asset_id = new_asset_id()
        return Asset(asset_id, workspace.text(), "direct", self._asset_url(asset_id, upload.file_name),
                     _part_type(upload), upload.file_name, self.world.clock(), upload.data)

    def _asset_url(self, asset_id: str, file_name: str) -> str:
        return f"{self.origin}/media/assets/{asset_id}/{quote(file_name, safe='')}"

    def _json_asset(self, call: Call) -> Asset:
        body = call.json()
        if not isinstance(body, dict):
            raise validation_error([("body", "Expected an object")])
        problems = []
        source, workspace_id = body.get("source"), body.get("workspace_id")
        if source != "signed-url" and (not isinstance(source, str) or not is_http_url(source)):
            problems.append(("source", "Expected \"signed-url\" or a public http(s) URL"))
        if not isinstance(workspace_id, str) or not workspace_id.startswith("ws_"):
            problems.append(("workspace_id", "Required, must start with ws_"))
        for name in ("content_type", "file_name"):
            if body.get(name) is not None and not isinstance(body[name], str):
                problems.append((name, "Expected string"))
        if problems or not isinstance(source, str) or not isinstance(workspace_id, str):
            raise validation_error(problems)
        if source == "signed-url":
            return self._reserved_asset(body, workspace_id)
        file_name = body.get("file_name") or source.rstrip("/").rsplit("/", 1)[-1] or "asset"
        content = body.get("content_type") or guess_type(file_name)
        return Asset(new_asset_id(), workspace_id, "url", source, content, file_name, self.world.clock(), None)

    def _reserved_asset(self, body: dict[str, Any], workspace_id: str) -> Asset:
        file_name = body.get("file_name") or "upload"
        content = normalise_type(body.get("content_type") or guess_type(file_name))
        if not accepted(content):
            raise validation_error([("content_type", f"Unsupported content type {content}")])
        asset_id = new_asset_id()
        return Asset(asset_id, workspace_id, "signed_url", self._asset_url(asset_id, file_name), content,
                     file_name, self.world.clock(), None, status="pending_upload", token=new_upload_token())

    def complete_asset(self, call: Call, params: dict[str, str]) -> Response:
        """POST /assets/{id}/complete: the bytes are at the signed URL; processing starts."""
        asset = self._visible_asset(call, params["asset_id"])
        with self.assets.lock:
            if asset.status == "pending_upload" and asset.ready_at is None:
                if asset.data is None:
                    raise validation_error([("file", "Nothing was uploaded to this asset's upload URL yet")])
                asset.ready_at = self.world.clock() + self.asset_processing_seconds / self.world.speed
            view = asset.view()
        self.assets.changed(asset)
        return json_response(200, view)

    def get_asset(self, call: Call, params: dict[str, str]) -> Response:
        return json_response(200, self._visible_asset(call, params["asset_id"]).view())

    def _visible_asset(self, call: Call, asset_id: str) -> Asset:
        asset = self.assets.get(asset_id, self.world.clock())
        if asset is None or asset.workspace_id not in call.grants:
            raise ApiError(NOT_FOUND)  # FLORA: missing and inaccessible assets are both 404
        return asset

    # -- storage (public, outside /api/v1: where signed uploads land) -----------------------

    def storage_upload(self, method: str, path: str, headers: Message, body: bytes) -> Response:
        """``POST /storage/uploads/{asset_id}``: a multipart form with the reservation's fields and file."""
        asset = self.assets.get(unquote(path[len(STORAGE_PREFIX):]))
        if method != "POST" or asset is None or asset.uploaded_via != "signed_url":
            raise ApiError(NOT_FOUND)
        parts = parse_multipart(headers.get("Content-Type", ""), body)
        if parts is None or "file" not in parts:
            raise validation_error([("file", "Expected a multipart form with a file part")])
        token = parts.get("token")
        if token is None or not secrets.compare_digest(token.text(), asset.token or ""):
            raise ApiError(FORBIDDEN, message="The upload token does not match this upload URL.")
        data = parts["file"].data
        if len(data) > MAX_SIGNED_UPLOAD_BYTES:
            raise ApiError((413, "payload_too_large", "File exceeds the 50 MB signed upload limit."))
        if not data:
            raise validation_error([("file", "File is empty")])
        with self.assets.lock:
            if asset.status != "pending_upload" or asset.ready_at is not None:
                raise ApiError(FORBIDDEN, message="This upload was completed already.")
            asset.data = data
        self.assets.changed(asset)
        return Response(204)

    # -- media (public, outside /api/v1) -------------------------------------------------

    def media(self, path: str) -> Response:
        """``/media/{run_id}/{output_id}.{ext}`` or ``/media/assets/{asset_id}/{file_name}``."""
        segments = [unquote(s) for s in path.split("/")[2:]]
        if len(segments) == 3 and segments[0] == "assets":
            return self._asset_file(segments[1])
        if len(segments) == 2:
            return self._output_file(segments[0], segments[1])
        raise ApiError(NOT_FOUND)

    def _asset_file(self, asset_id: str) -> Response:
        asset = self.assets.get(asset_id, self.world.clock())
        if asset is None or asset.data is None or asset.status != "ready":
            raise ApiError(NOT_FOUND)
        return Response(200, asset.data, asset.content_type)

    def _output_file(self, run_id: str, file_name: str) -> Response:
        output_id, _, ext = file_name.rpartition(".")
        with self.world.lock:
            self.world.advance()
            run = self.world.get(run_id)
            if run is None or run.status != "completed":
                raise ApiError(NOT_FOUND)
        field = next((f for f in run.spec.outputs if f["id"] == output_id), None)
        kind = field["type"] if field else None
        if kind not in FILE_TYPES or FILE_TYPES[kind][0] != ext:
            raise ApiError(NOT_FOUND)
        lines = tuple(f"{k}: {v}" for k, v in sorted(run.inputs.items()))
        subject = next(iter(run.inputs.values()), "")
        data = render(kind, self._digest(run, output_id), run.spec.name, lines, output_id, subject[:60])
        return Response(200, data, FILE_TYPES[kind][1])


def _part_type(part: Part) -> str:
    # Clients often label every file octet-stream; the file name says more then.
    sent = (part.content_type or "").split(";")[0].strip()
    if sent and sent != "application/octet-stream":
        return sent
    return guess_type(part.file_name or "")


ROUTES = (
    _route("GET", "/workspaces", Api.list_workspaces),
    _route("GET", "/techniques", Api.list_techniques),
    _route("GET", "/techniques/{technique_id}", Api.get_technique),
    _route("POST", "/techniques/{technique_id}/runs", Api.start_nested),
    _route("GET", "/techniques/{technique_id}/runs/{run_id}", Api.get_nested_run),
    _route("POST", "/runs/technique", Api.start_run),
    _route("GET", "/runs/{run_id}", Api.get_run),
    _route("GET", "/technique-runs", Api.list_runs),
    _route("POST", "/assets", Api.create_asset),
    _route("GET", "/assets/{asset_id}", Api.get_asset),
    _route("POST", "/assets/{asset_id}/complete", Api.complete_asset),
)

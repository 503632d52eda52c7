"""FloraClient: the only place in flora_nb that speaks HTTP to FLORA."""

from __future__ import annotations

import email.utils
import logging
import math
import mimetypes
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

from ._errors import (
    DEFAULT_CODES,
    APIError,
    ConfigError,
    FloraConnectionError,
    FloraError,
    FloraTimeout,
    IdempotencyDuplicateError,
    InputError,
    NotFoundError,
    RateLimitError,
    UnsafeURLError,
    error_for_status,
)
from ._models import Asset, RunStart, RunState, Technique, Workspace
from ._throttle import Throttle
from ._version import __version__

__all__ = ["DEFAULT_BASE_URL", "FloraClient", "new_idempotency_key", "setting"]

log = logging.getLogger("flora_nb.client")

DEFAULT_BASE_URL = "https://app.flora.ai/api/v1"
DEFAULT_TIMEOUT = (5.0, 60.0)  # (connect, read) seconds, per attempt
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
_RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
_PAGE_LIMIT = 100


def setting(value: str | None, env: str, default: str | None = None) -> str | None:
    """Argument, then environment variable, then default; blank values count as unset."""
    for candidate in (value, os.environ.get(env)):
        if candidate is not None and str(candidate).strip():
            return str(candidate).strip()
    return default


def new_idempotency_key() -> str:
    """A fresh key for one logical start; reuse it for every retry of that start."""
    return f"flora_nb-{uuid.uuid4().hex}"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


class FloraClient:
    """A thread-safe FLORA REST client: retries, idempotent starts, one rate limiter, typed errors.

    Settings come from the arguments, then ``FLORA_API_KEY`` / ``FLORA_BASE_URL``, then defaults.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        max_retry_wait: float = 60.0,
        rate_limit: float | None = None,
        session: requests.Session | None = None,
    ):
        key = setting(api_key, "FLORA_API_KEY")
        if not key:
            raise ConfigError(
                "No FLORA API key. Set the FLORA_API_KEY environment variable, pass api_key=..., "
                "or use the offline simulator (flora_nb.Flora.simulated() / python -m flora_nb sim)."
            )
        if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
            raise ConfigError(
                "The FLORA API key contains spaces, line breaks or other characters a key never has; "
                "copy it again (the key itself is not shown here)."
            )
        self.__key = key
        self.base_url = self._check_base_url(setting(base_url, "FLORA_BASE_URL", DEFAULT_BASE_URL))
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        self.max_retry_wait = float(max_retry_wait)
        self.throttle = Throttle(rate_limit)
        self._session = session or self._new_session()
        self._origin = _origin(self.base_url)

    @staticmethod
    def _check_base_url(url: str | None) -> str:
        parts = urlsplit(url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"FLORA base URL must be an http(s) URL such as {DEFAULT_BASE_URL!r}; got {url!r}.")
        return (url or "").rstrip("/")

    @staticmethod
    def _new_session() -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # never pick up ~/.netrc credentials or proxies for FLORA
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update({"User-Agent": f"flora_nb/{__version__}", "Accept": "application/json"})
        return session

    def __repr__(self) -> str:
        return f"FloraClient(base_url={self.base_url!r}, api_key=<hidden>)"

    __str__ = __repr__

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def __enter__(self) -> FloraClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- resources

    def workspaces(self) -> list[Workspace]:
        """Every workspace this key can see (the endpoint is not paginated)."""
        body = self.request("GET", "/workspaces")
        return [Workspace.from_api(w) for w in body.get("workspaces") or []]

    def techniques(self, query: str | None = None, workspace_id: str | None = None) -> Iterator[Technique]:
        """Every technique in the catalog (optionally searched), one page at a time."""
        params = {"query": query, "workspace_id": workspace_id}
        for item in self.paginate("/techniques", "techniques", params):
            yield Technique.from_api(item)

    def technique(self, id_or_slug: str) -> Technique:
        """One technique by ``tech_`` id or slug."""
        if not id_or_slug or not str(id_or_slug).strip():
            raise InputError("technique id or slug is empty; list them with techniques().")
        return Technique.from_api(self.request("GET", f"/techniques/{_segment(id_or_slug)}"))

    def start_technique_run(
        self,
        technique_id: str,
        workspace_id: str,
        inputs: Mapping[str, Any],
        idempotency_key: str | None = None,
    ) -> RunStart:
        """Start one technique run (``POST /runs/technique``); safe to retry with the same key."""
        body = {"technique_id": technique_id, "workspace_id": workspace_id, "inputs": dict(inputs)}
        key = idempotency_key or new_idempotency_key()
        return RunStart.from_api(self.request("POST", "/runs/technique", json=body, idempotency_key=key))

    def get_run(self, run_id: str, poll_url: str | None = None) -> RunState:
        """The run's current state, from its ``poll_url`` when known, else ``/runs/{run_id}``."""
        fallback = f"/runs/{_segment(run_id)}"
        if not poll_url:
            return RunState.from_api(self.request("GET", fallback))
        if _origin(poll_url) != self._origin:
            raise UnsafeURLError(
                f"Refusing to poll {urlsplit(poll_url).netloc!r}: it is not the origin of the "
                f"base URL ({self.base_url}), so the API key would leak. Poll by run id instead."
            )
        try:
            return RunState.from_api(self.request("GET", poll_url))
        except NotFoundError:
            if self._absolute(fallback) == poll_url:
                raise
            return RunState.from_api(self.request("GET", fallback))

    def technique_runs(self, page_size: int = _PAGE_LIMIT, **filters: Any) -> Iterator[RunState]:
        """Technique run history, newest first, across all pages (stop iterating to stop paging).

        Filters: ``workspace_id``, ``project_id``, ``technique_id``, ``status``.
        """
        params = {k: v for k, v in filters.items() if v is not None}
        params["limit"] = page_size
        for item in self.paginate("/technique-runs", "technique_runs", params):
            yield RunState.from_api(item)

    def create_asset(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        data: bytes | None = None,
        workspace_id: str,
        content_type: str | None = None,
        file_name: str | None = None,
        idempotency_key: str | None = None,
    ) -> Asset:
        """One ``POST /assets``: a local file or bytes (multipart, up to 4 MB) or a public URL."""
        if sum(x is not None for x in (path, url, data)) != 1:
            raise InputError("create_asset takes exactly one of a local file path, data=bytes or url=...")
        key = idempotency_key or new_idempotency_key()
        if url is not None:
            body = {"source": url, "workspace_id": workspace_id, "content_type": content_type,
                    "file_name": file_name}
            body = {k: v for k, v in body.items() if v is not None}
            return Asset.from_api(self.request("POST", "/assets", json=body, idempotency_key=key))
        if data is None:
            data, file_name, content_type = _read_upload(Path(path), file_name, content_type)  # type: ignore[arg-type]
        if len(data) > MAX_UPLOAD_BYTES:
            raise InputError(f"{file_name or 'the data'} is {len(data) / 1024 / 1024:.1f} MB; a direct upload takes "
                             "up to 4 MB. Use upload_asset(), which takes the signed-URL route for larger files.")
        files = {"file": (file_name or "upload", data, content_type or "application/octet-stream")}
        form = {"workspace_id": workspace_id}
        return Asset.from_api(self.request("POST", "/assets", files=files, data=form, idempotency_key=key))

    def upload_asset(self, data: bytes, *, file_name: str, content_type: str, workspace_id: str,
                     poll_interval: float = 1.0, poll_timeout: float = 120.0,
                     sleep: Callable[[float], None] = time.sleep,
                     clock: Callable[[], float] = time.monotonic) -> Asset:
        """Upload bytes as an asset: multipart up to 4 MB, else the signed-URL flow; returns it ready."""
        if len(data) <= MAX_UPLOAD_BYTES:
            asset = _once_more_if_duplicate(lambda: self.create_asset(
                data=data, file_name=file_name, content_type=content_type, workspace_id=workspace_id))
        else:
            asset = _once_more_if_duplicate(lambda: self.reserve_asset_upload(
                workspace_id=workspace_id, content_type=content_type, file_name=file_name))
            self.send_asset_bytes(asset, data, file_name=file_name, content_type=content_type)
            asset = self.complete_asset(asset.asset_id)
        if asset.status == "ready":
            return asset
        return self.wait_for_asset(asset.asset_id, interval=poll_interval, timeout=poll_timeout,
                                   sleep=sleep, clock=clock)

    def reserve_asset_upload(self, *, workspace_id: str, content_type: str, file_name: str,
                             idempotency_key: str | None = None) -> Asset:
        """``POST /assets {source: "signed-url"}``: an asset ``pending_upload`` with its upload target."""
        body = {"source": "signed-url", "workspace_id": workspace_id, "content_type": content_type,
                "file_name": file_name}
        key = idempotency_key or new_idempotency_key()
        return Asset.from_api(self.request("POST", "/assets", json=body, idempotency_key=key))

    def send_asset_bytes(self, asset: Asset, data: bytes, *, file_name: str, content_type: str) -> None:
        """Upload the bytes to a reserved asset's signed URL (storage: never sent the API key)."""
        target = asset.extra.get("upload") or {}
        url = target.get("url") if isinstance(target, dict) else None
        if not url:
            raise APIError(f"FLORA reserved asset {asset.asset_id} without an upload URL; try the upload again.",
                           status=200, code="invalid_response")
        fields = target.get("form_fields") or {}
        form = {str(k): str(v) for k, v in fields.items()} if isinstance(fields, dict) else {}
        files = {str(target.get("file_field") or "file"): (file_name, data, content_type)}
        kwargs = {"files": files, "data": form, "auth": _without_key}
        # A signed URL carries its own authorisation; the API key must not travel with it, even
        # when storage shares FLORA's origin (as in the simulator).
        response = self._send_with_retries(str(target.get("method") or "POST"), url, kwargs,
                                           idempotency_key=None, throttled=False)
        if response.status_code >= 300:
            raise APIError(f"uploading the bytes of asset {asset.asset_id} failed: HTTP {response.status_code} "
                           f"{_snippet(response.text)}", status=response.status_code, code="upload_failed",
                           request_id=response.headers.get("request-id"))

    def complete_asset(self, asset_id: str, idempotency_key: str | None = None) -> Asset:
        """``POST /assets/{id}/complete``: the bytes are at the signed URL; FLORA processes them."""
        key = idempotency_key or new_idempotency_key()
        return Asset.from_api(self.request("POST", f"/assets/{_segment(asset_id)}/complete", idempotency_key=key))

    def wait_for_asset(self, asset_id: str, *, interval: float = 1.0, timeout: float = 120.0,
                       sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.monotonic) -> Asset:
        """Poll ``GET /assets/{id}`` until ``ready`` (as FLORA's SDK: every 1 s, up to 120 s)."""
        deadline = clock() + timeout
        while True:
            asset = self.get_asset(asset_id)
            if asset.status == "ready":
                return asset
            if asset.status == "failed":
                reason = asset.extra.get("failure_message") or "no reason given"
                raise FloraError(f"FLORA could not process asset {asset_id}: {reason}. Check the file opens "
                                 "and matches its type, then upload it again.")
            if clock() >= deadline:
                raise FloraTimeout(f"asset {asset_id} is still {asset.status or 'not ready'} after {timeout:g} s; "
                                   "look at it later with get_asset(), or upload again.")
            sleep(interval)

    def get_asset(self, asset_id: str) -> Asset:
        """One asset by id."""
        return Asset.from_api(self.request("GET", f"/assets/{_segment(asset_id)}"))

    def fetch_media(self, url: str) -> bytes:
        """The bytes of an output or asset URL; the key is sent only to the base URL's origin."""
        response = self._send_with_retries("GET", url, {}, idempotency_key=None, throttled=False)
        if response.status_code >= 400:
            self._raise_for(response)
        return response.content

    # ----------------------------------------------------------------- plumbing

    def paginate(self, path: str, items_key: str, params: Mapping[str, Any] | None = None) -> Iterator[dict]:
        """Follow ``meta.next_cursor`` page by page, yielding raw items."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        while True:
            body = self.request("GET", path, params=query)
            items = body.get(items_key) or []
            yield from items
            meta = body.get("meta") or {}
            cursor = meta.get("next_cursor") or meta.get("nextCursor")
            if not items or not cursor:
                return
            query = {**query, "cursor": cursor}

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        files: Any = None,
        data: Any = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Send one API request (with retries) and return its JSON body; raise on errors."""
        kwargs = {"params": params, "json": json, "files": files, "data": data}
        url = self._absolute(path_or_url)
        response = self._send_with_retries(method, url, kwargs, idempotency_key=idempotency_key)
        if response.status_code >= 400:
            self._raise_for(response)
        return self._json_body(response)

    def _absolute(self, path_or_url: str) -> str:
        if "://" in path_or_url:
            return path_or_url
        return self.base_url + "/" + path_or_url.lstrip("/")

    def _headers(self, url: str, idempotency_key: str | None, attempt: int) -> dict[str, str]:
        headers = {"X-Flora-Retry-Count": str(attempt)}
        if _origin(url) == self._origin:
            headers["Authorization"] = f"Bearer {self.__key}"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def _send_with_retries(
        self, method: str, url: str, kwargs: dict, *, idempotency_key: str | None, throttled: bool = True
    ) -> requests.Response:
        # A POST is only safe to repeat because the server dedupes it by its idempotency key.
        retryable = method.upper() in ("GET", "HEAD") or bool(idempotency_key)
        attempt, unanswered = 0, False
        while True:
            if throttled:
                self.throttle.acquire()
            try:
                response = self._send_once(method, url, kwargs, idempotency_key, attempt)
            except (FloraConnectionError, FloraTimeout) as exc:
                if not retryable or attempt >= self.max_retries:
                    raise
                unanswered = True
                wait = self._backoff(attempt)
                log.info("flora_nb: %s %s failed (%s); retry %d in %.2fs", method, _path(url), type(exc).__name__, attempt + 1, wait)
            else:
                # An attempt that got no answer may have been acted on: the final error must say so.
                response.flora_unanswered_attempt = unanswered  # type: ignore[attr-defined]
                if response.status_code not in _RETRY_STATUSES or not retryable or attempt >= self.max_retries:
                    return response
                wait = self._retry_wait(response, attempt)
                log.info("flora_nb: %s %s -> %d; retry %d in %.2fs", method, _path(url), response.status_code, attempt + 1, wait)
                if response.status_code == 429 and throttled:
                    self.throttle.pause(wait)  # every thread of this client holds off, not just this one
                    wait = 0.0
            time.sleep(wait)
            attempt += 1

    def _send_once(self, method: str, url: str, kwargs: dict, idempotency_key: str | None, attempt: int):
        headers = self._headers(url, idempotency_key, attempt)
        try:
            response = self._session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
        except requests.Timeout:
            raise FloraTimeout(f"{method} {_path(url)} timed out after {self.timeout} s") from None
        except requests.RequestException as exc:
            # Refused, reset, dropped, or a body cut off mid-transfer: no usable answer. The
            # exception text is not reused, since some requests errors quote the headers.
            raise FloraConnectionError(f"{method} {_path(url)}: no answer from {_netloc(url)} ({_reason(exc)})") from None
        log.debug("flora_nb: %s %s -> %d (%s)", method, _path(url), response.status_code, response.headers.get("request-id", "-"))
        return response

    def _backoff(self, attempt: int) -> float:
        return min(0.5 * 2**attempt, 8.0) * random.uniform(0.75, 1.0)

    def _retry_wait(self, response: requests.Response, attempt: int) -> float:
        server = _server_wait(response.headers)
        if server is None:
            return self._backoff(attempt)
        return min(max(server, 0.0), self.max_retry_wait)

    def _json_body(self, response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise APIError(
                f"expected JSON from FLORA, got {response.headers.get('content-type', 'no content type')}: "
                f"{_snippet(response.text)}",
                status=response.status_code, code="invalid_response",
                request_id=response.headers.get("request-id"),
            ) from None
        if not isinstance(body, dict):
            raise APIError("expected a JSON object from FLORA", status=response.status_code,
                           code="invalid_response", request_id=response.headers.get("request-id"))
        return body

    def _raise_for(self, response: requests.Response) -> None:
        code, message, fields = _parse_envelope(response)
        cls = error_for_status(response.status_code, code)
        error = cls(
            message.replace(self.__key, "<hidden>"),
            status=response.status_code,
            code=code or DEFAULT_CODES.get(response.status_code, "unknown_error"),
            fields=fields,
            request_id=response.headers.get("request-id"),
        )
        if isinstance(error, RateLimitError):
            error.retry_after = _server_wait(response.headers)
        error.unanswered_attempt = bool(getattr(response, "flora_unanswered_attempt", False))
        raise error


# --------------------------------------------------------------------- helpers


def _once_more_if_duplicate(create: Callable[[], Asset]) -> Asset:
    """Create an asset; on ``idempotency_duplicate`` (an earlier attempt's answer was lost) create it anew.

    Unlike a run, an asset costs nothing: a second one (leaving the unheard-of first unused) is
    better than failing an upload the user has to repeat by hand.
    """
    try:
        return create()
    except IdempotencyDuplicateError:
        log.info("flora_nb: an asset create was a duplicate (its first answer was lost); creating it anew")
        return create()


def _without_key(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """A requests auth hook that drops ``Authorization`` (for signed storage URLs)."""
    request.headers.pop("Authorization", None)
    return request


def _segment(value: str) -> str:
    return quote(str(value).strip(), safe="")


def _path(url: str) -> str:
    return urlsplit(url).path or "/"


def _netloc(url: str) -> str:
    return urlsplit(url).netloc


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("RemoteDisconnected", "Connection refused", "Connection reset", "Connection aborted",
                   "IncompleteRead", "Connection broken"):
        if marker in text:
            return marker
    return type(exc).__name__


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join((text or "").split())
    return repr(text[:limit] + ("..." if len(text) > limit else "")) if text else "an empty body"


def _parse_envelope(response: requests.Response) -> tuple[str | None, str, list[dict[str, str]]]:
    try:
        body = response.json()
    except ValueError:
        reason = response.reason or "error"
        return None, f"HTTP {response.status_code} {reason} with a non-JSON body: {_snippet(response.text)}", []
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, f"HTTP {response.status_code} with an unexpected body: {_snippet(response.text)}", []
    fields = [f for f in error.get("fields") or [] if isinstance(f, dict)]
    message = str(error.get("message") or response.reason or "error")
    return error.get("code"), message, fields


def _server_wait(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms`` first, then ``Retry-After``.

    Values that are not finite numbers or HTTP dates are ignored (backoff applies instead).
    """
    ms = _finite(headers.get("retry-after-ms"))
    if ms is not None and ms > 0:  # 0 and NaN fall through, as in FLORA's SDK
        return ms / 1000.0
    after = headers.get("retry-after")
    seconds = _finite(after)
    if seconds is None and after:
        try:
            seconds = email.utils.parsedate_to_datetime(after).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            seconds = None
    if seconds is None:
        return 0.0 if ms == 0 else None
    return seconds


def _finite(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _read_upload(path: Path, file_name: str | None, content_type: str | None) -> tuple[bytes, str, str]:
    if not path.is_file():
        raise InputError(f"{str(path)!r} is not a file; pass the path of an image, video, audio or PDF file.")
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise InputError(
            f"{path.name} is {size / 1e6:.1f} MB; a direct upload takes up to 4 MB. Use upload_asset() "
            "(or Flora.upload()), which sends larger files through FLORA's signed-URL flow."
        )
    ctype = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.read_bytes(), file_name or path.name, ctype

"""FloraClient: the only place in flora_nb that speaks HTTP to FLORA."""

from __future__ import annotations

import email.utils
import functools
import json
import logging
import math
import mimetypes
import os
import random
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, TypeVar
from urllib.parse import quote, urljoin, urlsplit

import requests
from urllib3 import exceptions as urllib3_errors
from urllib3.util import parse_url

from ._clock import ClockOffset, date_seconds
from ._errors import (
    DEFAULT_CODES,
    APIError,
    ConfigError,
    FloraConnectionError,
    FloraError,
    FloraTimeout,
    IdempotencyDuplicateError,
    InputError,
    InvalidResponseError,
    NotFoundError,
    RateLimitError,
    UnsafeURLError,
    error_for_status,
)
from ._models import Asset, RunStart, RunState, Technique, Workspace
from ._throttle import Throttle
from ._transport import Deadline, DeadlineAdapter
from ._version import __version__

__all__ = ["DEFAULT_BASE_URL", "FloraClient", "new_idempotency_key", "setting"]

log = logging.getLogger("flora_nb.client")

DEFAULT_BASE_URL = "https://app.flora.ai/api/v1"
DEFAULT_TIMEOUT = (5.0, 60.0)  # (connect, read) seconds, per socket operation
DEFAULT_DEADLINE = 90.0  # seconds for a whole attempt (connect, headers and every body byte)
POLL_DEADLINE = 30.0  # polls and history pages: shorter, so the poller is never held long
MEDIA_DEADLINE = 600.0
MAX_UPLOAD_BYTES = 4 * 1024 * 1024
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # no FLORA answer is near this; a bigger one is not FLORA
MAX_MEDIA_BYTES = 4 * 1024**3
MAX_PAGES = 1000  # 100,000 runs of history at 100 a page
MAX_LISTING_SECONDS = 300.0  # one listing, all its pages: a server that pages on and on is stopped
# How list items are told apart when a page may repeat earlier ones (anything else: by its whole JSON).
_ITEM_IDS = ("run_id", "technique_id", "asset_id", "workspace_id", "id")
MAX_REDIRECTS = 5  # media only: API calls never follow a redirect
HIDDEN = "<hidden>"
_RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
_PAGE_LIMIT = 100
_T = TypeVar("_T")


def setting(value: str | None, env: str, default: str | None = None) -> str | None:
    """Argument, then environment variable, then default; blank values count as unset."""
    for candidate in (value, os.environ.get(env)):
        if candidate is not None and str(candidate).strip():
            return str(candidate).strip()
    return default


def new_idempotency_key() -> str:
    """A fresh key for one logical start; reuse it for every retry of that start."""
    return f"flora_nb-{uuid.uuid4().hex}"


_DEFAULT_PORTS = {"http": 80, "https": 443}


@functools.lru_cache(maxsize=2048)  # URLs repeat (routes, poll URLs); parsing twice per request is not free
def _origin(url: str) -> tuple[str, str, int | None]:
    """The (scheme, host, port) a request to ``url`` connects to.

    Read by the parser that opens the connection (requests' URL preparation, then urllib3's
    ``parse_url``) and by ``urlsplit``; a URL the two read differently, or one with userinfo,
    whitespace, backslashes or non-ASCII characters, is refused: such URLs are how a key is
    sent to a host the origin check never saw.
    """
    if not _plain(url):
        raise UnsafeURLError(f"Refusing the URL {_shown_url(url)}: it has spaces, backslashes or non-ASCII "
                             "characters that URL parsers read differently.")
    try:
        prepared = requests.models.PreparedRequest()
        prepared.prepare_url(url, None)
        seen, split = parse_url(prepared.url or ""), urlsplit(url)
        mine = (split.scheme.lower(), (split.hostname or "").lower(), split.port)
    except (ValueError, requests.RequestException) as exc:
        raise UnsafeURLError(f"Refusing the URL {_shown_url(url)}: {type(exc).__name__}.") from None
    theirs = ((seen.scheme or "").lower(), (seen.host or "").strip("[]").lower(), seen.port)
    if "@" in split.netloc or seen.auth:
        raise UnsafeURLError(f"Refusing the URL {_shown_url(url)}: it carries a user name (userinfo).")
    mine = (mine[0], mine[1], mine[2] or _DEFAULT_PORTS.get(mine[0]))
    theirs = (theirs[0], theirs[1], theirs[2] or _DEFAULT_PORTS.get(theirs[0]))
    if mine != theirs or mine[0] not in _DEFAULT_PORTS or not mine[1]:
        raise UnsafeURLError(f"Refusing the URL {_shown_url(url)}: URL parsers disagree on where it points.")
    return mine


def _plain(url: object) -> bool:
    """ASCII and printable, without whitespace or backslashes: nothing URL parsers disagree on."""
    return (isinstance(url, str) and url.isascii() and url.isprintable()
            and not any(c.isspace() or c == "\\" for c in url))


def _shown_url(url: Any) -> str:
    text = repr(url)
    return text if len(text) <= 120 else text[:117] + "..."


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
        deadline: float = DEFAULT_DEADLINE,
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
        self.deadline = float(deadline)
        self.poll_deadline = min(self.deadline, POLL_DEADLINE)
        self.max_pages = MAX_PAGES
        self.max_listing_seconds = MAX_LISTING_SECONDS
        self.max_answer_bytes = MAX_ANSWER_BYTES
        self.invalid_answers = 0  # malformed items skipped in list pages (shown by Flora.status())
        self.last_invalid: str | None = None
        self._local = threading.local()
        self._inflight: dict[int, Deadline] = {}
        self._inflight_lock = threading.Lock()
        self.max_retries = max(0, int(max_retries))
        self.max_retry_wait = float(max_retry_wait)
        self.throttle = Throttle(rate_limit)
        self.clock = ClockOffset()  # the server's clock against ours, learnt from every answer's Date
        self._session = session or self._new_session()
        self._origin = _origin(self.base_url)

    def move_to(self, base_url: str) -> None:
        """Send later requests to ``base_url`` (a shared simulator that had to restart on another port)."""
        url = self._check_base_url(base_url)
        self.base_url, self._origin = url, _origin(url)

    @staticmethod
    def _check_base_url(url: str | None) -> str:
        try:
            _origin(url or "")
        except UnsafeURLError:
            raise ConfigError(
                f"FLORA base URL must be an http(s) URL such as {DEFAULT_BASE_URL!r}; got {url!r}.") from None
        return (url or "").rstrip("/")

    @staticmethod
    def _new_session() -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # never pick up ~/.netrc credentials or proxies for FLORA
        adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update({"User-Agent": f"flora_nb/{__version__}", "Accept": "application/json"})
        return session

    def __repr__(self) -> str:
        return f"FloraClient(base_url={self.base_url!r}, api_key=<hidden>)"

    __str__ = __repr__

    def close(self) -> None:
        """Abort requests in flight and close the pooled connections."""
        with self._inflight_lock:
            inflight = list(self._inflight.values())
        for deadline in inflight:
            deadline.abort()
        self._session.close()

    def cancel_with(self, event: threading.Event) -> None:
        """Requests of the calling thread end (no retry, no wait) once ``event`` is set."""
        self._local.cancel = event

    def abort(self, thread_id: int | None) -> bool:
        """End the request ``thread_id`` is waiting for, if any (e.g. the poller, on close)."""
        with self._inflight_lock:
            deadline = self._inflight.get(thread_id) if thread_id is not None else None
        if deadline is not None:
            deadline.abort()
        return deadline is not None

    def __enter__(self) -> FloraClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- resources

    def workspaces(self) -> list[Workspace]:
        """Every workspace this key can see (the endpoint is not paginated)."""
        body = self.request("GET", "/workspaces")
        return list(self._valid(_list(body, "workspaces"), Workspace.from_api))

    def techniques(self, query: str | None = None, workspace_id: str | None = None) -> Iterator[Technique]:
        """Every technique in the catalog (optionally searched), one page at a time."""
        params = {"query": query, "workspace_id": workspace_id}
        yield from self._valid(self.paginate("/techniques", "techniques", params), Technique.from_api)

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
        on_attempt: Callable[[float], None] | None = None,
        on_unanswered: Callable[[], None] | None = None,
    ) -> RunStart:
        """Start one technique run (``POST /runs/technique``); safe to retry with the same key.

        ``on_attempt(t)`` is called just before each attempt is sent (``t``: on ``self.clock``, see ``_clock.LocalClock``),
        ``on_unanswered()`` as soon as an attempt got no answer (before any retry waits).
        """
        body = {"technique_id": technique_id, "workspace_id": workspace_id, "inputs": dict(inputs)}
        key = idempotency_key or new_idempotency_key()
        return RunStart.from_api(self.request("POST", "/runs/technique", json=body, idempotency_key=key,
                                              on_attempt=on_attempt, on_unanswered=on_unanswered))

    @property
    def attempt_seconds(self) -> float:
        """The longest one attempt can last (connect + read timeouts, capped by the deadline): a server
        still working on a request after that would have been given up on."""
        connect, read = self.timeout if isinstance(self.timeout, tuple) else (self.timeout, self.timeout)
        return min(self.deadline, float(connect) + float(read))

    def get_run(self, run_id: str, poll_url: str | None = None) -> RunState:
        """The run's current state, from its ``poll_url`` when safe, else ``/runs/{run_id}``.

        A ``poll_url`` on another origin (or one URL parsers read differently) is never sent the
        key: the run is polled by id on the base URL's origin instead.
        """
        fallback = self._absolute(f"/runs/{_segment(run_id)}")
        url = poll_url if poll_url and self.same_origin(poll_url) else fallback
        if poll_url and url != poll_url:
            log.info("flora_nb: poll_url of %s is not on %s; polling by run id", run_id, self.base_url)
        try:
            body = self.request("GET", url, deadline=self.poll_deadline)
        except NotFoundError:
            if url == fallback:
                raise
            body = self.request("GET", fallback, deadline=self.poll_deadline)
        state = RunState.from_api(body)
        if state.run_id != run_id:  # never let an answer about another run update this one
            raise InvalidResponseError(f"asked FLORA for run {run_id}, the answer is about {state.run_id!r}.",
                                       field="run_id", status=200)
        return state

    def technique_runs(self, page_size: int = _PAGE_LIMIT, *, max_pages: int | None = None,
                       retry_unanswered: bool = True, **filters: Any) -> Iterator[RunState]:
        """Technique run history, newest first, across all pages (stop iterating to stop paging).

        Filters: ``workspace_id``, ``project_id``, ``technique_id``, ``status``. Malformed items
        are skipped and counted in ``invalid_answers``. ``retry_unanswered``: see ``request``.
        """
        params = {k: v for k, v in filters.items() if v is not None}
        params["limit"] = page_size
        pages = self.paginate("/technique-runs", "technique_runs", params, max_pages=max_pages,
                              deadline=self.poll_deadline, retry_unanswered=retry_unanswered)
        yield from self._valid(pages, RunState.from_api)

    def _valid(self, items: Iterable[Any], parse: Callable[[Any], _T]) -> Iterator[_T]:
        """Parse each item of a list answer; a malformed one is skipped and counted, not fatal."""
        for item in items:
            try:
                yield parse(item)
            except InvalidResponseError as exc:
                self.invalid_answers += 1
                self.last_invalid = exc.message
                log.debug("flora_nb: skipped a malformed item: %s", exc.message)

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
        # A signed URL carries its own authorisation; the API key must not travel with it, even
        # when storage shares FLORA's origin (as in the simulator).
        response = self._send_with_retries(str(target.get("method") or "POST"), url, {"files": files, "data": form},
                                           idempotency_key=None, throttled=False, auth=False)
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
        return self._media(url, None).content

    def fetch_media_to(self, url: str, handle: IO[bytes]) -> int:
        """Stream an output or asset URL into an open binary file; returns the bytes written."""
        return int(getattr(self._media(url, handle), "flora_size", 0))

    def _media(self, url: str, handle: IO[bytes] | None) -> requests.Response:
        """GET media, following redirects itself: the key goes only to the base URL's origin,
        and never to wherever a redirect points."""
        for hop in range(MAX_REDIRECTS + 1):
            response = self._send_with_retries("GET", url, {}, idempotency_key=None, throttled=False,
                                               deadline=MEDIA_DEADLINE, cap=MAX_MEDIA_BYTES, sink=handle, auth=hop == 0)
            if not response.is_redirect:
                if response.status_code >= 400:
                    self._raise_for(response)
                return response
            url = urljoin(url, self._scrub(response.headers.get("location") or ""))
            if handle is not None:
                handle.seek(0)
                handle.truncate()
        raise InvalidResponseError(f"media redirected more than {MAX_REDIRECTS} times; gave up.", field="location")

    # ----------------------------------------------------------------- plumbing

    def paginate(self, path: str, items_key: str, params: Mapping[str, Any] | None = None, *,
                 max_pages: int | None = None, deadline: float | None = None, retry_unanswered: bool = True,
                 max_seconds: float | None = None, clock: Callable[[], float] = time.monotonic) -> Iterator[Any]:
        """Follow ``meta.next_cursor`` page by page, yielding raw items.

        A server must not make a client page forever: ``InvalidResponseError`` on a cursor seen before,
        on a page that brings no item not seen before, past ``max_pages`` pages (default
        ``self.max_pages``), or when the listing takes longer than ``max_seconds`` (default
        ``self.max_listing_seconds``, on ``clock``).
        """
        query = {k: v for k, v in (params or {}).items() if v is not None}
        cap = max_pages or self.max_pages
        seen: set[str] = set()  # cursors
        known: set[str] = set()  # items, by _item_id
        limit = self.max_listing_seconds if max_seconds is None else max_seconds
        ends = clock() + limit
        for page in range(1, cap + 1):
            body = self.request("GET", path, params=query, deadline=deadline,
                                retry_unanswered=retry_unanswered)
            items = _list(body, items_key)
            yield from items
            meta = body.get("meta")
            cursor = (meta.get("next_cursor") or meta.get("nextCursor")) if isinstance(meta, dict) else None
            if not items or not cursor:
                return
            if not isinstance(cursor, str) or cursor in seen:
                raise _endless(path, f"FLORA sent the page cursor {_shown_url(cursor)} again; stopped paging "
                                     f"after {page} pages (the pages would never end).")
            fresh = {_item_id(item) for item in items} - known
            if not fresh:  # a new cursor to the same items again: it would never end either
                raise _endless(path, f"page {page} brought nothing not seen before, yet FLORA sent a next "
                                     f"page cursor; stopped paging after {page} pages (the pages would never end).")
            if clock() >= ends:
                raise _endless(path, f"still paging after {limit:g} s ({page} pages); stopped paging. Narrow the "
                                     "filters (workspace, technique, status) or raise client.max_listing_seconds.")
            known |= fresh
            seen.add(cursor)
            query = {**query, "cursor": cursor}
        raise _endless(path, f"more than {cap} pages; stopped paging. Narrow the filters (workspace, technique, "
                             "status) or raise client.max_pages.")

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
        deadline: float | None = None,
        retry_unanswered: bool = True,
        on_attempt: Callable[[float], None] | None = None,
        on_unanswered: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Send one API request (with retries) and return its JSON body; raise on errors.

        ``retry_unanswered=False``: an attempt that got no answer (timed out, cut off) is not retried.

        Redirects are not followed: a 3xx is an ``InvalidResponseError`` saying where it pointed.
        """
        kwargs = {"params": params, "json": json, "files": files, "data": data}
        url = self._absolute(path_or_url)
        response = self._send_with_retries(method, url, kwargs, idempotency_key=idempotency_key,
                                           deadline=deadline or self.deadline, cap=self.max_answer_bytes,
                                           retry_unanswered=retry_unanswered, on_attempt=on_attempt,
                                           on_unanswered=on_unanswered)
        if response.is_redirect or 300 <= response.status_code < 400:
            where = self._scrub(response.headers.get("location") or "nowhere")
            error = InvalidResponseError(
                f"{method} {_path(url)} was redirected to {where!r}; API calls do not follow redirects "
                "(check the base URL, or a proxy in between).", field="location", status=response.status_code,
                code="redirect", request_id=self._request_id(response))
            error.unanswered_attempt = bool(getattr(response, "flora_unanswered_attempt", False))
            raise error
        if response.status_code >= 400:
            self._raise_for(response)
        return self._json_body(response)

    def _absolute(self, path_or_url: str) -> str:
        if "://" in path_or_url:
            return path_or_url
        return self.base_url + "/" + path_or_url.lstrip("/")

    def same_origin(self, url: str) -> bool:
        """Is ``url`` on the base URL's origin (where the key may go)?"""
        try:
            return _origin(url) == self._origin
        except UnsafeURLError:
            return False

    def _headers(self, url: str, idempotency_key: str | None, attempt: int, auth: bool = True) -> dict[str, str]:
        headers = {"X-Flora-Retry-Count": str(attempt)}
        if auth and _origin(url) == self._origin:  # _origin refuses a URL parsers read differently
            headers["Authorization"] = f"Bearer {self.__key}"
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def _send_with_retries(
        self, method: str, url: str, kwargs: dict, *, idempotency_key: str | None, throttled: bool = True,
        retry_unanswered: bool = True, on_attempt: Callable[[float], None] | None = None,
        on_unanswered: Callable[[], None] | None = None, **opts: Any,
    ) -> requests.Response:
        # A POST is only safe to repeat because the server dedupes it by its idempotency key.
        retryable = method.upper() in ("GET", "HEAD") or bool(idempotency_key)
        attempt, unanswered = 0, False
        cancel = getattr(self._local, "cancel", None)
        while True:
            if cancel is not None and cancel.is_set():
                raise FloraConnectionError(f"{method} {_path(url)}: cancelled, the session is closing")
            if throttled:
                self.throttle.acquire()
            if on_attempt is not None:
                on_attempt(self.clock.now())
            try:
                response = self._send_once(method, url, kwargs, idempotency_key, attempt, **opts)
            except (FloraConnectionError, FloraTimeout) as exc:
                if on_unanswered is not None:
                    on_unanswered()
                if (not retryable or not retry_unanswered or attempt >= self.max_retries
                        or (cancel is not None and cancel.is_set())):
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
                    self.throttle.limited(wait)  # every thread of this client holds off, and it learns the rate
                    wait = 0.0
            if cancel is not None:
                cancel.wait(wait)
            else:
                time.sleep(wait)
            attempt += 1

    def _send_once(self, method: str, url: str, kwargs: dict, idempotency_key: str | None, attempt: int, *,
                   deadline: float | None = None, cap: int = MAX_ANSWER_BYTES, sink: IO[bytes] | None = None,
                   auth: bool = True) -> requests.Response:
        headers = self._headers(url, idempotency_key, attempt, auth)
        limit = Deadline(deadline or self.deadline, getattr(self._local, "cancel", None))
        me = threading.get_ident()
        with self._inflight_lock:
            self._inflight[me] = limit
        try:
            with limit:
                sent = self.clock.now()
                response = self._session.request(method, url, headers=headers, timeout=self._timeouts(limit.seconds),
                                                 allow_redirects=False, stream=True, **kwargs)
                if auth and self.same_origin(url):  # the API's own clock, not a CDN's or a media host's
                    self._observe_date(sent, response)
                _read_body(response, cap, sink, method, url)
        except requests.Timeout:
            raise FloraTimeout(f"{method} {_path(url)} timed out after {self.timeout} s") from None
        except (OSError, requests.RequestException, urllib3_errors.HTTPError) as exc:
            # Refused, reset, dropped, cut off mid-transfer, or ended by the deadline: no usable
            # answer. The exception text is not reused, since some requests errors quote headers.
            if limit.expired:
                raise FloraTimeout(f"{method} {_path(url)} took longer than {limit.seconds:g} s in total; "
                                   "gave up on it") from None
            if limit.over:
                raise FloraConnectionError(f"{method} {_path(url)}: cancelled, the session is closing") from None
            raise FloraConnectionError(
                f"{method} {_path(url)}: no answer from {_netloc(url)} ({_reason(exc)})") from None
        finally:
            with self._inflight_lock:
                self._inflight.pop(me, None)
        self._scrub_response(response)  # media streamed to disk has no body left here to scrub
        log.debug("flora_nb: %s %s -> %d (%s)", method, _path(url), response.status_code,
                  self._request_id(response) or "-")
        return response

    def _observe_date(self, sent: float, response: requests.Response) -> None:
        date = date_seconds(response.headers.get("date"))
        if date is not None:
            self.clock.observe_date(sent, self.clock.now(), date)

    def _timeouts(self, deadline: float) -> tuple[float, float]:
        connect, read = self.timeout if isinstance(self.timeout, tuple) else (self.timeout, self.timeout)
        return min(connect, deadline), min(read, deadline)

    # ----------------------------------------------------------------- secrets in answers

    def _scrub(self, text: str) -> str:
        """``text`` without the key (a proxy or a hostile server may echo request headers)."""
        return text.replace(self.__key, HIDDEN) if isinstance(text, str) else text

    def _scrub_json(self, value: Any) -> Any:
        """Every string of a parsed JSON answer scrubbed (keys too): escapes hide the key from bytes."""
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, list):
            return [self._scrub_json(v) for v in value]
        if isinstance(value, dict):
            return {self._scrub(k): self._scrub_json(v) for k, v in value.items()}
        return value

    def _scrub_response(self, response: requests.Response) -> None:
        key = self.__key.encode()
        if key in (response.content or b""):
            response._content = response.content.replace(key, HIDDEN.encode())
        for name, value in list(response.headers.items()):
            if self.__key in value:
                response.headers[name] = self._scrub(value)
        response.reason = self._scrub(response.reason or "")

    def _request_id(self, response: requests.Response) -> str | None:
        value = response.headers.get("request-id")
        return self._scrub(value)[:200] if value else None

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
            raise InvalidResponseError(
                f"expected JSON from FLORA, got {response.headers.get('content-type', 'no content type')}: "
                f"{_snippet(self._scrub(response.text))}",
                status=response.status_code, request_id=self._request_id(response),
            ) from None
        if not isinstance(body, dict):
            raise InvalidResponseError("expected a JSON object from FLORA", status=response.status_code,
                                       request_id=self._request_id(response))
        # Without a backslash every JSON string is a verbatim slice of the (already scrubbed) bytes;
        # with one, an escape (\u0073k_...) could spell the key: scrub the parsed strings too.
        return self._scrub_json(body) if b"\\" in response.content else body

    def _raise_for(self, response: requests.Response) -> None:
        code, message, fields = _parse_envelope(response, self._scrub_json)
        cls = error_for_status(response.status_code, code)
        error = cls(
            self._scrub(message),
            status=response.status_code,
            code=code or DEFAULT_CODES.get(response.status_code, "unknown_error"),
            fields=fields,
            request_id=self._request_id(response),
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


def _read_body(response: requests.Response, cap: int, sink: IO[bytes] | None, method: str, url: str) -> None:
    """Read the body under the caller's deadline, at most ``cap`` bytes; 2xx media goes to ``sink``."""
    def too_large() -> InvalidResponseError:
        response.close()
        return InvalidResponseError(
            f"{method} {_path(url)}: the answer is larger than {cap / 1e6:.0f} MB; it was not read. "
            "FLORA never sends answers this large: check the base URL.", field="body", status=response.status_code)
    length = response.headers.get("content-length") or ""
    if length.isdigit() and int(length) > cap:
        raise too_large()
    to_disk = sink is not None and 200 <= response.status_code < 300
    chunks, size = [], 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > cap:
            raise too_large()
        if to_disk:
            sink.write(chunk)  # type: ignore[union-attr]
        else:
            chunks.append(chunk)
    response._content = b"".join(chunks)
    response._content_consumed = True  # type: ignore[attr-defined]
    response.flora_size = size  # type: ignore[attr-defined]


def _endless(path: str, why: str) -> InvalidResponseError:
    """The one error of a listing that would not end (so the poller can fall back to single polls)."""
    return InvalidResponseError(f"GET {path}: {why}", field="meta.next_cursor", status=200)


def _item_id(item: Any) -> str:
    """What tells one list item from another: its id, else its whole JSON."""
    if isinstance(item, dict):
        for key in _ITEM_IDS:
            value = item.get(key)
            if isinstance(value, str) and value:
                return f"{key}={value}"
    return json.dumps(item, sort_keys=True, default=str)


def _list(body: dict[str, Any], key: str) -> list[Any]:
    items = body.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise InvalidResponseError(f"FLORA sent a malformed answer: {key} is not a list.", field=key, status=200)
    return items


def _parse_envelope(response: requests.Response,
                    scrub: Callable[[Any], Any]) -> tuple[str | None, str, list[dict[str, str]]]:
    try:
        body = scrub(response.json())
    except ValueError:
        reason = response.reason or "error"
        return None, f"HTTP {response.status_code} {reason} with a non-JSON body: {_snippet(response.text)}", []
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, f"HTTP {response.status_code} with an unexpected body: {_snippet(response.text)}", []
    raw_fields = error.get("fields")
    raw_fields = raw_fields if isinstance(raw_fields, list) else []
    fields = [{"field": str(f.get("field", "?"))[:200], "message": str(f.get("message", ""))[:500]}
              for f in raw_fields if isinstance(f, dict)]
    message = str(error.get("message") or response.reason or "error")
    code = error.get("code") if isinstance(error.get("code"), str) else None
    return code, message, fields


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

"""HTTP plumbing: a keep-alive threading server and the per-request pipeline.

Pipeline order for API requests (fixed, clients and tests rely on it):
latency sleep -> auth -> rate limit (per workspace of the request) -> error_rate -> route.
Media under ``/media/`` and signed uploads under ``/storage/uploads/`` are public: no auth, no
rate limit, no injected errors. ``GET /_sim/{info,stats,run-records,requests}`` (with the API key)
is the simulator's own truth for a process sharing it (``_shared``); FLORA has no such route, and
these requests are not counted in the simulator's traffic.
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ._ratelimit import RateLimiter
from ._responses import NOT_FOUND, RATE_LIMITED, UNAUTHORIZED, UNKNOWN_ERROR, ApiError, Response, json_response
from ._routes import API_PREFIX, STORAGE_PREFIX, Api, Call
from ._state import to_ms
from ._traffic import MEDIA_ROUTE, RequestRecord, Traffic

STORAGE_ROUTE = "POST /storage/uploads/{asset_id}"
SIM_PREFIX = "/_sim/"
MAX_BODY_BYTES = 64 * 1024 * 1024  # a 50 MB signed upload plus its multipart framing
IDLE_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class Incoming:
    """A parsed HTTP request, before any simulator logic."""

    method: str
    target: str
    headers: Message
    body: bytes


def bearer_key(headers: Message) -> str | None:
    """The key from ``Authorization: Bearer <key>``, or None when missing or malformed."""
    scheme, _, key = (headers.get("Authorization") or "").strip().partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key and " " not in key else None


class App:
    """Turns an Incoming into a Response and records it; shared by all handler threads."""

    def __init__(self, *, api: Api, traffic: Traffic, clock: Callable[[], float]) -> None:
        self.api = api
        self.accounts = api.accounts
        self.world = api.world
        self.traffic = traffic
        self.clock = clock
        self.limiter = RateLimiter()
        self.inspect: Callable[[str], Any] | None = None  # name -> the simulator's own view (JSON-ready), or None

    def handle(self, req: Incoming) -> Response:
        """Serve one request; never raises."""
        parts = urlsplit(req.target)
        if parts.path.startswith(SIM_PREFIX):
            return self._guarded(lambda: self._inspected(req, parts.path[len(SIM_PREFIX):]))
        authorized = False
        if parts.path.startswith("/media/"):
            route = MEDIA_ROUTE
            resp = self._guarded(lambda: self.api.media(parts.path))
        elif parts.path.startswith(STORAGE_PREFIX):  # signed uploads: no API key, the form's token
            route = STORAGE_ROUTE
            resp = self._guarded(lambda: self.api.storage_upload(req.method, parts.path, req.headers, req.body))
        elif parts.path == API_PREFIX or parts.path.startswith(API_PREFIX + "/"):
            route, resp, authorized = self._api(req, parts.path[len(API_PREFIX) :], parts.query)
        else:
            route, resp = f"{req.method} (unmatched)", ApiError(NOT_FOUND).response()
        request_id = "req_" + secrets.token_hex(12)
        resp.headers["request-id"] = request_id
        self._record(req, parts.path, route, resp, request_id, authorized)
        return resp

    def _inspected(self, req: Incoming, name: str) -> Response:
        """The simulator's own truth for a process sharing it; not recorded as traffic."""
        if self.accounts.grants(bearer_key(req.headers)) is None:
            return ApiError(UNAUTHORIZED).response()
        found = self.inspect(name) if self.inspect is not None and req.method == "GET" else None
        return ApiError(NOT_FOUND).response() if found is None else json_response(200, found)

    def _api(self, req: Incoming, path: str, query: str) -> tuple[str, Response, bool]:
        matched = self.api.match(req.method, path)
        route = matched[0].name if matched else f"{req.method} (unmatched)"
        faults = self.world.faults
        if faults.latency > 0:
            time.sleep(faults.latency)
        grants = self.accounts.grants(bearer_key(req.headers))
        if grants is None:
            return route, ApiError(UNAUTHORIZED).response(), False
        workspace = self._workspace_of(req, path, query, list(grants))
        wait = self.limiter.acquire(workspace, faults.rate_limit, self.clock())
        if wait > 0:
            return route, _rate_limited(wait), True
        if self.world.chance(faults.error_rate):
            return route, ApiError(UNKNOWN_ERROR, outcome="injected_error").response(), True
        if matched is None:
            return route, ApiError(NOT_FOUND).response(), True
        found, params = matched
        call = Call(
            path, dict(parse_qsl(query, keep_blank_values=True)), req.headers, req.body, grants
        )
        return route, self._guarded(lambda: found.handler(self.api, call, params)), True

    def _workspace_of(self, req: Incoming, path: str, query: str, grants: list[str]) -> str:
        """The workspace a request acts in (FIELD: FLORA throttles per workspace): the query's or
        body's ``workspace_id``, else the polled run's, else the key's first workspace."""
        named = dict(parse_qsl(query)).get("workspace_id")
        if named is None and req.body[:1] == b"{":
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                body = json.loads(req.body)
                named = body.get("workspace_id") if isinstance(body, dict) else None
        if named is None and "/runs/" in path:
            run = self.world.get(path.rstrip("/").rsplit("/", 1)[-1])
            named = run.workspace_id if run is not None else None
        return named if isinstance(named, str) and named in grants else grants[0]

    def _guarded(self, endpoint: Callable[[], Response]) -> Response:
        try:
            return endpoint()
        except ApiError as err:
            return err.response()
        except Exception:  # a simulator bug: answer like FLORA would, and make it visible
            self.traffic.internal_error(traceback.format_exc())
            return ApiError(UNKNOWN_ERROR).response()

    def _record(
        self,
        req: Incoming,
        path: str,
        route: str,
        resp: Response,
        request_id: str,
        authorized: bool,
    ) -> None:
        self.traffic.record(
            RequestRecord(
                at=to_ms(self.clock()),
                method=req.method,
                path=path,
                route=route,
                status=resp.status,
                request_id=request_id,
                idempotency_key=req.headers.get("Idempotency-Key"),
                user_agent=req.headers.get("User-Agent"),
                authorized=authorized,
                auth_header=req.headers.get("Authorization") is not None,
                outcome="dropped" if resp.drop else resp.outcome,
            )
        )


def _rate_limited(wait: float) -> Response:
    headers = {
        "Retry-After": str(max(1, math.ceil(wait))),
        "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
    }
    return ApiError(RATE_LIMITED, headers=headers, outcome="rate_limited").response()


class _BodyTooLarge(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler; every response carries Content-Length."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle + delayed ACK
    # would add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT_SECONDS
    server: SimServer

    def version_string(self) -> str:
        return "flora-sim"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def _serve(self, method: str) -> None:
        try:
            body = self._read_body()
        except (_BodyTooLarge, ValueError):
            self.close_connection = True
            self._write(
                ApiError((400, "input_validation_error", "Request body too large.")).response()
            )
            return
        resp = self.server.app.handle(Incoming(method, self.path, self.headers, body))
        if resp.drop:
            self.close_connection = True  # closed before a single response byte
            return
        self._write(resp)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise _BodyTooLarge
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers, then the blank line
                    pass
                return bytes(body)
            if len(body) + size > MAX_BODY_BYTES:
                raise _BodyTooLarge
            body += self.rfile.read(size)
            self.rfile.readline(16)  # CRLF after each chunk

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header on the server's own clock (which ``clock_offset`` may shift)."""
        return super().date_time_string(self.server.app.clock() if timestamp is None else timestamp)

    def _write(self, resp: Response) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(resp.body)


class SimServer(ThreadingHTTPServer):
    """Threading server that can cut its keep-alive connections when stopped."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.app = app
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up are normal; anything else is a simulator bug worth recording."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        self.app.traffic.internal_error(traceback.format_exc())

    def close_connections(self) -> None:
        """End idle keep-alive connections, so a stopped simulator really stops answering."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by the client
                sock.shutdown(socket.SHUT_RDWR)

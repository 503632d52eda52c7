"""A hostile imitation of FLORA for tests: answers chosen byte by byte, every request recorded.

``HostileServer`` is a real HTTP server on loopback in a thread; ``FakeFlora`` builds on it the
few routes a session needs (technique, start, poll, history, media), each replaceable per test.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import requests

KEY = "sk_hostile_SECRET_0123456789"
TECH = "tech_fake"
WS = "ws_fake"


@dataclass
class Req:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    handler: BaseHTTPRequestHandler = field(repr=False)

    @property
    def auth(self) -> str | None:
        return self.headers.get("authorization")

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # bytes are sent as they are, anything else as JSON
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


Route = Callable[[Req], "Reply | None"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        req = Req(self.command, parts.path, query, headers, body, self)
        self.server.owner._record(req)
        reply = self.server.owner.route(req)
        if reply is None:  # the route wrote the answer itself (or hung up)
            return
        data = reply.payload()
        self.send_response(reply.status)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), **reply.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: HostileServer


class HostileServer:
    """A loopback HTTP server answering with ``route(req)``; records every request."""

    def __init__(self, route: Route | None = None, host: str = "127.0.0.1"):
        self.route: Route = route or (lambda req: Reply(404, {"error": {"code": "not_found", "message": "no"}}))
        self.requests: list[Req] = []
        self._lock = threading.Lock()
        self._server = _Server((host, 0), _Handler)
        self._server.owner = self
        # A short poll interval: shutdown() waits for it (the default 0.5 s made every close slow).
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def _record(self, req: Req) -> None:
        with self._lock:
            self.requests.append(req)

    def hits(self, path: str | None = None, method: str | None = None) -> list[Req]:
        with self._lock:
            return [r for r in self.requests if (path is None or r.path.startswith(path))
                    and (method is None or r.method == method)]

    def keyed(self, key: str = KEY) -> list[Req]:
        """Requests that carried the key anywhere in their headers."""
        with self._lock:
            return [r for r in self.requests if any(key in v for v in r.headers.values())]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def technique_json() -> dict[str, Any]:
    return {"technique_id": TECH, "name": "Fake", "run_cost": 0.25,
            "inputs": [{"id": "prompt", "name": "Prompt", "type": "text"}],
            "outputs": [{"id": "image", "type": "imageUrl"}]}


def run_json(run_id: str, status: str = "completed", **more: Any) -> dict[str, Any]:
    now = int(time.time() * 1000)
    body = {"run_id": run_id, "status": status, "progress": 100 if status == "completed" else 10,
            "created_at": now - 50, "started_at": now - 40, "workspace_id": WS,
            "technique": {"technique_id": TECH, "name": "Fake"}, "outputs": []}
    if status in ("completed", "failed"):
        body.update(completed_at=now, charged_cost=0.25 if status == "completed" else 0.0)
    body.update(more)
    return body


class FakeFlora(HostileServer):
    """The few FLORA routes a session uses; replace ``on_start``/``on_run``/``on_list``/``on_other``."""

    def __init__(self, host: str = "127.0.0.1"):
        super().__init__(self._dispatch, host)
        self.base_url = self.origin + "/api/v1"
        self.started = 0
        self.on_start: Callable[[Req], Reply | None] = self._start
        self.on_run: Callable[[Req, str], Reply | None] = lambda req, run_id: Reply(200, run_json(run_id))
        self.on_list: Callable[[Req], Reply | None] = lambda req: Reply(200, {"technique_runs": [], "meta": {}})
        self.on_other: Callable[[Req], Reply | None] = lambda req: Reply(404, {"error": {"code": "not_found",
                                                                                          "message": "Not found."}})

    def _start(self, req: Req) -> Reply:
        self.started += 1
        run_id = f"run_{self.started:04d}"
        return Reply(201, {"run_id": run_id, "type": "technique", "charged_cost": 0.25, "estimated_seconds": 1,
                           "poll_url": f"{self.base_url}/runs/{run_id}"})

    def _dispatch(self, req: Req) -> Reply | None:
        path = req.path.removeprefix("/api/v1")
        if path == f"/techniques/{TECH}":
            return Reply(200, technique_json())
        if path == "/workspaces":
            return Reply(200, {"workspaces": [{"workspace_id": WS, "name": "Fake"}]})
        if path == "/runs/technique" and req.method == "POST":
            return self.on_start(req)
        if path.startswith("/runs/"):
            return self.on_run(req, path.rsplit("/", 1)[-1])
        if path == "/technique-runs":
            return self.on_list(req)
        return self.on_other(req)


# Hop-by-hop headers and those the front's own HTTP server writes: never passed on.
_NOT_PASSED_ON = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
                  "date", "server", "proxy-connection", "te", "trailer", "upgrade"}


class Front(HostileServer):
    """A front for a real server (the simulator): each request is passed on and its answer passed back.

    When ``hold(req)`` says so, the request is passed on (the server acts on it) but its answer is
    kept from the client (with ``hold_before``: the request itself is kept from the server): ``held``
    is set, and once the test sets ``release`` the connection is cut without an answer. A test can
    so act at the exact moment a request is in flight, with no sleep.
    """

    def __init__(self, target_origin: str, host: str = "127.0.0.1"):
        super().__init__(self._pass_on, host)
        self.target = target_origin.rstrip("/")
        self.hold: Callable[[Req], bool] = lambda req: False
        self.hold_before = False
        self.held = threading.Event()
        self.release = threading.Event()

    def _pass_on(self, req: Req) -> Reply | None:
        hold = self.hold(req)
        if hold and self.hold_before:
            return self._hold(req)
        headers = {k: v for k, v in req.headers.items() if k not in _NOT_PASSED_ON}
        answer = requests.request(req.method, self.target + req.path, params=req.query, headers=headers,
                                  data=req.body, allow_redirects=False, timeout=60)
        if hold:
            return self._hold(req)
        passed = {("Content-Type" if k.lower() == "content-type" else k): v
                  for k, v in answer.headers.items() if k.lower() not in _NOT_PASSED_ON}
        return Reply(answer.status_code, answer.content, passed)

    def _hold(self, req: Req) -> None:
        self.held.set()
        self.release.wait(60)
        req.handler.close_connection = True
        return None

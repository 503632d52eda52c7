"""Responses the simulator never sends (proxies, load balancers): a tiny real server answers them."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import flora_nb as fnb
from flora_nb import FloraClient

ANSWERS = {
    "/api/v1/html502": (502, "text/html", b"<html><body>Bad gateway</body></html>"),
    "/api/v1/badjson": (500, "application/json", b'{"error": {"code": "unknown_err'),
    "/api/v1/notjson200": (200, "text/plain", b"hello"),
    "/api/v1/odd400": (400, "application/json", b'{"detail": "nope"}'),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: dict[str, int] = {}

    def do_GET(self):  # stdlib name
        Handler.hits[self.path] = Handler.hits.get(self.path, 0) + 1
        if self.path == "/api/v1/cut":  # promise 100 bytes, send 20, hang up
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b'{"workspaces": [{"wo')
            self.wfile.flush()
            self.close_connection = True
            return
        status, ctype, body = ANSWERS.get(self.path, (404, "text/plain", b"?"))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("request-id", "req_odd")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def odd_client():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    with FloraClient(api_key="sk_odd", base_url=base, max_retries=1, max_retry_wait=0.01) as client:
        yield client
    server.shutdown()


def test_html_error_body(odd_client):
    with pytest.raises(fnb.ServerError) as info:
        odd_client.request("GET", "/html502")
    err = info.value
    assert err.status == 502 and "non-JSON" in err.message and "Bad gateway" in err.message
    assert err.request_id == "req_odd"
    assert Handler.hits["/api/v1/html502"] == 2  # 5xx retried once


def test_invalid_json_error_body(odd_client):
    with pytest.raises(fnb.ServerError) as info:
        odd_client.request("GET", "/badjson")
    assert info.value.code == "unknown_error" and "non-JSON" in info.value.message


def test_body_cut_mid_transfer_is_a_retried_connection_error(odd_client):
    with pytest.raises(fnb.FloraConnectionError, match="no answer"):
        odd_client.request("GET", "/cut")
    assert Handler.hits["/api/v1/cut"] == 2  # retried once, like any unanswered request


def test_non_json_success_body(odd_client):
    with pytest.raises(fnb.APIError) as info:
        odd_client.request("GET", "/notjson200")
    assert info.value.code == "invalid_response" and "hello" in str(info.value)


def test_error_without_envelope(odd_client):
    with pytest.raises(fnb.ValidationError) as info:
        odd_client.request("GET", "/odd400")
    assert info.value.status == 400 and "nope" in info.value.message

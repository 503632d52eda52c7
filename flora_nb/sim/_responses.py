"""Responses and the FLORA error envelope ``{"error": {"code", "message", "fields"?}}``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JSON_TYPE = "application/json"

# Messages copied from the API reference's example bodies (flora-api.md §2).
UNAUTHORIZED = (401, "unauthorized", "Invalid API key.")
INSUFFICIENT_CREDITS = (402, "insufficient_credits", "Insufficient credits.")
FORBIDDEN = (403, "forbidden", "Forbidden.")
NOT_FOUND = (404, "not_found", "Not found.")
DUPLICATE = (409, "idempotency_duplicate", "Duplicate idempotency key.")
RATE_LIMITED = (429, "rate_limited", "Rate limit exceeded.")
UNKNOWN_ERROR = (500, "unknown_error", "An unknown error occurred.")
INVALID_JSON = (400, "invalid_json", "Request body is not valid JSON.")


@dataclass
class Response:
    """What the HTTP layer writes; ``drop`` closes the connection without writing anything."""

    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    outcome: str = "ok"


def json_response(status: int, payload: Any) -> Response:
    """A JSON response; compact separators keep bodies small on the hot polling path."""
    return Response(status, json.dumps(payload, separators=(",", ":")).encode())


class ApiError(Exception):
    """Raised anywhere in a route; turned into the error envelope by the server."""

    def __init__(
        self,
        kind: tuple[int, str, str],
        *,
        message: str | None = None,
        fields: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        outcome: str = "error",
    ) -> None:
        self.status, self.code, default_message = kind
        self.message = message or default_message
        self.fields = fields
        self.headers = headers or {}
        self.outcome = outcome
        super().__init__(f"{self.status} {self.code}: {self.message}")

    def response(self) -> Response:
        """The envelope as a Response."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields:
            error["fields"] = self.fields
        resp = json_response(self.status, {"error": error})
        resp.headers.update(self.headers)
        resp.outcome = self.outcome
        return resp


def validation_error(problems: list[tuple[str, str]]) -> ApiError:
    """400 input_validation_error listing every problem, e.g. message "prompt: Required"."""
    fields = [{"field": name, "message": text} for name, text in problems]
    message = "; ".join(f"{name}: {text}" for name, text in problems)
    return ApiError((400, "input_validation_error", message), fields=fields)

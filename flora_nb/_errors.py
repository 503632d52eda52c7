"""The flora_nb error family.

Every error flora_nb raises on purpose derives from ``FloraError``::

    FloraError
    ├── ConfigError                  no API key, bad base URL, ambiguous workspace ...
    ├── InputError (ValueError)      a bad argument caught before anything is sent
    ├── UnsafeURLError               a poll URL on another origin than the base URL
    ├── BudgetExceededError          a start or sweep would not fit its budget
    ├── ConfirmationRequired         a start would spend more than ``confirm_above`` without ``confirm=True``
    ├── RunFailedError               a run ended ``failed`` (carries ``.run``)
    ├── StartUnconfirmedError        a start's answer was lost and its run was not found (``.run``)
    ├── LedgerError                  the ledger file cannot be read or written (SQLite said why)
    │   └── LedgerConflict               a write would break a rule (e.g. one run id on two rows)
    ├── FloraConnectionError (ConnectionError)   the request never got an answer
    ├── FloraTimeout (TimeoutError)  a request, or a wait, ran out of time
    └── APIError                     FLORA answered with an error envelope
        ├── InvalidResponseError         an answer FLORA never sends: malformed, too large, a redirect
        ├── ValidationError              400 input_validation_error / invalid_json
        ├── AuthenticationError          401 unauthorized
        ├── InsufficientCreditsError     402 insufficient_credits
        ├── PermissionDeniedError        403 forbidden
        ├── NotFoundError                404 not_found
        ├── IdempotencyDuplicateError    409 idempotency_duplicate
        ├── RateLimitError               429 rate_limited
        └── ServerError                  5xx unknown_error

``APIError`` carries ``status``, ``code``, ``message``, ``fields`` and ``request_id`` (the id FLORA's
support asks for; it is kept on the error, not written into its message);
``InvalidResponseError`` also names the ``field`` that was wrong.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "AuthenticationError",
    "BudgetExceededError",
    "ConfigError",
    "ConfirmationRequired",
    "FloraConnectionError",
    "FloraError",
    "FloraTimeout",
    "IdempotencyDuplicateError",
    "InputError",
    "InsufficientCreditsError",
    "InvalidResponseError",
    "LedgerConflict",
    "LedgerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RunFailedError",
    "ServerError",
    "StartUnconfirmedError",
    "UnsafeURLError",
    "ValidationError",
    "error_for_status",
]


class FloraError(Exception):
    """Base class of every error flora_nb raises on purpose."""


class ConfigError(FloraError):
    """flora_nb is not configured well enough to talk to FLORA."""


class InputError(FloraError, ValueError):
    """An argument is wrong; nothing was sent."""


class UnsafeURLError(FloraError):
    """A URL would carry the API key to another origin; it was refused."""


class BudgetExceededError(FloraError):
    """Starting more runs would spend past the budget."""

    def __init__(self, message: str, *, estimate: float | None = None, budget: float | None = None):
        super().__init__(message)
        self.estimate = estimate
        self.budget = budget


class ConfirmationRequired(FloraError):
    """A start's worst-case price is above the ``confirm_above`` threshold; nothing was sent.

    ``price`` is that worst case in USD (None when the price is unknown), ``runs`` how many runs.
    """

    def __init__(self, message: str, *, price: float | None = None, runs: int = 1, threshold: float | None = None):
        super().__init__(message)
        self.price = price
        self.runs = runs
        self.threshold = threshold


class RunFailedError(FloraError):
    """A run ended with status ``failed``."""

    def __init__(self, message: str, *, run: Any = None):
        super().__init__(message)
        self.run = run


class StartUnconfirmedError(FloraError):
    """A start's answer was lost and no matching run was found; ``resume()`` looks again."""

    def __init__(self, message: str, *, run: Any = None):
        super().__init__(message)
        self.run = run


class LedgerError(FloraError):
    """The ledger could not be read or written (its SQLite error is the ``__cause__``)."""


class LedgerConflict(LedgerError):
    """A ledger write would break one of its rules (a run id bound to two rows, a duplicate key)."""


class FloraConnectionError(FloraError, ConnectionError):
    """The request got no answer (refused, reset, dropped)."""


class FloraTimeout(FloraError, TimeoutError):
    """A request or a wait ran out of time."""


class APIError(FloraError):
    """FLORA answered with an error envelope."""

    hint = ""
    # True when an earlier attempt of the same request got no answer: the server may have acted
    # on it (a start may exist) even though the last answer was an error.
    unanswered_attempt = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        fields: list[dict[str, str]] | None = None,
        request_id: str | None = None,
    ):
        self.status = status
        self.code = code
        self.message = message
        self.fields = list(fields or [])
        self.request_id = request_id
        super().__init__(self._describe())

    def _describe(self) -> str:
        head = " ".join(str(p) for p in (self.status, self.code) if p)
        text = f"{head}: {self.message}" if head else self.message
        details = [f"{f.get('field', '?')}: {f.get('message', '')}" for f in self.fields]
        if details:
            text += " [" + "; ".join(details) + "]"
        if self.hint:
            text += f" {self.hint}"
        return text  # the request id stays on .request_id, for a support ticket: not in the user's way

    def __reduce__(self):  # keep keyword-only fields across pickling (multiprocessing, ipyparallel)
        kwargs = dict(status=self.status, code=self.code, fields=self.fields, request_id=self.request_id)
        return (_rebuild_api_error, (type(self), self.message, kwargs))


def _rebuild_api_error(cls: type[APIError], message: str, kwargs: dict[str, Any]) -> APIError:
    return cls(message, **kwargs)


class InvalidResponseError(APIError):
    """An answer that breaks the API contract (malformed field, endless pages, too large, a redirect)."""

    hint = "This is not a FLORA answer flora_nb can use; if it repeats, check the base URL and any proxy."

    def __init__(self, message: str, *, field: str | None = None, status: int | None = None,
                 code: str | None = "invalid_response", request_id: str | None = None):
        self.field = field
        super().__init__(message, status=status, code=code, request_id=request_id)

    def __reduce__(self):
        kwargs = dict(field=self.field, status=self.status, code=self.code, request_id=self.request_id)
        return (_rebuild_api_error, (type(self), self.message, kwargs))


class ValidationError(APIError):
    """400: the request or its inputs do not match what FLORA expects."""

    hint = "Fix the listed fields and try again."


class AuthenticationError(APIError):
    """401: the API key is missing, malformed, revoked or unknown."""

    hint = "Check FLORA_API_KEY (or pass api_key=...)."


class InsufficientCreditsError(APIError):
    """402: the workspace is out of credits; the run was not started."""

    hint = "Add credits to the workspace; nothing was charged."


class PermissionDeniedError(APIError):
    """403: the key may not use this workspace or resource."""

    hint = "Use a workspace your key belongs to (see workspaces())."


class NotFoundError(APIError):
    """404: no such resource, or not visible to this key."""


class IdempotencyDuplicateError(APIError):
    """409: this start already happened; look the run up rather than start again."""


class RateLimitError(APIError):
    """429: too many requests; wait ``retry_after`` seconds."""

    retry_after: float | None = None


class ServerError(APIError):
    """5xx: FLORA failed; retried automatically before this is raised."""


_BY_CODE: dict[str, type[APIError]] = {
    "input_validation_error": ValidationError,
    "invalid_json": ValidationError,
    "unauthorized": AuthenticationError,
    "invalid_api_key": AuthenticationError,
    "insufficient_credits": InsufficientCreditsError,
    "forbidden": PermissionDeniedError,
    "paid_plan_required": PermissionDeniedError,
    "not_found": NotFoundError,
    "idempotency_duplicate": IdempotencyDuplicateError,
    "rate_limited": RateLimitError,
    "unknown_error": ServerError,
    "internal_error": ServerError,
}

_BY_STATUS: dict[int, type[APIError]] = {
    400: ValidationError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: IdempotencyDuplicateError,
    429: RateLimitError,
}

DEFAULT_CODES: dict[int, str] = {
    400: "input_validation_error",
    401: "unauthorized",
    402: "insufficient_credits",
    403: "forbidden",
    404: "not_found",
    409: "idempotency_duplicate",
    429: "rate_limited",
}


def error_for_status(status: int, code: str | None) -> type[APIError]:
    """The error class for an HTTP status and envelope code (the code wins when known)."""
    if code in _BY_CODE:
        return _BY_CODE[code]
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else APIError

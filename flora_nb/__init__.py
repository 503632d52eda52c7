"""flora_nb: FLORA generative-AI runs as first-class citizens of Jupyter notebooks.

Importing this package is cheap: the HTTP client, pandas, ipywidgets and IPython load only
when a name that needs them is first used.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

from ._errors import (
    APIError,
    AuthenticationError,
    BudgetExceededError,
    ConfigError,
    ConfirmationRequired,
    FloraConnectionError,
    FloraError,
    FloraTimeout,
    IdempotencyDuplicateError,
    InputError,
    InsufficientCreditsError,
    InvalidResponseError,
    LedgerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RunFailedError,
    ServerError,
    StartUnconfirmedError,
    UnsafeURLError,
    ValidationError,
)
from ._version import __version__

if TYPE_CHECKING:
    from ._client import FloraClient
    from ._form import Form
    from ._models import Asset, Output, RunStart, RunState, Technique, TechniqueInput, Workspace
    from ._run import Run, RunOutput
    from ._session import Flora
    from ._sweep import Sweep

# name -> module that defines it; imported on first attribute access (PEP 562).
_LAZY = {
    "Flora": "._session",
    "FloraClient": "._client",
    "Form": "._form",
    "Run": "._run",
    "RunOutput": "._run",
    "Sweep": "._sweep",
    "Asset": "._models",
    "Output": "._models",
    "RunStart": "._models",
    "RunState": "._models",
    "Technique": "._models",
    "TechniqueInput": "._models",
    "Workspace": "._models",
}

__all__ = [
    "APIError",
    "Asset",
    "AuthenticationError",
    "BudgetExceededError",
    "ConfigError",
    "ConfirmationRequired",
    "Flora",
    "FloraClient",
    "FloraConnectionError",
    "FloraError",
    "FloraTimeout",
    "Form",
    "IdempotencyDuplicateError",
    "InputError",
    "InsufficientCreditsError",
    "InvalidResponseError",
    "LedgerError",
    "NotFoundError",
    "Output",
    "PermissionDeniedError",
    "RateLimitError",
    "Run",
    "RunFailedError",
    "RunOutput",
    "RunStart",
    "RunState",
    "ServerError",
    "StartUnconfirmedError",
    "Sweep",
    "Technique",
    "TechniqueInput",
    "UnsafeURLError",
    "ValidationError",
    "Workspace",
    "__version__",
    "session",
]

# Library etiquette: without a handler of the user's, Python's last-resort handler would print
# the background poller's warnings into whatever cell happens to run. Trouble shows in status().
logging.getLogger("flora_nb").addHandler(logging.NullHandler())


def session(use: Flora | None = None) -> Flora:
    """The session the ``%flora`` magics use (created from the environment when none is open).

    ``session(fl)`` makes ``fl`` that session; ``fl = %flora`` returns the same object.
    """
    from ._session import current_session

    return current_session(use)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext flora_nb``: register the ``%flora`` magics."""
    from ._magic import load_ipython_extension as load

    load(ipython)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flora_nb' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

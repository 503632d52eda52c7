"""The public surface, import cost and the command line."""

from __future__ import annotations

import subprocess
import sys

import flora_nb

PUBLIC = [
    "APIError", "Asset", "AuthenticationError", "BudgetExceededError", "ConfigError", "Flora", "FloraClient",
    "FloraConnectionError", "FloraError", "FloraTimeout", "Form", "IdempotencyDuplicateError", "InputError",
    "InsufficientCreditsError", "InvalidResponseError", "NotFoundError", "Output", "PermissionDeniedError",
    "RateLimitError",
    "Run", "RunFailedError", "RunOutput", "RunStart", "RunState", "ServerError", "StartUnconfirmedError", "Sweep", "Technique", "TechniqueInput",
    "UnsafeURLError", "ValidationError", "Workspace", "__version__", "session",
]


def test_all_is_sorted_and_pinned():
    assert flora_nb.__all__ == sorted(flora_nb.__all__)
    assert flora_nb.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(flora_nb, name) is not None


def test_error_tree():
    assert issubclass(flora_nb.ValidationError, flora_nb.APIError)
    assert issubclass(flora_nb.APIError, flora_nb.FloraError)
    assert issubclass(flora_nb.FloraTimeout, TimeoutError)
    assert issubclass(flora_nb.InputError, ValueError)
    assert issubclass(flora_nb.InvalidResponseError, flora_nb.APIError)


def test_import_is_light():
    code = (
        "import sys, flora_nb; "
        "heavy = [m for m in ('pandas', 'ipywidgets', 'IPython', 'requests', 'numpy') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_usage():
    out = subprocess.run([sys.executable, "-m", "flora_nb", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "sim" in out.stdout and "demo" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "flora_nb", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command" in bad.stderr

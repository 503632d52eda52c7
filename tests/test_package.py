"""The public surface, import cost and the command line."""

from __future__ import annotations

import subprocess
import sys

import flora_nb

PUBLIC = [
    "APIError", "Asset", "AuthenticationError", "BudgetExceededError", "ConfigError", "ConfirmationRequired", "Flora", "FloraClient",
    "FloraConnectionError", "FloraError", "FloraTimeout", "Form", "IdempotencyDuplicateError", "InputError",
    "InsufficientCreditsError", "InvalidResponseError", "LedgerError", "NotFoundError", "Output", "PermissionDeniedError",
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


def _loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_import_is_light():
    assert _loaded_after("import flora_nb", ("pandas", "ipywidgets", "IPython", "requests", "numpy")) == []


def test_cli_usage():
    out = subprocess.run([sys.executable, "-m", "flora_nb", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "sim" in out.stdout and "demo" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "flora_nb", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command" in bad.stderr


def test_the_engine_knows_nothing_of_pandas_or_ipython():
    code = "import flora_nb._engine, flora_nb._session"
    assert _loaded_after(code, ("pandas", "ipywidgets", "IPython", "numpy")) == []


def _sources() -> dict[str, str]:
    from pathlib import Path

    root = Path(flora_nb.__file__).parent
    return {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in root.rglob("*.py")}


def test_only_run_reads_a_runs_ledger_row():
    import re

    readers = sorted(name for name, text in _sources().items() if re.search(r"\w\._row\b", text)
                     and name != "_run.py")
    assert readers == [], f"these modules read run._row instead of Run's properties: {readers}"


def test_the_status_vocabulary_is_spelled_out_once():
    import itertools
    import re

    from flora_nb import _states as _status

    # a tuple, list or set literal of two or more status names is a vocabulary of its own
    quoted = "|".join(f'"{s}"' for s in _status.STATUSES)
    group = re.compile(rf"[(\[{{]\s*(?:{quoted})\s*,\s*(?:{quoted})")
    found = {name: [hit for line in text.splitlines() if "Literal[" not in line for hit in group.findall(line)]
             for name, text in _sources().items() if name != "_states.py"}
    assert {name: hits for name, hits in found.items() if hits} == {}
    assert list(itertools.chain(_status.OPEN, _status.DONE)) == list(_status.STATUSES)


def test_load_ext_stays_light():
    code = ("from IPython.core.interactiveshell import InteractiveShell\n"
            "InteractiveShell.instance().run_line_magic('load_ext', 'flora_nb')")
    assert _loaded_after(code, ("pandas", "ipywidgets", "requests", "flora_nb._engine")) == []

"""A simulated account kept in a file, so that a later process (a restarted kernel) continues it.

One process at a time serves an account: the file has a lock beside it. Within one process a
new simulator of the same account takes the account over from the old one (``%flora connect
--sim`` twice), and the old one stops writing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one kernel at a time is then up to the user
    fcntl = None  # type: ignore[assignment]

from ._assets import Asset

__all__ = ["StateBusy", "StateFile"]

VERSION = 1
_HOLDERS: dict[str, StateFile] = {}
_HOLDERS_LOCK = threading.Lock()


class StateBusy(RuntimeError):
    """Another process serves this simulated account."""


class StateFile:
    """The JSON file of one simulated account, its lock, and its uploaded files."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).expanduser().absolute()
        self.assets_dir = self.path.with_suffix(".assets")
        self._fd: int | None = None
        self._write = threading.Lock()

    @property
    def active(self) -> bool:
        return self._fd is not None

    def read(self) -> dict[str, Any] | None:
        """The saved account, or None for a new one (an unreadable file is kept aside, not lost)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            self.path.replace(self.path.with_suffix(".unreadable.json"))
            return None
        return data if isinstance(data, dict) and data.get("version") == VERSION else None

    def acquire(self) -> None:
        """Serve this account from this simulator: take it over in this process, or lock it."""
        key = str(self.path)
        with _HOLDERS_LOCK:
            holder = _HOLDERS.get(key)
            if holder is self and self._fd is not None:
                return
            if holder is not None and holder._fd is not None:
                self._fd, holder._fd = holder._fd, None
            else:
                self._fd = _lock(self.path.with_suffix(".lock"))
            _HOLDERS[key] = self

    def release(self) -> None:
        with _HOLDERS_LOCK:
            if self._fd is not None:
                os.close(self._fd)  # closing the descriptor releases the lock
                self._fd = None
            if _HOLDERS.get(str(self.path)) is self:
                del _HOLDERS[str(self.path)]

    def save(self, data: dict[str, Any]) -> None:
        """Write atomically (a killed kernel never leaves half a file)."""
        if self._fd is None:
            return
        with self._write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".part")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"version": VERSION, **data}, handle)
            os.replace(tmp, self.path)

    def save_asset(self, asset: Asset) -> None:
        if self._fd is not None and asset.data is not None:
            self.assets_dir.mkdir(parents=True, exist_ok=True)
            (self.assets_dir / asset.asset_id).write_bytes(asset.data)

    def asset_rows(self, assets: list[Asset]) -> list[dict[str, Any]]:
        return [{k: v for k, v in dataclasses.asdict(a).items() if k != "data"} for a in assets]

    def assets_from(self, rows: list[dict[str, Any]]) -> list[Asset]:
        found = []
        for row in rows:
            stored = self.assets_dir / str(row.get("asset_id"))
            found.append(Asset(**row, data=stored.read_bytes() if stored.is_file() else None))
        return found


def _lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StateBusy(f"the simulated account {path.stem!r} is served by another process "
                        "(another notebook kernel?)") from None
    return fd

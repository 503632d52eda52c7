"""A simulated account kept in a file, so that a later process (a restarted kernel) continues it.

One process at a time serves an account: the file has a lock beside it, and the serving process
publishes where it serves (``<name>.address.json``: port, pid, key; mode 0600) so that other
processes use that server instead of failing (``_shared``). Within one process a new simulator of
the same account takes the account over from the old one (``%flora connect --sim`` twice): the old
one writes its last changes, stops serving and hands its port over, so every URL stays valid.

The file is rewritten whole, so it is not rewritten on every change: a ``Saver`` thread writes
it at most once per ``SAVE_INTERVAL`` (1 s) and always when the simulator stops or the process
exits normally. A process killed outright (kill -9) loses at most the last ~second of changes.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import json
import os
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one kernel at a time is then up to the user
    fcntl = None  # type: ignore[assignment]

from .._states import TERMINAL
from ._assets import Asset

__all__ = ["SAVE_INTERVAL", "Saver", "StateBusy", "StateFile", "read_address"]

VERSION = 1
SAVE_INTERVAL = 1.0  # seconds between two full writes at most: what a killed process may lose
_HOLDERS: dict[str, StateFile] = {}
_HOLDERS_LOCK = threading.Lock()  # also held for a write's rename, so a taken-over file is never overwritten
_SAVERS: weakref.WeakSet[Saver] = weakref.WeakSet()


class StateBusy(RuntimeError):
    """Another process serves this simulated account."""


class StateFile:
    """The JSON file of one simulated account, its lock, and its uploaded files."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).expanduser().absolute()
        self.assets_dir = self.path.with_suffix(".assets")
        self._fd: int | None = None
        self.address_path = self.path.with_suffix(".address.json")  # where its server is, while one serves it
        self.saver: Saver | None = None  # this account's writer, once a simulator serves it
        # Called (outside any lock) when another simulator of this process takes the account over:
        # its server writes what is left and stops, so the new one can serve on the same port.
        self.on_taken: Callable[[], None] | None = None
        # JSON text of terminal runs by id (they never change): encoded once, reused by every later write.
        self.encoded: dict[str, str] = {}
        self._key_texts: dict[tuple[Any, ...], str] = {}  # the same for idempotency keys (until they expire)

    @property
    def active(self) -> bool:
        return self._fd is not None

    def read(self) -> dict[str, Any] | None:
        """The saved account, or None for a new one (an unreadable file is kept aside, not lost)."""
        with _HOLDERS_LOCK:
            holder = _HOLDERS.get(str(self.path))
        if holder is not None and holder is not self and holder.saver is not None:
            holder.saver.flush()  # a simulator of this process serves it: read its latest changes too
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            self.path.replace(self.path.with_suffix(".unreadable.json"))
            return None
        return data if isinstance(data, dict) and data.get("version") == VERSION else None

    def acquire(self, take_over: bool = True) -> None:
        """Serve this account from this simulator: take it over in this process (unless not
        ``take_over``), or lock it; raises StateBusy when another process (or simulator) serves it."""
        key = str(self.path)
        with _HOLDERS_LOCK:
            holder = _HOLDERS.get(key)
            if holder is self and self._fd is not None:
                return
            busy = holder is not None and holder._fd is not None
        if busy and not take_over:
            raise StateBusy(f"the simulated account {self.path.stem!r} is served by another simulator")
        if busy and holder is not None and holder.on_taken is not None:
            holder.on_taken()  # its last changes written, its port free (outside the lock: it saves)
        with _HOLDERS_LOCK:
            holder = _HOLDERS.get(key)
            if holder is not None and holder is not self and holder._fd is not None:
                self._fd, holder._fd = holder._fd, None
            elif self._fd is None:
                self._fd = _lock(self.path.with_suffix(".lock"))
            _HOLDERS[key] = self

    def release(self) -> None:
        with _HOLDERS_LOCK:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    self.address_path.unlink()  # no server now: another process takes the account over
                os.close(self._fd)  # closing the descriptor releases the lock
                self._fd = None
            if _HOLDERS.get(str(self.path)) is self:
                del _HOLDERS[str(self.path)]

    def publish(self, address: dict[str, Any]) -> bool:
        """Say where this account is served (atomically, readable by this user only); False when not serving it."""
        if self._fd is None:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".part")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"version": VERSION, **address}, handle)
            with _HOLDERS_LOCK:
                if self._fd is not None:
                    os.replace(tmp, self.address_path)
                    return True
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return False

    def save(self, data: dict[str, Any]) -> bool:
        """Write atomically (a killed kernel never leaves half a file); False when not serving it."""
        if self._fd is None:
            return False
        text = self._encode(data)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".part")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            with _HOLDERS_LOCK:  # taken over since the check above: the new holder's file stays
                if self._fd is not None:
                    os.replace(tmp, self.path)
                    return True
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return False

    def _encode(self, data: dict[str, Any]) -> str:
        """The file's text: ``data`` with the world's runs and keys spliced in, each encoded once."""
        world = dict(data["world"])
        runs = ", ".join([self._run_text(run) for run in world.pop("runs")])
        keys = ", ".join(self._keys_text(world.pop("idempotency")))
        rest = {key: value for key, value in data.items() if key != "world"}
        # json.dumps(), not json.dump(): dump() encodes in Python, dumps() in one C call per item.
        return (json.dumps({"version": VERSION, **rest})[:-1] + ', "world": ' + json.dumps(world)[:-1]
                + ', "runs": [' + runs + '], "idempotency": [' + keys + "]}}")

    def _run_text(self, run: str | dict[str, Any]) -> str:
        if isinstance(run, str):  # encoded by an earlier write
            return run
        text = json.dumps(run)
        if run.get("status") in TERMINAL:
            self.encoded[run["run_id"]] = text
        return text

    def _keys_text(self, rows: list[list[Any]]) -> list[str]:
        known, self._key_texts = self._key_texts, {}  # expired keys drop out
        for row in rows:
            scope = tuple(row)
            self._key_texts[scope] = known.get(scope) or json.dumps(row)
        return list(self._key_texts.values())

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


class Saver:
    """Writes one account's file from a daemon thread: at most once per ``interval``, off the world's lock.

    ``changed()`` only marks the account as changed (cheap: the world calls it under its lock).
    The thread then takes ``snapshot()`` (which holds the world's lock just to copy the state) once
    a write is due, and encodes and writes it outside that lock. ``close()`` writes what is left,
    so a simulator stopped normally loses nothing; a process killed outright (kill -9) loses at
    most the changes of the last ~``interval`` seconds. The thread never prints: a failed write is
    kept in ``error`` and tried again a second later, and ``close()`` raises it if it still fails.
    """

    def __init__(self, state: StateFile, snapshot: Callable[[], dict[str, Any]],
                 interval: float = SAVE_INTERVAL) -> None:
        self._state, self._snapshot, self._interval = state, snapshot, interval
        self._cond = threading.Condition()
        self._writing = threading.Lock()  # one write at a time: flush() waits for the thread's
        self._thread: threading.Thread | None = None
        self._dirty = False
        self._last: float | None = None  # monotonic() when the last write began
        self.writes = 0
        self.error: Exception | None = None
        state.saver = self
        _SAVERS.add(self)

    def changed(self) -> None:
        """The account changed: write it when the next write is due."""
        with self._cond:
            self._dirty = True
            if self._thread is None and self._state.active:
                self._thread = threading.Thread(target=self._run, name=f"flora-sim-save:{self._state.path.stem}",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()  # the thread looks at the clock again: a write may be due now

    def flush(self) -> None:
        """Write now if anything changed since the last write (after any write under way)."""
        with self._writing:
            with self._cond:
                if not self._dirty:
                    return
                self._dirty, self._last = False, monotonic()
            try:
                written = self._state.save(self._snapshot())
            except BaseException:
                with self._cond:
                    self._dirty = True  # still to write
                raise
            self.writes += 1 if written else 0  # not counted: another simulator took the account over

    def close(self) -> None:
        """Stop the thread and write what is left (raises if that write fails)."""
        while True:
            with self._cond:
                thread, self._thread = self._thread, None
                self._cond.notify_all()
            if thread is None:
                break
            thread.join()
        self.flush()

    def _run(self) -> None:
        while self._due():
            try:
                self.flush()
                self.error = None
            except Exception as exc:  # kept for close() to raise: this thread never prints
                self.error = exc

    def _due(self) -> bool:
        """Wait until there is something to write and the interval since the last write has passed."""
        me = threading.current_thread()
        with self._cond:
            while self._thread is me:
                wait = None
                if self._dirty:
                    wait = 0.0 if self._last is None else self._last + self._interval - monotonic()
                    if wait <= 0:
                        return True
                self._cond.wait(wait)  # changed() wakes it early, to look at the clock again
            return False


@atexit.register
def _flush_all() -> None:
    """A process ending without stopping its simulators still writes their last changes."""
    for saver in list(_SAVERS):
        try:
            saver.flush()
        except OSError:
            pass  # the file's directory is gone (a temp dir removed): nothing to keep it in


def read_address(path: Path) -> dict[str, Any] | None:
    """The published address of an account's server (``StateFile.publish``), or None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and data.get("version") == VERSION and isinstance(data.get("port"), int)
    return data if ok else None


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

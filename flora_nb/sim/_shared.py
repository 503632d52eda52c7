"""One simulated account, one simulator, any number of processes (notebook kernels) using it.

The first process to open a saved account serves it: it holds the account's lock and publishes
where it serves (``<name>.address.json``, see ``StateFile.publish``). A later process finds the
lock taken, checks that the published server answers (an authenticated ``GET /_sim/info`` that
names the same account), and uses it over HTTP like any client: its ``fl.simulator`` is a
``SharedSimulator``. Both sessions then share the account's runs as two kernels share one real
FLORA account.

When the serving process ends (closed, or killed outright), a watchdog thread in each sharing
process notices that the lock is free: the first to take it loads the saved account and serves it
on the same port, so every sharer's base URL stays valid. When that port cannot be bound it serves
on another one and publishes it; the other sharers follow (``on_moved``). The watchdog never prints.

What a sharer asked for that differs from the running simulator (speed, seed, faults, ...) is not
applied: the running simulator wins, and ``SharedSimulator.not_applied`` says what differs.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from ._faults import Faults
from ._persist import StateBusy, read_address
from ._routes import API_PREFIX
from ._simulator import FloraSimulator

__all__ = ["JOIN_SECONDS", "WATCH_INTERVAL", "SharedSimulator", "open_account"]

WATCH_INTERVAL = 0.2  # seconds between two looks of a sharer's watchdog at the account's lock
JOIN_SECONDS = 10.0  # how long a new process waits for a busy account's server to answer
ANSWER_SECONDS = 2.0  # timeout of one request to the serving process


def open_account(sim: FloraSimulator, asked: dict[str, Any], *, wait: float = JOIN_SECONDS) -> FloraSimulator | SharedSimulator:
    """Serve ``sim``'s saved account from this process, or share the server of the process that serves it.

    ``asked``: the options the caller gave (speed, seed, faults, ...), compared with the running
    simulator's. Raises StateBusy when the account's lock is held but no server answers within ``wait``.
    """
    assert sim.state_path is not None
    state = Path(sim.state_path)
    end = time.monotonic() + wait
    while True:
        try:
            return sim.start()
        except StateBusy:
            pass
        address = answering(state)
        if address is not None:
            return SharedSimulator(state, address, asked)
        if time.monotonic() >= end:
            raise StateBusy(f"the simulated account {state.stem!r} is served by another process "
                            "(another notebook kernel?) that does not answer")
        time.sleep(0.05)  # its server is starting, or ending: look again


def answering(state: Path) -> dict[str, Any] | None:
    """The published address of ``state``'s server if that server answers as this account's, else None."""
    address = read_address(state.with_suffix(".address.json"))
    if address is None or not _alive(address.get("pid")):
        return None
    try:
        info = inspect(address, "info")
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("state_path") != str(state):
        return None  # another account's simulator, on a port this one used to have
    return {**address, "settings": info.get("settings") or address.get("settings") or {}}


def inspect(address: dict[str, Any], name: str) -> Any:
    """``GET /_sim/{name}`` of the simulator at ``address`` (raises OSError or ValueError when it fails)."""
    request = urllib.request.Request(f"{address['origin']}/_sim/{name}",
                                     headers={"Authorization": f"Bearer {address['api_key']}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    try:
        with opener.open(request, timeout=ANSWER_SECONDS) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise OSError(f"the simulator answered {exc.code}") from None


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


def faults_from(settings: dict[str, Any]) -> Faults:
    """The running simulator's faults, from its published settings."""
    given = dict(settings.get("faults") or {})
    names = {f.name for f in fields(Faults)}
    failures = {text: tuple(what) if isinstance(what, list) else what
                for text, what in dict(given.pop("input_failures", None) or {}).items()}
    return Faults(**{k: v for k, v in given.items() if k in names}, input_failures=failures)


def differences(asked: dict[str, Any], settings: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What was asked for that the running simulator does not have: {option: (asked, running)}."""
    found: dict[str, tuple[Any, Any]] = {}
    for name, value in asked.items():
        if name == "faults":
            if value is None:
                continue  # no faults asked for: whatever runs is fine
            running = faults_from(settings)
            for f in fields(Faults):
                mine, theirs = getattr(value, f.name), getattr(running, f.name)
                if mine != theirs and not (f.name == "input_failures" and dict(mine) == dict(theirs)):
                    found[f.name] = (mine, theirs)
        elif name in settings and value != settings[name]:
            found[name] = (value, settings[name])
    return found


class SharedSimulator:
    """The account's simulator, served by another process; ``fl.simulator`` of a sharing session.

    It answers like a ``FloraSimulator`` (``base_url``, ``api_key``, ``speed``, ``faults``, ``stats()``,
    ``run_records()``, ``requests()``, ``stop()``); the server-side truth comes from the serving process
    (``GET /_sim/...``), or from this process once its watchdog took the account over (``serving``).
    ``stop()`` ends the watchdog (and the server, if this process took it over: another sharer then
    takes it); it never stops another process's server.
    """

    shared = True

    def __init__(self, state: Path, address: dict[str, Any], asked: dict[str, Any], *,
                 interval: float | None = None) -> None:
        self._state = state
        self._address = dict(address)
        self._settings: dict[str, Any] = dict(address.get("settings") or {})
        self.not_applied = differences(asked, self._settings)
        self.interval = WATCH_INTERVAL if interval is None else interval
        self.on_moved: Callable[[str], None] | None = None  # told the new base URL when the server moved
        self.takeovers = 0  # times this process took the account over
        self.error: Exception | None = None  # the watchdog's last error (it never prints)
        self._local: FloraSimulator | None = None  # this process's server of the account, after a takeover
        self._taker: FloraSimulator | None = None
        self._seen_address: float | None = None
        self._lock = threading.RLock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"flora-sim-watch:{state.stem}", daemon=True)
        self._thread.start()

    # -- the watchdog ----------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.look()
                self.error = None
            except Exception as exc:  # kept, never printed: the next look tries again
                self.error = exc

    def look(self) -> None:
        """One look of the watchdog: serve the account if no process does; follow its server if it moved."""
        with self._lock:
            if self._stopped.is_set() or (self._local is not None and self._local.running):
                return
            self._local = None  # a newer simulator of this process took it over from ours
            taker = self._taker or self._new_taker()
            try:
                taker.start()
            except StateBusy:
                self._taker = taker
                self._follow()
                return
            self._taker, self._local = None, taker
            self.takeovers += 1
        self._moved(taker.origin)

    def _new_taker(self) -> FloraSimulator:
        """A simulator of the account with the running one's settings, on its port (another if taken)."""
        s = self._settings
        options = {k: s[k] for k in ("cost_lag", "poll_url_style", "pending_seconds", "asset_processing_seconds", "catalog")
                   if s.get(k) is not None}
        faults = faults_from(s)
        taker = FloraSimulator(api_keys=(self.api_key,), speed=float(s.get("speed", 20.0)), seed=int(s.get("seed", 0)),
                               faults=Faults(**{f.name: getattr(faults, f.name) for f in fields(Faults) if f.name != "credits"}),
                               port=int(self._address["port"]), state_path=self._state, **options)
        taker._taking_over = True  # the port taken by some other program: serve anyway, and say where
        return taker

    def _follow(self) -> None:
        """Another process (or simulator) serves the account: follow it if it serves elsewhere now."""
        path = self._state.with_suffix(".address.json")
        try:
            stamp = path.stat().st_mtime
        except OSError:
            return
        if stamp == self._seen_address:
            return
        address = answering(self._state)
        if address is None:
            return  # not answering yet: look again
        self._seen_address = stamp
        self._settings = dict(address.get("settings") or self._settings)
        self._moved(address["origin"], address)

    def _moved(self, origin: str, address: dict[str, Any] | None = None) -> None:
        with self._lock:
            old = self._address["origin"]
            self._address = {**self._address, **(address or {}), "origin": origin, "port": _port_of(origin)}
        if origin != old and self.on_moved is not None:
            self.on_moved(origin + API_PREFIX)

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop watching; stop serving if this process took the account over (another sharer takes it then)."""
        self._stopped.set()
        with self._lock:
            local, self._local = self._local, None
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if local is not None:
            local.stop()

    @property
    def note(self) -> str | None:
        """What the session can tell the user: which of the options asked for the running simulator does not have."""
        if not self.not_applied:
            return None
        said = ", ".join(f"{name.replace('_', ' ')} {_shown(theirs)} (asked: {_shown(mine)})"
                         for name, (mine, theirs) in self.not_applied.items())
        return f"This simulated account was already open in another kernel, so its simulator keeps its settings: {said}."

    @property
    def running(self) -> bool:
        """Whether this session still uses the simulator (until ``stop()``)."""
        return not self._stopped.is_set()

    @property
    def serving(self) -> bool:
        """Whether this process serves the account now (it took it over from a process that ended)."""
        local = self._local
        return local is not None and local.running

    def __repr__(self) -> str:
        where = "this process" if self.serving else f"process {self._address.get('pid')}"
        return f"<FloraSimulator {self.base_url} speed={self.speed} shared, served by {where}>"

    # -- connection details ---------------------------------------------------------------

    @property
    def origin(self) -> str:
        return str(self._address["origin"])

    @property
    def base_url(self) -> str:
        return self.origin + API_PREFIX

    @property
    def api_key(self) -> str:
        return str(self._address["api_key"])

    @property
    def workspace_id(self) -> str:
        return str(self._address["workspace_id"])

    @property
    def state_path(self) -> str:
        return str(self._state)

    @property
    def speed(self) -> float:
        return float(self._settings.get("speed", 20.0))

    @property
    def seed(self) -> int:
        return int(self._settings.get("seed", 0))

    @property
    def faults(self) -> Faults:
        return faults_from(self._settings)

    @property
    def cost_lag(self) -> float:
        return float(self._settings.get("cost_lag", 0.0))

    def settings(self) -> dict[str, Any]:
        return dict(self._settings)

    # -- server-side truth ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The serving simulator's ``stats()``."""
        return dict(self._truth("stats"))

    def run_records(self) -> list[dict[str, Any]]:
        """Every run as the serving simulator knows it, oldest first."""
        return list(self._truth("run-records"))

    def requests(self) -> list[dict[str, Any]]:
        """The serving simulator's recent requests (never the key)."""
        return list(self._truth("requests"))

    def _truth(self, name: str) -> Any:
        local = self._local
        if local is None or not local.running:
            try:
                return inspect(self._address, name)
            except (OSError, ValueError):
                self.look()  # its server may have ended: take it over or follow it, then ask once more
                local = self._local
                if local is None:
                    return inspect(self._address, name)
        return {"stats": local.stats, "run-records": local.run_records, "requests": local.requests}[name]()


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "another catalog"
    return "other values" if hasattr(value, "items") else str(value)


def _port_of(origin: str) -> int:
    return int(origin.rsplit(":", 1)[1])

"""FloraSimulator: a local FLORA API on loopback, with fault switches and server-side truth."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from ._accounts import Accounts
from ._assets import PROCESSING_SECONDS, AssetStore
from ._catalog import Catalog
from ._faults import Faults
from ._persist import Saver, StateFile
from ._routes import API_PREFIX, POLL_URL_STYLES, Api
from ._server import App, SimServer
from ._state import Clock, World, to_ms
from ._traffic import Traffic

DEFAULT_API_KEY = "sk_sim_demo"


def _check_options(speed: float, cost_lag: float, pending: float, poll_url_style: str) -> None:
    if speed <= 0:
        raise ValueError(f"speed must be > 0, got {speed!r}")
    if cost_lag < 0 or pending < 0:
        raise ValueError("cost_lag and pending_seconds must be >= 0")
    if poll_url_style not in POLL_URL_STYLES:
        raise ValueError(f"poll_url_style must be one of {POLL_URL_STYLES}")


def _shut(server: SimServer, thread: threading.Thread | None) -> None:
    server.shutdown()
    server.server_close()
    server.close_connections()
    if thread is not None:
        thread.join(timeout=5)


def _url_host(host: str) -> str:
    # A wildcard bind is reachable on loopback; IPv6 literals need brackets in URLs.
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1" if host != "::" else "[::1]"
    return f"[{host}]" if ":" in host else host


class FloraSimulator:
    """A FLORA API simulator serving over HTTP in a background thread.

    Every duration is divided by ``speed`` and reported in real (scaled) time. ``faults`` can
    be reassigned while serving; same ``seed`` + same request order -> same behaviour.
    ``clock_offset`` (seconds) puts the server's clock that far ahead of this machine's (run
    timestamps and the ``Date`` header), as a server whose clock is off would.
    With ``state_path`` the account (runs, balance, keys, assets) continues from the file, read
    when ``start()`` has the account's lock; its balance is kept unless ``faults.credits`` is given,
    which sets it to that value. The file is written from a background thread at most once a
    second and on ``stop()``: a process killed outright loses at most the last ~second of the
    account's changes. While it serves, ``<state>.address.json`` says where, for other processes
    (``flora_nb.sim._shared``); a new simulator of the account in this process takes its port over.
    """

    def __init__(
        self,
        api_keys: Iterable[str] = (DEFAULT_API_KEY,),
        speed: float = 20.0,
        faults: Faults | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        catalog: list[dict[str, Any]] | None = None,
        *,
        key_workspaces: dict[str, list[str]] | None = None,
        cost_lag: float = 0.0,
        pending_seconds: float = 1.0,
        poll_url_style: str = "runs",
        asset_processing_seconds: float = PROCESSING_SECONDS,
        state_path: str | os.PathLike[str] | None = None,
        clock_offset: float = 0.0,
    ) -> None:
        _check_options(speed, cost_lag, pending_seconds, poll_url_style)
        if asset_processing_seconds < 0:
            raise ValueError("asset_processing_seconds must be >= 0")
        keys = (api_keys,) if isinstance(api_keys, str) else tuple(api_keys)
        self._pending_seconds = float(pending_seconds)
        self._catalog_entries = catalog  # None: the built-in catalog (a process taking the account over needs the same)
        self._clock = Clock(float(clock_offset))  # every server timestamp and Date header
        self._accounts = Accounts(keys, key_workspaces, to_ms(self._clock()))
        self._world = World(
            faults=faults or Faults(),
            seed=seed,
            speed=speed,
            pending_seconds=pending_seconds,
            clock=self._clock,
        )
        self._traffic = Traffic()
        self._api = Api(
            world=self._world,
            catalog=Catalog(catalog),
            assets=AssetStore(),
            accounts=self._accounts,
            cost_lag=cost_lag,
            poll_url_style=poll_url_style,
            asset_processing_seconds=asset_processing_seconds,
        )
        self._app = App(api=self._api, traffic=self._traffic, clock=self._clock)
        self._host, self._port = host, port
        self._server: SimServer | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()
        self._state = StateFile(state_path) if state_path is not None else None
        self._saver: Saver | None = None
        self._saved_origin = ""
        self._preferred_port = port
        self._loaded = False
        # A sharing process taking an ended server's place (``_shared``): it never takes the account from a
        # simulator of this process, and serves on another port when its own is taken.
        self._taking_over = False
        self._app.inspect = self._inspect
        if self._state is not None:
            self._state.on_taken = self._hand_over

    # -- persistence -----------------------------------------------------------------------

    def _load(self, state: StateFile) -> None:
        """Continue the saved account (once, with its lock held: what its last server wrote is read)."""
        if self._loaded:
            return
        self._loaded = True
        data = state.read()
        if data is not None:
            self._world.restore(data["world"], self._api.catalog.get)
            for asset in state.assets_from(data.get("assets", [])):
                self._api.assets.add(asset)
            self._saved_origin = str(data.get("origin") or "")
            self._preferred_port = self._port or int(data.get("port") or 0)
        # Changes only mark the account; the saver writes it whole at most once a second, off the
        # world's lock (a write per start made a long sweep quadratic: each rewrote every run).
        self._saver = Saver(state, self._snapshot)
        self._world.on_change = self._saver.changed
        self._api.assets.on_add = self._save_asset

    def _snapshot(self) -> dict[str, Any]:
        """The account as the file keeps it (called by the saver, outside the world's lock)."""
        assert self._state is not None
        with self._world.lock:  # one consistent picture of runs, balance and keys
            world = self._world.snapshot(self._state.encoded)
        assets = self._state.asset_rows(self._api.assets.snapshot())
        return {"port": self._port, "origin": self._api.origin, "world": world, "assets": assets}

    def _save_asset(self, asset: Any) -> None:
        if self._state is not None and self._saver is not None and self._state.active:
            self._state.save_asset(asset)  # the bytes now (an upload is rare); its row with the next write
            self._saver.changed()

    @property
    def state_path(self) -> str | None:
        """The file this simulated account is kept in (None: it lives in memory only)."""
        return None if self._state is None else str(self._state.path)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FloraSimulator:
        """Bind and serve in a daemon thread; a no-op when already serving."""
        with self._lifecycle:
            if self._server is not None:
                return self
            if self._state is not None:
                self._state.acquire(take_over=not self._taking_over)
            try:
                if self._state is not None:
                    self._load(self._state)
                server = self._bind()
            except BaseException:
                if self._state is not None:
                    self._state.release()
                raise
            # Keep the port across stop()/start() so poll_urls handed out stay valid.
            self._port = server.server_address[1]
            self._api.origin = f"http://{_url_host(self._host)}:{self._port}"
            self._continue_account()
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"flora-sim:{self._port}",
                daemon=True,
            )
            self._server = server
            self._thread.start()
            self._publish()
            return self

    def _publish(self) -> None:
        """Tell other processes where this account is served (``_shared`` reads it)."""
        if self._state is not None:
            self._state.publish({"pid": os.getpid(), "host": self._host, "port": self._port, "origin": self._api.origin,
                                 "base_url": self.base_url, "api_key": self.api_key, "workspace_id": self.workspace_id,
                                 "state_path": str(self._state.path), "settings": self.settings()})

    def _hand_over(self) -> None:
        """Another simulator of this process takes the account over: write what is left, free the port."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if self._saver is not None:
            self._saver.flush()
        if server is not None:
            _shut(server, thread)

    def _bind(self) -> SimServer:
        """The port of this account's last server when it is free (its URLs stay valid), else any."""
        port = self._port or self._preferred_port
        try:
            return SimServer((self._host, port), self._app)
        except OSError:
            if not port or (port == self._port and not self._taking_over):
                raise
            return SimServer((self._host, 0), self._app)

    def _continue_account(self) -> None:
        if self._state is None:
            return
        if self._saved_origin and self._saved_origin != self._api.origin:
            self._state.encoded.clear()  # their poll_urls change
            self._world.rebase(self._saved_origin, self._api.origin)
            self._api.assets.rebase(self._saved_origin, self._api.origin)
        self._saved_origin = self._api.origin
        if self._saver is not None:
            self._saver.changed()

    def stop(self) -> None:
        """Stop serving and cut open connections; then write the saved account's last changes and let it go."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is not None:
            _shut(server, thread)
        if self._state is None:
            return
        try:
            if self._saver is not None:
                self._saver.close()  # nothing created before stop() is lost
        finally:
            self._state.release()  # a later process (kernel) may continue the account now

    def __enter__(self) -> FloraSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self._api.origin + API_PREFIX if self._server else "stopped"
        return f"<FloraSimulator {where} speed={self._world.speed}>"

    # -- connection details ---------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._server is not None

    shared = False  # served by this process (``SharedSimulator``: by another one)

    @property
    def not_applied(self) -> dict[str, tuple[Any, Any]]:
        """Options asked for that the running simulator does not have (only a shared one has any)."""
        return {}

    note: str | None = None  # what a shared simulator tells the user about options not applied; nothing here

    def settings(self) -> dict[str, Any]:
        """Speed, seed and faults in force, as JSON: what a process sharing this simulator is told."""
        faults = {f.name: getattr(self.faults, f.name) for f in dataclasses.fields(Faults)}
        faults["input_failures"] = dict(faults["input_failures"])
        return {"speed": self.speed, "seed": self._world.seed, "faults": faults, "cost_lag": self.cost_lag,
                "poll_url_style": self._api.poll_url_style, "pending_seconds": self._pending_seconds,
                "asset_processing_seconds": self._api.asset_processing_seconds, "catalog": self._catalog_entries}

    def _inspect(self, name: str) -> Any:
        """The ``GET /_sim/{name}`` answers (server-side truth for a process sharing this simulator)."""
        views = {"info": lambda: {"state_path": self.state_path, "pid": os.getpid(), "settings": self.settings()},
                 "stats": self.stats, "run-records": self.run_records, "requests": self.requests}
        view = views.get(name)
        return None if view is None else view()

    @property
    def origin(self) -> str:
        """``http://host:port`` (media URLs live here, outside the API prefix)."""
        if not self._api.origin:
            raise RuntimeError("the simulator has not been started")
        return self._api.origin

    @property
    def base_url(self) -> str:
        """``http://host:port/api/v1``."""
        return self.origin + API_PREFIX

    @property
    def api_key(self) -> str:
        """The first API key."""
        return self._accounts.keys[0]

    @property
    def workspace_id(self) -> str:
        """The default workspace of the first key."""
        grants = self._accounts.grants(self.api_key)
        assert grants is not None
        return grants[0]

    @property
    def speed(self) -> float:
        """The factor every simulated duration is divided by."""
        return self._world.speed

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self._world.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._world.set_faults(faults)

    @property
    def cost_lag(self) -> float:
        """Seconds a final charge stays unknown after a run ends (FLORA reports ``charged_cost`` late)."""
        return self._api.cost_lag

    @cost_lag.setter
    def cost_lag(self, seconds: float) -> None:
        if not seconds >= 0:  # NaN too
            raise ValueError(f"cost_lag must be >= 0, got {seconds!r}")
        self._api.cost_lag = float(seconds)

    # -- server-side truth ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters of runs (advanced to now) and requests since the last reset_stats()."""
        return {**self._world.stats(), **self._traffic.stats()}

    def reset_stats(self) -> None:
        """Clear request counters and the request log; runs and credits are untouched."""
        self._traffic.reset()

    def run_records(self) -> list[dict[str, Any]]:
        """Every run as the server knows it, oldest first."""
        return self._world.records()

    def requests(self) -> list[dict[str, Any]]:
        """The most recent requests (up to 20000), oldest first; never the key."""
        return self._traffic.records()

    def techniques(self) -> list[dict[str, Any]]:
        """The catalog as GET /techniques shows it."""
        return [spec.view() for spec in self._api.catalog.search(None)]

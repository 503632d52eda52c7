"""Run: the live handle a notebook gets back from ``Flora.run()``."""

from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import hashlib
import logging
import mimetypes
import os
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, BinaryIO, Callable, Protocol

from ._errors import FloraTimeout, InputError, RunFailedError, StartUnconfirmedError
from ._ledger import LedgerRow
from ._look import duration, elapsed, phase, run_cost, run_line_html, say
from ._paths import extension_for, output_path, private_dir
from ._states import DONE, FAILED, INPUTS_DIFFER, RUNNING, STARTING, UNCONFIRMED

__all__ = ["Run", "RunHost", "RunOutput"]

log = logging.getLogger("flora_nb.run")

MAX_NOTE_CHARS = 2000
_MAKING = threading.Lock()  # makes each run's Condition once
LISTENER_IDLE = 10.0  # a listener thread with nothing to tell for this long ends (the next change starts one)
# A start with no run id that nothing changed for this long is read again from the ledger (at most this
# often) when someone asks whether it is done: another session or process may have bound or finished it.
REREAD_EVERY = 0.5
_monotonic = time.monotonic  # the handle's clock for those reads (tests put a fake one here)


class RunHost(Protocol):
    """What a run handle may ask of the engine that made it (``RunEngine`` is one)."""

    cache_dir: Path

    @property
    def health(self) -> str:
        """``ok``, or what keeps the session from FLORA."""
        ...

    def fetch_media_to(self, url: str, handle: BinaryIO) -> None:
        """Stream an output's bytes into ``handle``."""
        ...

    def save_rating(self, local_id: int, rating: float | None, note: str | None) -> LedgerRow | None:
        """Write a rating and note; the row as it is now."""
        ...

    def refresh(self, run: Run) -> None:
        """Poll FLORA for this run now and record what it says."""
        ...

    def listener_failed(self, callback: Any) -> None:
        """A change listener raised: count it; tracking goes on."""
        ...

    def reread(self, run: Run) -> None:
        """Bring ``run`` up to date from the ledger (another session may have bound or finished its row)."""
        ...


class RunOutput:
    """One output of a run; media is fetched through the kernel and cached on disk."""

    def __init__(self, engine: RunHost, data: dict[str, Any]):
        self._engine = engine
        self.output_id = str(data.get("output_id") or "")
        self.type = str(data.get("type") or "")
        self.url = str(data.get("url") or "")

    @property
    def text(self) -> str | None:
        """The text itself, for text outputs (FLORA carries it in ``url``)."""
        return self.url if self.type == "text" else None

    def fetch(self) -> bytes:
        """The output's bytes (downloaded once, then read from the cache)."""
        if self.text is not None:
            return self.text.encode("utf-8")
        return self._cached().read_bytes()

    def _cached(self) -> Path:
        """The cache file of this media output, streamed to disk on first use."""
        cache = self._engine.cache_dir / hashlib.sha256(self.url.encode()).hexdigest()
        if cache.exists():
            return cache
        private_dir(cache.parent, tighten=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                self._engine.fetch_media_to(self.url, handle)
            os.replace(tmp, cache)  # atomic: a half-written file is never taken for a cached one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return cache

    @property
    def extension(self) -> str:
        """From a fixed list for the output's type (a URL's ``.py`` never becomes a file's)."""
        return extension_for(self.type, self.url if self.text is None else "")

    def save(self, path: str | Path) -> Path:
        """Write the output to ``path`` (a file name, or a directory to put it in)."""
        target = Path(path)
        if target.is_dir():
            target = output_path(target, [self.output_id or "output"], self.extension)
        if self.text is not None:
            target.write_bytes(self.fetch())
        else:
            shutil.copyfile(self._cached(), target)
        return target

    @property
    def mime_type(self) -> str:
        return mimetypes.guess_type("x" + self.extension)[0] or "application/octet-stream"

    def __repr__(self) -> str:
        shown = (self.text[:40] + "...") if self.text and len(self.text) > 40 else (self.text or self.url)
        return f"RunOutput({self.output_id!r}, type={self.type!r}, {shown!r})"


def _ts(value: float | None) -> _dt.datetime | None:
    return None if value is None else _dt.datetime.fromtimestamp(value, tz=_dt.timezone.utc)


class Run:
    """A run started from this session; its state is kept fresh by the session's poller."""

    # A run's Condition (~1.4 KB) is made when first needed (a wait, a rating, a listener): most
    # tracked runs never need one. Listeners are a tuple replaced on change, shared while empty.
    _cond: threading.Condition | None = None
    _listeners: tuple[Callable[[Run], Any], ...] = ()
    _inline: tuple[Callable[[Run], Any], ...] = ()  # bookkeeping told at once, in the changing thread
    _looked_at = float("-inf")  # monotonic time of the last change taken or ledger read

    def __init__(self, engine: RunHost, row: LedgerRow):
        self._engine = engine
        self._row = row

    # ---------------------------------------------------------------- state

    @property
    def local_id(self) -> int:
        return self._row.local_id

    @property
    def id(self) -> str | None:
        """The FLORA run id (None while the start is not confirmed)."""
        return self._row.run_id

    run_id = id

    @property
    def status(self) -> str:
        """Ledger status: queued, starting, pending, running, completed, failed or skipped."""
        return self._row.status

    @property
    def progress(self) -> float:
        """0..100 as FLORA last reported it."""
        return self._row.progress

    @property
    def estimated_cost(self) -> float | None:
        """USD: the technique's run_cost when the run was planned."""
        return self._row.estimated_cost

    @property
    def charged_cost(self) -> float | None:
        """USD: the final charge (None until FLORA reports it; 0 for refunds and skips)."""
        return self._row.charged_cost

    @property
    def estimated_seconds(self) -> float | None:
        """FLORA's estimate from the start answer."""
        return self._row.estimated_seconds

    @property
    def error_code(self) -> str | None:
        """Why the run failed, was skipped, or what its start is waiting for."""
        return self._row.error_code

    @property
    def error_message(self) -> str | None:
        """The error in words."""
        return self._row.error_message

    @property
    def inputs(self) -> dict[str, Any]:
        """The inputs this start sent."""
        return self._row.inputs

    @property
    def labels(self) -> dict[str, Any]:
        """The user's labels."""
        return self._row.labels

    @property
    def technique_id(self) -> str:
        """The technique's id."""
        return self._row.technique_id

    @property
    def technique_name(self) -> str | None:
        """The technique's name."""
        return self._row.technique_name

    @property
    def workspace_id(self) -> str:
        """The workspace the run is billed to."""
        return self._row.workspace_id

    @property
    def project_id(self) -> str | None:
        """The FLORA project holding the run."""
        return self._row.project_id

    @property
    def sweep_id(self) -> str | None:
        """The sweep it belongs to (None for single runs)."""
        return self._row.sweep_id

    @property
    def variation(self) -> int | None:
        """Its variation number within the sweep."""
        return self._row.variation

    @property
    def endpoint(self) -> str:
        """The endpoint (base URL or sim://name) its ledger row is kept under."""
        return self._row.endpoint

    @property
    def idempotency_key(self) -> str:
        """The key every attempt of this start carries."""
        return self._row.idempotency_key

    @property
    def poll_url(self) -> str | None:
        """Where FLORA says to poll it."""
        return self._row.poll_url

    @property
    def reused_from(self) -> str | None:
        """The earlier run whose result a reusing sweep took."""
        return self._row.reused_from

    @property
    def retry_of(self) -> int | None:
        """The local id of the failed run this one retries."""
        return self._row.retry_of

    @property
    def owner(self) -> str | None:
        """The session (host:pid:token) that wrote the row."""
        return self._row.owner

    @property
    def intent_at(self) -> float:
        """Unix time the start was recorded, before anything was sent."""
        return self._row.intent_at

    @property
    def updated_at(self) -> float:
        """Unix time of the row's last change."""
        return self._row.updated_at

    @property
    def window_low(self) -> float | None:
        """Earliest moment (unix, local clock) its POST may have gone out."""
        return self._row.window_low

    @property
    def window_high(self) -> float | None:
        """Latest moment FLORA may have acted on it (a lease while the start is sent)."""
        return self._row.window_high

    @property
    def pairing(self) -> str | None:
        """How a lost start was bound: exact, or unknown among a group of starts."""
        return self._row.pairing

    @property
    def pairing_doubtful(self) -> bool:
        """True when this row's run may have been made from another start's inputs (a lost start bound
        in a group whose inputs differ): its outputs must not be taken as this row's own."""
        pairing = self._row.pairing or ""
        return pairing.startswith("unknown") and INPUTS_DIFFER in pairing


    @property
    def snapshot(self) -> LedgerRow:
        """The run's ledger row as last seen (replaced, never changed in place: do not modify it)."""
        return self._row

    @property
    def began_at(self) -> float:
        """When the run began, as a timestamp: FLORA's start, else its creation, else our intent."""
        row = self._row
        return row.started_at or row.created_at or row.intent_at

    @property
    def health(self) -> str:
        """``ok``, or what keeps this run's session from FLORA (e.g. "FLORA unreachable, retrying")."""
        return self._engine.health

    @property
    def outputs(self) -> list[RunOutput]:
        return [RunOutput(self._engine, o) for o in self._row.outputs]

    @property
    def created_at(self) -> _dt.datetime | None:
        return _ts(self._row.created_at)

    @property
    def started_at(self) -> _dt.datetime | None:
        return _ts(self._row.started_at)

    @property
    def completed_at(self) -> _dt.datetime | None:
        return _ts(self._row.completed_at)

    @property
    def unconfirmed(self) -> bool:
        """The start's answer was lost and its run was not found on FLORA (``resume()`` looks again)."""
        return self._row.status == STARTING and self._row.error_code == UNCONFIRMED

    @property
    def done(self) -> bool:
        """True once nothing more will happen by itself: completed, failed, skipped or unconfirmed."""
        if self._row.status in DONE or self.unconfirmed:
            return True
        self._look_again()
        return self._row.status in DONE or self.unconfirmed

    def _look_again(self) -> None:
        """A start with no run id that nothing changed for ``REREAD_EVERY`` s: read its row again (another
        session may have bound or finished it, and this session may not be looking for it)."""
        row = self._row
        if row.status != STARTING or row.run_id is not None:
            return  # a run with an id is polled; queued rows wait for their own launcher
        now = _monotonic()
        if now - self._looked_at < REREAD_EVERY:
            return
        cond = self._changed
        if not cond.acquire(blocking=False):
            return  # a change is being taken right now: that is news enough
        try:  # under the run's lock: a change taken meanwhile is never overwritten by an older read
            self._looked_at = now
            self._engine.reread(self)
        except Exception as exc:  # a locked or closed ledger: the next look tries again
            log.debug("flora_nb: reading run %s again failed: %s", self.local_id, exc)
        finally:
            cond.release()

    @property
    def rating(self) -> float | None:
        """The user's 1-5 star rating (None when unrated); kept in the local ledger only."""
        return self._row.rating

    @property
    def note(self) -> str | None:
        """The user's note on this run (None when there is none); kept in the local ledger only."""
        return self._row.note

    def rate(self, stars: int | None, note: str | None = None) -> Run:
        """Rate this run 1-5 whole stars (None clears), with an optional short note; local only.

        ``note=None`` keeps the note already there, ``note=""`` removes it; ``rate(None)`` clears both.
        """
        rating = _check_stars(stars)
        if note is None:
            kept = None if stars is None else self._row.note
        else:
            kept = _check_note(note)
        row = self._engine.save_rating(self.local_id, rating, kept)
        if row is not None:
            with self._changed:  # our own write is the newest rating, whatever the clock says
                self._row = dataclasses.replace(self._row, rating=row.rating, note=row.note)
            self.apply_row(row)
        return self

    # ---------------------------------------------------------------- updates

    @property
    def _changed(self) -> threading.Condition:
        """The run's Condition, made on first use (under ``_MAKING``, so ``apply_row`` never misses it)."""
        cond = self._cond
        if cond is None:
            with _MAKING:
                cond = self._cond
                if cond is None:
                    cond = self._cond = threading.Condition()
        return cond

    def apply_row(self, row: LedgerRow) -> None:
        """Take a newer ledger row and tell the listeners (the engine calls this, from any thread)."""
        cond = self._cond
        if cond is None:
            with _MAKING:  # no Condition yet: nobody waits or rates, and none is made meanwhile
                cond = self._cond
                if cond is None:
                    self._take(row)
        if cond is not None:
            with cond:
                self._take(row)
                cond.notify_all()
        self._tell(self._inline)  # a sweep's slot counting: never behind a user's callback on the listener thread
        listeners = self._listeners  # a tuple: a listener added meanwhile waits for the next change
        if not listeners:
            return
        if threading.current_thread() is threading.main_thread():
            self._tell(listeners)  # the notebook's own call (rate(), refresh()): told before it returns
        else:  # the poller, a sweep's launcher, a listener: never held up by a slow or failing listener
            _listener_thread(self._engine).put(lambda: self._tell_from_thread(listeners))

    def _tell(self, listeners: tuple[Callable[[Run], Any], ...]) -> None:
        for callback in listeners:
            try:
                callback(self)
            except Exception:  # a broken widget must not stop anything (in the main thread, Ctrl-C still does)
                self._engine.listener_failed(callback)

    def _tell_from_thread(self, listeners: tuple[Callable[[Run], Any], ...]) -> None:
        for callback in listeners:
            try:
                callback(self)
            except BaseException:  # even SystemExit: it must not end the thread that tells the others
                try:
                    self._engine.listener_failed(callback)
                except BaseException:  # nor may counting it
                    log.debug("flora_nb: counting a failed listener failed", exc_info=True)

    def _take(self, row: LedgerRow) -> None:
        current = self._row
        if row.updated_at < current.updated_at and (row.rating, row.note) != (current.rating, current.note):
            # A poll read before rate() wrote, applied after it: keep the newer rating.
            row = dataclasses.replace(row, rating=current.rating, note=current.note)
        self._row = row
        if row.status == STARTING:  # only a start's handle ever reads its row again (see _look_again)
            self._looked_at = _monotonic()

    def on_change(self, callback: Callable[[Run], Any], *, inline: bool = False) -> Callable[[Run], Any]:
        """Call ``callback(run)`` after every change.

        A change seen in the background (by the poller, a sweep's launcher) is told from the session's
        listener thread, in order: a slow callback delays only later callbacks, never tracking; one that
        raises (even ``SystemExit``) is counted in ``listener_errors``. It may start a run and ``wait()``
        for it ("when A finishes, start B"). A change made in the main thread (``rate()``) is told at once.
        ``inline=True`` (quick bookkeeping that never blocks, such as a sweep's count of runs in flight):
        told at once in whichever thread made the change, so a blocked callback never holds it up.
        """
        with self._changed:
            if inline:
                self._inline = (*self._inline, callback)
            else:
                self._listeners = (*self._listeners, callback)
        return callback

    def refresh(self) -> Run:
        """Poll FLORA for this run now (the background poller does this by itself)."""
        self._engine.refresh(self)
        return self

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the run is done; FloraTimeout at the deadline. Ctrl-C stops the wait only.

        A start with no run id is read again from the ledger now and then (see ``done``), so a run
        another session bound and finished ends the wait too.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._wait_until_done(deadline, timeout)
        except KeyboardInterrupt:  # Ctrl-C stops the waiting, not the run: one line, no traceback
            say(f"Stopped waiting for run {self.id or self.local_id}; it keeps running on FLORA and being tracked.")
            return self
        if self.unconfirmed or (self._row.run_id is None and self._row.error_code == "start_not_received"):
            raise StartUnconfirmedError(f"run {self.local_id}: {self._row.error_message}", run=self)
        return self

    def _wait_until_done(self, deadline: float | None, timeout: float | None) -> None:
        with self._changed:
            while not self.done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise FloraTimeout(
                        f"run {self.id or self.local_id} is still {self.status} after {timeout} s; "
                        "it keeps being tracked, call wait() again or look at it later."
                    )
                # Short slices keep Ctrl-C responsive: a Condition wait is not interruptible.
                self._changed.wait(0.2 if left is None else min(left, 0.2))

    def raise_for_status(self) -> Run:
        """Raise RunFailedError if the run failed; return the run otherwise."""
        if self._row.status == FAILED:
            raise RunFailedError(
                f"run {self.id or self.local_id} failed: {self._row.error_code}: {self._row.error_message}",
                run=self,
            )
        return self

    def download(self, directory: str | Path = ".") -> list[Path]:
        """Save every output into ``directory``; returns the paths written."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        taken: set[Path] = set()
        stem = self.id or f"local{self.local_id}"
        return [o.save(output_path(folder, [stem, o.output_id], o.extension, taken)) for o in self.outputs]

    # ---------------------------------------------------------------- display

    def _summary(self) -> str:
        """Name · what it is doing · how long · cost, in words ("Poster Studio · completed · 3.1 s · $0.04")."""
        row = self._row
        name = row.technique_name or row.technique_id
        words = [name, phase(self, row.progress), duration(elapsed(self)), run_cost(self)]
        if row.error_code and row.status != RUNNING:
            words.append(row.error_code)
        return " · ".join(w for w in words if w)

    def __repr__(self) -> str:
        return f"<Run {self.id or 'not started yet'} {self._summary()}>"

    def _ipython_display_(self) -> None:
        from ._display import display_live

        display_live(self)

    def _repr_html_(self) -> str:
        """One line (bar while live, words, muted id); the error on its own line."""
        return run_line_html(self)


class _ListenerThread:
    """Tells run listeners of one host (a session's engine) from one daemon thread, in the order of the
    changes; it ends after ``LISTENER_IDLE`` s with nothing to tell, and the next change starts another."""

    def __init__(self) -> None:
        self._jobs: collections.deque[Callable[[], None]] = collections.deque()
        self._lock = threading.Condition(threading.Lock())
        self._running = False

    def put(self, job: Callable[[], None]) -> None:
        """Run ``job`` (which catches what it raises) on the thread, after the jobs before it."""
        with self._lock:
            self._jobs.append(job)
            if self._running:
                self._lock.notify()
                return
            self._running = True
        try:
            threading.Thread(target=self._serve, name="flora_nb-listeners", daemon=True).start()
        except RuntimeError:  # no new threads (the interpreter is shutting down): nothing is told
            with self._lock:
                self._running = False
                self._jobs.clear()

    def _serve(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._lock.wait(LISTENER_IDLE)
                if not self._jobs:
                    self._running = False
                    return
                job = self._jobs.popleft()
            job()


_THREADS: weakref.WeakKeyDictionary[Any, _ListenerThread] = weakref.WeakKeyDictionary()
_THREADS_LOCK = threading.Lock()


def _listener_thread(host: Any) -> _ListenerThread:
    """The listener thread of ``host`` (made on first use; gone with the host)."""
    with _THREADS_LOCK:
        found = _THREADS.get(host)
        if found is None:
            found = _THREADS[host] = _ListenerThread()
        return found


def _check_stars(stars: Any) -> float | None:
    """Whole stars 1-5 as a float, or None; anything else is an InputError saying what to pass."""
    if stars is None:
        return None
    number: float | None = None
    if not isinstance(stars, (bool, str, bytes)):
        try:
            number = float(stars.__index__()) if hasattr(stars, "__index__") else float(stars)
        except (TypeError, ValueError, OverflowError):
            number = None
    if number is None or not number.is_integer() or not 1 <= number <= 5:
        raise InputError(f"A rating is a whole number of stars from 1 to 5 (or None to clear it); got {stars!r}.")
    return number


def _check_note(note: Any) -> str | None:
    if not isinstance(note, str):
        raise InputError(f"A note is text (or None to keep the current one); got {type(note).__name__}.")
    text = note.strip()
    if len(text) > MAX_NOTE_CHARS:
        raise InputError(f"A note is at most {MAX_NOTE_CHARS} characters; this one has {len(text)}. Shorten it.")
    return text or None


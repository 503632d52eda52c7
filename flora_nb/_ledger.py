"""The run ledger: a SQLite file (or a team's PostgreSQL database) that remembers every start and
every status change.

A start is written as an intent (with its idempotency key) *before* the POST and completed
after it, so a kernel that dies mid-start leaves a trace that ``resume()`` can reconcile.
Rows are keyed by endpoint (base URL) and workspace, so simulator runs never mix with live
ones. The API key is never stored. The SQL is written once for both engines (``_sql`` adapts it).
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import os
import shlex
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from ._errors import InputError, LedgerConflict, LedgerError
from ._models import storable
from ._owner import is_alive
from ._paths import private_dir
from ._sql import Backend, PostgresBackend, SqliteBackend, is_database_url, sqlite_path
from ._validation import check_text, text_problem

__all__ = ["COLUMNS", "PACKED", "PACKED_COLUMNS", "UPLOAD_COLUMNS", "Ledger", "LedgerRow", "canonical_json",
           "default_home", "default_ledger_path"]

log = logging.getLogger("flora_nb.ledger")

SCHEMA_VERSION = 8  # == len(_MIGRATIONS)

_MIGRATIONS: tuple[str, ...] = (
    # version 1
    """
    CREATE TABLE runs (
        local_id INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        run_id TEXT,
        sweep_id TEXT,
        variation INTEGER,
        technique_id TEXT NOT NULL,
        technique_name TEXT,
        project_id TEXT,
        status TEXT NOT NULL,
        progress REAL NOT NULL DEFAULT 0,
        estimated_cost REAL,
        charged_cost REAL,
        estimated_seconds REAL,
        intent_at REAL NOT NULL,
        created_at REAL,
        started_at REAL,
        completed_at REAL,
        error_code TEXT,
        error_message TEXT,
        outputs TEXT NOT NULL DEFAULT '[]',
        inputs TEXT NOT NULL DEFAULT '{}',
        labels TEXT NOT NULL DEFAULT '{}',
        poll_url TEXT,
        reused_from TEXT,
        updated_at REAL NOT NULL,
        UNIQUE (endpoint, run_id)
    );
    CREATE INDEX runs_by_endpoint_status ON runs (endpoint, status);
    CREATE INDEX runs_by_sweep ON runs (sweep_id);
    CREATE TABLE events (
        event_id INTEGER PRIMARY KEY AUTOINCREMENT,
        local_id INTEGER NOT NULL REFERENCES runs (local_id),
        at REAL NOT NULL,
        status TEXT NOT NULL,
        progress REAL,
        charged_cost REAL,
        note TEXT
    );
    CREATE INDEX events_by_run ON events (local_id);
    """,
    # version 2: which session (host:pid:token) wrote a row, to tell a live start from a dead one
    """
    ALTER TABLE runs ADD COLUMN owner TEXT;
    """,
    # version 3: the user's own rating and note of a run (local only, never sent to FLORA), and the
    # uploads a content hash already made on an endpoint and workspace (so a file is uploaded once)
    """
    ALTER TABLE runs ADD COLUMN rating REAL;
    ALTER TABLE runs ADD COLUMN note TEXT;
    CREATE TABLE uploads (
        endpoint TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        file_name TEXT,
        asset_id TEXT NOT NULL,
        url TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (endpoint, workspace_id, sha256)
    );
    """,
    # version 4: durable sweeps: each sweep's plan, retries of failed runs, and skipped runs cost nothing
    """
    CREATE TABLE sweeps (
        sweep_id TEXT PRIMARY KEY,
        endpoint TEXT NOT NULL,
        workspace_id TEXT NOT NULL,
        technique_id TEXT NOT NULL,
        technique_name TEXT,
        created_at REAL NOT NULL,
        budget REAL,
        max_concurrency INTEGER NOT NULL,
        owner TEXT,
        stop_requested INTEGER NOT NULL DEFAULT 0,
        plan TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX sweeps_by_endpoint ON sweeps (endpoint, created_at);
    ALTER TABLE runs ADD COLUMN retry_of INTEGER;
    UPDATE runs SET charged_cost = 0 WHERE status = 'skipped' AND charged_cost IS NULL;
    """,
    # version 5: a start's send window on the local clock (from its first POST to the last moment the
    # server could act on it), kept so a resumed lost start is matched by the same finite window; and
    # how a lost start was bound ('group:1,2,...' when it can only be told apart from others as a group)
    """
    ALTER TABLE runs ADD COLUMN window_low REAL;
    ALTER TABLE runs ADD COLUMN window_high REAL;
    ALTER TABLE runs ADD COLUMN pairing TEXT;
    """,
    # version 6: spend limits every session of the ledger enforces ('' = every technique / no period)
    """
    CREATE TABLE spend_limits (
        endpoint TEXT NOT NULL,
        technique_id TEXT NOT NULL DEFAULT '',
        period TEXT NOT NULL DEFAULT '',
        usd REAL NOT NULL,
        set_at REAL NOT NULL,
        PRIMARY KEY (endpoint, technique_id, period)
    );
    """,
    # version 7: one clock anchor per boot of the machine, so every process's send windows share one timeline
    """
    CREATE TABLE clock_anchors (
        boot_id TEXT PRIMARY KEY,
        anchor REAL NOT NULL
    );
    """,
    # version 8: a team ledger's rows come from many people and machines: who started a run and from
    # which host, who rated it, who started a sweep and set a limit; and each session's lease, renewed
    # while it lives, which tells another host's live session from a dead one (a process id cannot)
    """
    ALTER TABLE runs ADD COLUMN user_name TEXT;
    ALTER TABLE runs ADD COLUMN host TEXT;
    ALTER TABLE runs ADD COLUMN rated_by TEXT;
    ALTER TABLE sweeps ADD COLUMN user_name TEXT;
    ALTER TABLE spend_limits ADD COLUMN set_by TEXT;
    CREATE INDEX runs_by_user ON runs (user_name);
    CREATE TABLE leases (
        owner TEXT PRIMARY KEY,
        user_name TEXT,
        host TEXT,
        renewed_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    """,
)

COLUMNS = (
    "local_id", "endpoint", "workspace_id", "idempotency_key", "run_id", "sweep_id", "variation",
    "technique_id", "technique_name", "project_id", "status", "progress", "estimated_cost",
    "charged_cost", "estimated_seconds", "intent_at", "created_at", "started_at", "completed_at",
    "error_code", "error_message", "outputs", "inputs", "labels", "poll_url", "reused_from", "updated_at",
    "owner", "rating", "note", "retry_of", "window_low", "window_high", "pairing", "user_name", "host", "rated_by",
)
_JSON_COLUMNS = ("outputs", "inputs", "labels")
_RETURNED = tuple(c for c in COLUMNS if c not in ("inputs", "labels"))  # what write_back reads back
_OUTPUTS = _RETURNED.index("outputs")
assert COLUMNS[_OUTPUTS:_OUTPUTS + 3] == ("outputs", "inputs", "labels")  # LedgerRow is built positionally
# rating and note belong to the user: only set_rating() writes them, so no poll can overwrite them.
_UPDATABLE = frozenset(COLUMNS) - {"local_id", "endpoint", "idempotency_key", "intent_at", "rating", "note", "rated_by"}
UPLOAD_COLUMNS = ("endpoint", "workspace_id", "sha256", "size", "content_type", "file_name", "asset_id", "url",
                  "created_at")
# Text columns most rows repeat, read for DataFrames as one JSON array per row (the pseudo-column
# PACKED of iter_raw): a frame decodes each distinct array once instead of taking every value apart.
PACKED_COLUMNS = ("workspace_id", "technique_id", "technique_name", "project_id", "status", "error_code", "sweep_id",
                  "error_message", "note", "reused_from", "pairing", "user_name", "host",
                  "rated_by")  # text only: JSON would round REAL values
PACKED = "packed"


def default_home() -> Path:
    """``$FLORA_NB_HOME``, else ``~/.flora_nb``."""
    return Path(os.environ.get("FLORA_NB_HOME") or Path.home() / ".flora_nb").expanduser()


def default_ledger_path() -> Path:
    return default_home() / "ledger.sqlite"


@dataclass(slots=True)
class LedgerRow:
    """One run as the ledger holds it (JSON columns decoded); slotted: a session keeps one per tracked run."""

    local_id: int
    endpoint: str
    workspace_id: str
    idempotency_key: str
    run_id: str | None
    sweep_id: str | None
    variation: int | None
    technique_id: str
    technique_name: str | None
    project_id: str | None
    status: str
    progress: float
    estimated_cost: float | None
    charged_cost: float | None
    estimated_seconds: float | None
    intent_at: float
    created_at: float | None
    started_at: float | None
    completed_at: float | None
    error_code: str | None
    error_message: str | None
    outputs: list[dict[str, Any]]
    inputs: dict[str, Any]
    labels: dict[str, Any]
    poll_url: str | None
    reused_from: str | None
    updated_at: float
    owner: str | None
    rating: float | None = None
    note: str | None = None
    retry_of: int | None = None
    window_low: float | None = None
    window_high: float | None = None
    pairing: str | None = None
    user_name: str | None = None
    host: str | None = None
    rated_by: str | None = None

    @classmethod
    def from_sql(cls, values: Sequence[Any]) -> LedgerRow:
        data = dict(zip(COLUMNS, values))
        for name in _JSON_COLUMNS:
            data[name] = json.loads(data[name] or ("[]" if name == "outputs" else "{}"))
        for name in _SHARED:
            data[name] = _shared(data[name])
        return cls(**data)


# Text most rows repeat (the same endpoint, workspace, technique, status...): one string object for
# all the rows a session keeps, not one per row read.
_SHARED = frozenset(("endpoint", "workspace_id", "technique_id", "technique_name", "project_id", "status", "owner",
                     "sweep_id", "error_code", "user_name", "host"))


def _shared(value: Any) -> Any:
    return sys.intern(value) if type(value) is str else value


class Ledger:
    """Thread-safe access to the ledger; several processes (and, on PostgreSQL, machines) may share it.

    ``target`` is a file path, ``sqlite:///PATH`` or ``postgresql://USER@HOST/DB`` (default: the
    file ``$FLORA_NB_HOME/ledger.sqlite``). ``path`` is the file (None for a database server);
    ``location`` is what messages show (a connection string without its password).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path: Path | None = None
        self._lock = threading.RLock()
        self._depth = 0  # nesting of with-blocks in the thread holding the lock (a retry restarts the outermost)
        self.rows_not_written = 0  # poll results write_back could not store even row by row (logged)
        self._leases: tuple[float, dict[str, bool | None]] = (0.0, {})
        if is_database_url(path):
            self._backend: Backend = PostgresBackend(str(path))
        else:
            self.path = sqlite_path(path) if path is not None else default_ledger_path()
            self._backend = self._open_file(self.path, tighten=path is None)
        try:
            self._prepare()
            self._migrate()
        except BaseException:  # damaged, refused (a newer schema) or failed: leave no connection open
            self._backend.close()
            raise

    @property
    def location(self) -> str:
        """The file, or the connection string without its password: what messages name."""
        return self._backend.describe()

    @property
    def shared(self) -> bool:
        """Is this a database other machines may use (so a process id tells nothing of its owner)?"""
        return self._backend.shared

    @staticmethod
    def _open_file(path: Path, tighten: bool) -> SqliteBackend:
        try:
            private_dir(path.parent, tighten=tighten)  # ~/.flora_nb is 0700
            _create_private(path)
        except OSError as exc:  # a folder where the file should be, a file where a folder should be
            raise LedgerError(f"the ledger {path} could not be opened: {exc.strerror or exc}; point the "
                              "session's ledger path, or FLORA_NB_HOME, at a file in a folder you can write.") from exc
        try:
            return SqliteBackend(path)
        except sqlite3.Error as exc:
            raise _failure("database", str(exc), "opened", str(path), path) from exc

    def _prepare(self) -> None:
        backend = self._backend
        if not isinstance(backend, SqliteBackend):
            return
        try:
            backend.prepare()
            found = backend.quick_check()
        except sqlite3.Error as exc:  # not a database, damaged, unreadable, on a full disk
            raise _failure(backend.error_kind(exc) or "database", str(exc), "opened", self.location, self.path) from exc
        if found != ["ok"]:
            raise _damaged(self.path or Path(), "; ".join(found[:3]), "opened")

    def _migrate(self) -> None:
        with self._write() as db:
            version = db.schema_version()
            if version > SCHEMA_VERSION:
                raise LedgerError(f"{self.location} was written by a newer flora_nb (schema {version}); "
                                  "upgrade flora_nb (pip install -U flora_nb) to use it.")
            for number in range(version, SCHEMA_VERSION):
                for statement in db.statements(_MIGRATIONS[number]):
                    db.execute(statement)
            if version != SCHEMA_VERSION:
                db.set_schema_version(SCHEMA_VERSION)

    def close(self) -> None:
        with self._lock:
            self._backend.close()

    def _reconnect(self, attempt: int) -> None:
        """Open a dropped server connection again, waiting a little longer each time (0.2, 0.4, 0.8 s)."""
        time.sleep(0.2 * 2 ** attempt)
        with self._lock:
            self._backend.reconnect()

    # ------------------------------------------------------------------ writing

    def _write(self, raw_values: bool = False) -> _Transaction:
        return _Transaction(self, self._backend, self._lock, raw_values)

    def _read(self) -> _Read:
        return _Read(self, self._backend, self._lock)

    def add_intent(self, **intent: Any) -> int:
        """Record a start before it is sent; returns the row's local id."""
        return self.add_intents([intent])[0]

    def add_intents(self, intents: Sequence[Mapping[str, Any]]) -> list[int]:
        """Record many planned starts in one transaction (a sweep's queue); returns their local ids.

        Each intent has ``endpoint``, ``workspace_id``, ``idempotency_key``, ``technique_id`` and
        optionally ``technique_name``, ``inputs``, ``labels``, ``estimated_cost``, ``sweep_id``,
        ``variation``, ``status`` (default ``starting``) and any other updatable column.
        """
        now = time.time()
        ids = []
        rows = [_intent_values(intent) for intent in intents]  # every one checked before any is written
        with self._write() as db:
            for values in rows:
                values.update(intent_at=now, updated_at=now)
                names = ", ".join(values)
                ids.append(db.insert(f"INSERT INTO runs ({names}) VALUES ({','.join('?' * len(values))})",
                                     tuple(values.values())))
                _event(db, ids[-1], now, values["status"], 0.0, None, "intent")
        return ids

    def update(self, local_id: int, note: str | None = None, **changes: Any) -> None:
        """Change some columns of one row, and log a status event when the status or cost moved."""
        self.update_many([(local_id, changes)], note=note)

    def update_many(self, changes: Iterable[tuple[int, Mapping[str, Any]]], note: str | None = None) -> int:
        """Apply many row changes in one transaction (the poller's batch write); returns rows written."""
        now = time.time()
        count = 0
        with self._write() as db:
            for local_id, fields in changes:
                _apply(db, local_id, fields, now, note)
                count += 1
        return count

    def write_back(self, changes: Sequence[tuple[LedgerRow, Mapping[str, Any]]]) -> dict[int, LedgerRow]:
        """``update_many`` that also returns each row as written, by local id (the poller's sink).

        One query reads what each row is now (in the same transaction); rows changing the same
        columns are written by one ``executemany``. A row that is still the one given (the same
        ``updated_at`` and the columns other writers change) is derived from it in Python; only a
        row someone else wrote meanwhile is read back whole. If a value SQLite cannot take fails the
        batch, the rows are written one by one (``_write_back_each``): one bad row never blocks a batch.
        """
        try:
            return self._write_back(changes)
        except Exception as exc:
            if self._backend.error_kind(exc) != "bad_value":
                raise
        return self._write_back_each(changes)

    def _write_back_each(self, changes: Sequence[tuple[LedgerRow, Mapping[str, Any]]]) -> dict[int, LedgerRow]:
        """``write_back`` one row at a time, text made storable (U+FFFD): one bad row never blocks the others.
        A row SQLite still refuses is left as it was, counted in ``rows_not_written`` and logged."""
        found: dict[int, LedgerRow] = {}
        for old, fields in changes:
            try:
                found.update(self._write_back([(old, storable(dict(fields)))]))
            except Exception as exc:
                if self._backend.error_kind(exc) != "bad_value":
                    raise
                self.rows_not_written += 1
                log.warning("flora_nb: run %s: a poll's result could not be stored in %s (%s)", old.run_id or
                            old.local_id, self.location, exc)
        return found

    def _write_back(self, changes: Sequence[tuple[LedgerRow, Mapping[str, Any]]]) -> dict[int, LedgerRow]:
        now, known = time.time(), {old.local_id: old for old, _ in changes}
        found: dict[int, LedgerRow] = {}
        with self._write(raw_values=True) as db:
            ids = list(known)
            current = dict(_select_in(db, _VERSION_SQL, ids, lambda r: (r[0], r[1:])))
            if len(ids) < len(changes):  # a row changed twice in one batch: in order, and read back whole
                for old, fields in changes:
                    before = current.get(old.local_id)
                    _apply(db, old.local_id, fields, now, None, None if before is None else before[:2])
            else:
                _write_grouped(db, [(old.local_id, fields, current.get(old.local_id)) for old, fields in changes], now)
                found = {old.local_id: _derived(old, fields, now) for old, fields in changes
                         if current.get(old.local_id) == _version(old)}
            stale = [i for i in ids if i in current and i not in found]
            for values in _select_in(db, ", ".join(_RETURNED), stale, tuple):
                old = known[values[0]]
                found[old.local_id] = LedgerRow(*values[:_OUTPUTS], _decoded(values[_OUTPUTS], "[]"),  # type: ignore[call-arg]
                                                old.inputs, old.labels, *values[_OUTPUTS + 1:])
        return found

    def set_rating(self, local_id: int, rating: float | None, note: str | None, by: str | None = None) -> None:
        """Store the user's rating and note of a run (``by``: the rater); no status event, no other column touched."""
        check_text("the note", note)
        with self._write() as db:
            cur = db.execute("UPDATE runs SET rating = ?, note = ?, rated_by = ?, updated_at = ? WHERE local_id = ?",
                             (rating, note, by, time.time(), local_id))
            if cur.rowcount != 1:
                raise KeyError(f"no run with local id {local_id} in {self.location}")

    def remember_upload(self, **upload: Any) -> None:
        """Record (or replace) the asset a content hash became on an endpoint and workspace."""
        values = tuple(storable(upload[name]) for name in UPLOAD_COLUMNS)  # a file name may hold surrogate escapes
        with self._write() as db:
            db.execute(_upsert("uploads", UPLOAD_COLUMNS, ("endpoint", "workspace_id", "sha256")), values)

    def forget_upload(self, endpoint: str, workspace_id: str, sha256: str) -> None:
        """Drop a cached upload (its asset is gone on the server)."""
        with self._write() as db:
            db.execute("DELETE FROM uploads WHERE endpoint = ? AND workspace_id = ? AND sha256 = ?",
                       (endpoint, workspace_id, sha256))

    # ------------------------------------------------------------------ reading

    def find_upload(self, endpoint: str, workspace_id: str, sha256: str) -> dict[str, Any] | None:
        """The cached upload of this content on this endpoint and workspace, or None."""
        with self._read() as db:
            row = db.execute(
                f"SELECT {', '.join(UPLOAD_COLUMNS)} FROM uploads WHERE endpoint = ? AND workspace_id = ? AND sha256 = ?",
                (endpoint, workspace_id, sha256)).fetchone()
        return dict(zip(UPLOAD_COLUMNS, row)) if row else None

    def get(self, local_id: int) -> LedgerRow | None:
        rows = self._select("WHERE local_id = ?", (local_id,))
        return rows[0] if rows else None

    def find_run(self, endpoint: str, run_id: str) -> LedgerRow | None:
        rows = self._select("WHERE endpoint = ? AND run_id = ?", (endpoint, run_id))
        return rows[0] if rows else None

    def completed_inputs(self, endpoint: str, workspace_id: str, technique_id: str) -> dict[str, list[str]]:
        """Canonical inputs JSON -> ids of the distinct completed, paid runs with exactly those inputs."""
        with self._read() as db:
            cur = db.execute(
                "SELECT inputs, run_id FROM runs WHERE endpoint = ? AND workspace_id = ? AND technique_id = ?"
                " AND status = 'completed' AND run_id IS NOT NULL AND reused_from IS NULL ORDER BY local_id",
                (endpoint, workspace_id, technique_id),
            )
            found: dict[str, list[str]] = {}
            for inputs, run_id in cur:
                found.setdefault(inputs, []).append(run_id)
            return found

    def charge_ratios(self, endpoint: str, technique_id: str) -> tuple[int, float | None, float | None]:
        """How many charged/estimated ratios the ledger knows for a technique, and their min and max."""
        with self._read() as db:
            row = db.execute(
                "SELECT COUNT(*), MIN(charged_cost / estimated_cost), MAX(charged_cost / estimated_cost) FROM runs"
                " WHERE endpoint = ? AND technique_id = ? AND status = 'completed' AND charged_cost IS NOT NULL"
                " AND estimated_cost > 0 AND reused_from IS NULL", (endpoint, technique_id)).fetchone()
        return int(row[0]), row[1], row[2]

    def price_evidence(self, endpoint: str, technique_id: str, exclude: int | None = None) -> tuple[float | None, int]:
        """The highest charge FLORA reported for a technique (None: none yet), and how many of its
        launched runs (any session) are still waiting for a charge."""
        with self._read() as db:
            row = db.execute(
                "SELECT MAX(CASE WHEN reused_from IS NULL AND status = 'completed' THEN charged_cost END),"
                " COALESCE(SUM(CASE WHEN charged_cost IS NULL AND status NOT IN ('queued', 'skipped')"
                " AND local_id != ? THEN 1 ELSE 0 END), 0)"
                " FROM runs WHERE endpoint = ? AND technique_id = ?",
                (-1 if exclude is None else exclude, endpoint, technique_id)).fetchone()
        return (None if row[0] is None else float(row[0])), int(row[1])

    def exposure(self, endpoint: str, *, sweep_id: str | None = None, owner: str | None = None,
                 exclude: int | None = None, technique_id: str | None = None,
                 since: float | None = None) -> list[tuple[str, float, float, int, int]]:
        """Per technique, over launched runs in scope (started at or after ``since``): known charges,
        estimates of runs whose charge is unknown, how many those are, and how many are still active."""
        where = ["endpoint = ?", "status NOT IN ('queued', 'skipped')", "reused_from IS NULL"]
        args: list[Any] = [endpoint]
        if since is not None:
            where.append("intent_at >= ?")
            args.append(since)
        for column, value in (("sweep_id", sweep_id), ("owner", owner), ("technique_id", technique_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if exclude is not None:
            where.append("local_id != ?")
            args.append(exclude)
        sql = ("SELECT technique_id, COALESCE(SUM(charged_cost), 0),"
               " COALESCE(SUM(CASE WHEN charged_cost IS NULL THEN COALESCE(estimated_cost, 0) END), 0),"
               " SUM(CASE WHEN charged_cost IS NULL THEN 1 ELSE 0 END),"
               " SUM(CASE WHEN charged_cost IS NULL AND status NOT IN ('completed', 'failed') THEN 1 ELSE 0 END)"
               f" FROM runs WHERE {' AND '.join(where)} GROUP BY technique_id")
        with self._read() as db:
            return [(t, float(c), float(e), int(n), int(a)) for t, c, e, n, a in db.execute(sql, args)]

    def admit(self, local_id: int, changes: Mapping[str, Any], check: Callable[[], None], note: str | None = None) -> None:
        """Apply ``changes`` to one row only if ``check()`` (which reads the ledger, and raises to refuse)
        passes, in ONE immediate transaction: a check in another session or process waits for this one,
        so two starts never both take a limit's last room."""
        with self._write() as db:
            check()  # reads through this connection, inside the transaction
            _apply(db, local_id, changes, time.time(), note)

    # ------------------------------------------------------------------ clock

    def clock_anchor(self, boot_id: str, proposed: float) -> float:
        """The anchor every process of this boot measures send windows with: the first one proposed
        (see ``_clock.LocalClock``); a wall-clock step between two processes' starts then moves neither."""
        with self._write() as db:
            db.execute("INSERT INTO clock_anchors (boot_id, anchor) VALUES (?, ?) ON CONFLICT (boot_id) DO NOTHING",
                       (boot_id, proposed))
            return float(db.execute("SELECT anchor FROM clock_anchors WHERE boot_id = ?", (boot_id,)).fetchone()[0])

    # ------------------------------------------------------------------ leases

    def renew_lease(self, owner: str, user: str | None, host: str | None, seconds: float) -> None:
        """Say this session lives for ``seconds`` more, on the database's clock (hosts' clocks may differ)."""
        now = self._backend.now_sql
        with self._write() as db:
            db.execute(f"INSERT INTO leases (owner, user_name, host, renewed_at, expires_at) VALUES (?, ?, ?, {now},"
                       f" {now} + ?) ON CONFLICT (owner) DO UPDATE SET renewed_at = excluded.renewed_at,"
                       " expires_at = excluded.expires_at", (owner, user, host, float(seconds)))

    def end_lease(self, owner: str) -> None:
        """This session has closed: its lease ends now."""
        with self._write() as db:
            db.execute(f"UPDATE leases SET expires_at = {self._backend.now_sql} WHERE owner = ?", (owner,))

    def lease_alive(self, owner: str) -> bool | None:
        """True while ``owner``'s lease runs, False once it ran out or ended, None if it never held one."""
        with self._read() as db:
            row = db.execute(f"SELECT expires_at > {db.now_sql} FROM leases WHERE owner = ?", (owner,)).fetchone()
        return None if row is None else bool(row[0])

    def owner_alive(self, owner: str | None) -> bool | None:
        """Does the session that wrote a row still live? Its process on this host, else its lease;
        None when nothing tells (an old row of another host: callers fall back to the row's age)."""
        alive = is_alive(owner)  # its process, where a process id means the same process (see _owner)
        if alive is not None or not owner:
            return alive
        return self._lease_of(owner)

    def _lease_of(self, owner: str) -> bool | None:
        """``lease_alive``, asked at most once a second per owner (a binding asks row by row)."""
        seen_at, known = self._leases
        if time.monotonic() - seen_at > _LEASE_CACHE_SECONDS:
            known = {}
            self._leases = (time.monotonic(), known)
        if owner not in known:
            known[owner] = self.lease_alive(owner)
        return known[owner]

    # ------------------------------------------------------------------ spend limits

    def set_spend_limit(self, endpoint: str, usd: float | None, period: str | None, technique_id: str | None,
                        by: str | None = None) -> None:
        """Set (or with ``usd=None`` remove) the limit of one scope; ``by``: who set it."""
        key = (endpoint, technique_id or "", period or "")
        check_text("the technique", technique_id)
        with self._write() as db:
            if usd is None:
                db.execute("DELETE FROM spend_limits WHERE endpoint = ? AND technique_id = ? AND period = ?", key)
            else:
                db.execute(_upsert("spend_limits", _LIMIT_COLUMNS, _LIMIT_COLUMNS[:3]), (*key, float(usd), time.time(), by))

    def spend_limits(self, endpoint: str) -> list[tuple[str | None, str | None, float]]:
        """Every limit of an endpoint: (technique id or None, period or None, USD)."""
        with self._read() as db:
            rows = db.execute("SELECT technique_id, period, usd FROM spend_limits WHERE endpoint = ?"
                              " ORDER BY technique_id, period", (endpoint,)).fetchall()
        return [(t or None, p or None, float(u)) for t, p, u in rows]

    def claim(self, items: Sequence[tuple[int, Mapping[str, Any], Mapping[str, Any]]], note: str | None = None) -> list[int]:
        """Apply each ``(local_id, expected, changes)`` only if the row still has the ``expected``
        values, all in one transaction (so two sessions never take the same row); returns the ids taken."""
        now, taken = time.time(), []
        with self._write() as db:
            for local_id, expected, changes in items:
                names = list(expected)
                row = db.execute(f"SELECT {', '.join(names)} FROM runs WHERE local_id = ?", (local_id,)).fetchone()
                if row is not None and list(row) == [expected[n] for n in names]:
                    _apply(db, local_id, changes, now, note)
                    taken.append(local_id)
        return taken

    # ------------------------------------------------------------------ sweeps

    def retried(self, sweep_id: str) -> set[int]:
        """Local ids of a sweep's runs that were tried again (``retry_failed``)."""
        with self._read() as db:
            cur = db.execute("SELECT retry_of FROM runs WHERE sweep_id = ? AND retry_of IS NOT NULL", (sweep_id,))
            return {r[0] for r in cur}

    def add_sweep(self, **sweep: Any) -> None:
        """Record a sweep's plan (``plan`` is a JSON-able dict) before any of its runs is queued."""
        check_text("the sweep's labels", (sweep.get("plan") or {}).get("labels"))
        values = {**sweep, "plan": _dumps(sweep.get("plan") or {})}
        names = ", ".join(values)
        with self._write() as db:
            db.execute(f"INSERT INTO sweeps ({names}) VALUES ({','.join('?' * len(values))})", tuple(values.values()))

    def get_sweep(self, endpoint: str, sweep_id: str) -> dict[str, Any] | None:
        """A sweep's record (plan decoded), or None."""
        with self._read() as db:
            cur = db.execute("SELECT * FROM sweeps WHERE endpoint = ? AND sweep_id = ?", (endpoint, sweep_id))
            row = cur.fetchone()
            names = _names(cur)
        if row is None:
            return None
        record = dict(zip(names, row))
        record["plan"] = json.loads(record["plan"] or "{}")
        return record

    def update_sweep(self, sweep_id: str, **changes: Any) -> None:
        assignments = ", ".join(f"{k} = ?" for k in changes)
        with self._write() as db:
            db.execute(f"UPDATE sweeps SET {assignments} WHERE sweep_id = ?", (*changes.values(), sweep_id))

    def stop_requested(self, sweep_id: str) -> bool:
        """Has any session asked this sweep to stop launching?"""
        with self._read() as db:
            row = db.execute("SELECT stop_requested FROM sweeps WHERE sweep_id = ?", (sweep_id,)).fetchone()
        return bool(row and row[0])

    def sweep_summaries(self, endpoint: str) -> list[dict[str, Any]]:
        """One dict per sweep of this endpoint (recorded plans, and older sweeps known by their runs)."""
        with self._read() as db:
            cur = db.execute("SELECT * FROM sweeps WHERE endpoint = ? ORDER BY created_at", (endpoint,))
            names = _names(cur)
            plans = {r[0]: dict(zip(names, r)) for r in cur.fetchall()}
            runs = db.execute(
                "SELECT sweep_id, local_id, retry_of, status, charged_cost, variation, technique_id, technique_name,"
                " intent_at FROM runs WHERE endpoint = ? AND sweep_id IS NOT NULL ORDER BY local_id", (endpoint,),
            ).fetchall()
        return _summaries(plans, runs)

    def total_charged(self, endpoint: str) -> float:
        """Sum of known charges for this endpoint (USD)."""
        with self._read() as db:
            value = db.execute("SELECT SUM(charged_cost) FROM runs WHERE endpoint = ?", (endpoint,)).fetchone()[0]
        return float(value or 0.0)

    def open_starts(self, endpoint: str, workspace_id: str, technique_id: str) -> list[LedgerRow]:
        """Starts not yet bound to a run (in flight, lost or unconfirmed), any session."""
        return self._select(
            "WHERE endpoint = ? AND workspace_id = ? AND technique_id = ? AND status = 'starting'"
            " AND run_id IS NULL ORDER BY local_id", (endpoint, workspace_id, technique_id))

    def known_run_ids(self, endpoint: str) -> set[str]:
        with self._read() as db:
            cur = db.execute("SELECT run_id FROM runs WHERE endpoint = ? AND run_id IS NOT NULL", (endpoint,))
            return {r[0] for r in cur}

    def rows(self, endpoint: str | None = None, *, statuses: Sequence[str] | None = None,
             sweep_id: str | None = None, since: float | None = None) -> list[LedgerRow]:
        """Rows matching the filters, oldest intent first."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("endpoint", endpoint), ("sweep_id", sweep_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(statuses)
        if since is not None:
            where.append("intent_at >= ?")
            args.append(since)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        return self._select(clause + " ORDER BY local_id", tuple(args))

    def iter_raw(self, endpoint: str | None = None, columns: Sequence[str] = COLUMNS, *,
                 statuses: Sequence[str] | None = None, technique: str | None = None, sweep_id: str | None = None,
                 created_since: float | None = None, user: str | None = None) -> Iterator[tuple[Any, ...]]:
        """Raw rows with ``columns`` (all, in order, by default), for building DataFrames without per-row objects.

        ``PACKED`` among the columns is ``PACKED_COLUMNS`` as one JSON array text. The filters are
        those of ``Flora.runs()`` done by SQLite (``technique`` is an id or a name; ``created_since``
        keeps rows created at most a microsecond before it, as the frame rounds). A frame of the
        kept rows has the ``input.``/``label.`` columns of those rows only.
        """
        unknown = set(columns) - set(COLUMNS) - {PACKED}
        if unknown:
            raise ValueError(f"not ledger columns: {sorted(unknown)}")
        yield from self._raw(columns, *_where(endpoint, statuses, technique, sweep_id, created_since, user))

    def _raw(self, columns: Sequence[str], clause: str, args: list[Any]) -> list[tuple[Any, ...]]:
        with self._read() as db:
            selected = ", ".join(db.packed(PACKED_COLUMNS) if c == PACKED else c for c in columns)
            try:
                return db.execute(f"SELECT {selected} FROM runs {clause} ORDER BY local_id", args).fetchall()
            except sqlite3.OperationalError:  # an SQLite without JSON functions, or a BLOB where text belongs
                return _packed_in_python(db, columns, clause, args)

    def events(self, local_id: int) -> list[dict[str, Any]]:
        with self._read() as db:
            cur = db.execute(
                "SELECT at, status, progress, charged_cost, note FROM events WHERE local_id = ? ORDER BY event_id",
                (local_id,),
            )
            return [dict(zip(("at", "status", "progress", "charged_cost", "note"), r)) for r in cur]

    # ------------------------------------------------------------------ moving between ledgers

    def dump(self, table: str) -> list[dict[str, Any]]:
        """Every row of one of the ledger's tables (``COPIED_TABLES``), as dicts, oldest first."""
        if table not in COPIED_TABLES:
            raise ValueError(f"not a ledger table: {table!r}")
        with self._read() as db:
            cur = db.execute(f"SELECT * FROM {table} ORDER BY {COPIED_TABLES[table]}")
            names = _names(cur)
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def load(self, tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, int]:
        """Add another ledger's rows (``dump`` of each table) in one transaction; how many of each were added.

        A run whose idempotency key (or run id on its endpoint) is here already is left as it is, with
        its events: loading the same rows twice adds nothing. Sweeps, uploads, limits and clock anchors
        already here are kept. Local ids are this ledger's own (``retry_of`` follows them).
        """
        added = {name: 0 for name in COPIED_TABLES}
        with self._write() as db:
            ids = self._load_runs(db, tables.get("runs", ()), added)
            names = ("local_id", "at", "status", "progress", "charged_cost", "note")
            events = [(ids[e["local_id"]], *(e[n] for n in names[1:])) for e in tables.get("events", ())
                      if e["local_id"] in ids]
            db.executemany(f"INSERT INTO events ({', '.join(names)}) VALUES ({','.join('?' * len(names))})", events)
            added["events"] = len(events)
            for table in ("sweeps", "uploads", "spend_limits", "clock_anchors"):
                for row in tables.get(table, ()):
                    cur = db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({','.join('?' * len(row))})"
                                     " ON CONFLICT DO NOTHING", tuple(row.values()))
                    added[table] += max(0, cur.rowcount)
        return added

    @staticmethod
    def _load_runs(db: Backend, runs: Sequence[Mapping[str, Any]], added: dict[str, int]) -> dict[int, int]:
        """Insert the runs not here yet (one executemany); the local ids here of the runs added, by their
        local ids there. A retry links to its failed run here, whether that was added now or before."""
        keys = dict(db.execute("SELECT idempotency_key, local_id FROM runs").fetchall())
        bound = set(db.execute("SELECT endpoint, run_id FROM runs WHERE run_id IS NOT NULL").fetchall())
        new = [run for run in runs if run["idempotency_key"] not in keys
               and (run["run_id"] is None or (run["endpoint"], run["run_id"]) not in bound)]
        names = [c for c in COLUMNS if c not in ("local_id", "retry_of")]
        db.executemany(f"INSERT INTO runs ({', '.join(names)}) VALUES ({','.join('?' * len(names))})",
                       [tuple(run.get(n) for n in names) for run in new])
        here: dict[str, int] = {}
        for k in range(0, len(new), 500):
            chunk = [run["idempotency_key"] for run in new[k:k + 500]]
            here.update(db.execute(f"SELECT idempotency_key, local_id FROM runs WHERE idempotency_key IN "
                                   f"({','.join('?' * len(chunk))})", chunk).fetchall())
        ids = {run["local_id"]: here[run["idempotency_key"]] for run in new}
        everywhere = {run["local_id"]: keys[run["idempotency_key"]] for run in runs if run["idempotency_key"] in keys}
        everywhere.update(ids)
        retries = [(everywhere.get(run["retry_of"]), ids[run["local_id"]]) for run in new
                   if run.get("retry_of") is not None]
        db.executemany("UPDATE runs SET retry_of = ? WHERE local_id = ?", retries)
        added["runs"] = len(new)
        return ids

    def _select(self, clause: str, args: tuple[Any, ...]) -> list[LedgerRow]:
        with self._read() as db:
            cur = db.execute(f"SELECT {', '.join(COLUMNS)} FROM runs {clause}", args)
            return [LedgerRow.from_sql(r) for r in cur.fetchall()]



class _Read:
    """``with`` block holding the ledger lock for reads; an engine's failure becomes a ``LedgerError``
    (``_Dropped`` when a server's connection dropped, so the outermost call can run again)."""

    def __init__(self, ledger: Ledger, backend: Backend, lock: threading.RLock, raw_values: bool = False):
        self.ledger, self.db, self.lock = ledger, backend, lock
        self.raw_values = raw_values  # a value the engine cannot take is raised as it is (write_back handles it)

    def __enter__(self) -> Backend:
        self.lock.acquire()
        _DEPTH.value = getattr(_DEPTH, "value", 0) + 1
        return self.db

    def _leave(self) -> None:
        _DEPTH.value -= 1
        self.lock.release()

    def __exit__(self, exc_type: Any, exc: BaseException | None, *rest: Any) -> None:
        self._leave()
        _translate(self.ledger, self.db, exc, "read", self.raw_values)


class _Transaction(_Read):
    """``with`` block holding the ledger lock and one exclusive write transaction."""

    def __enter__(self) -> Backend:
        super().__enter__()
        try:
            self.db.begin()
        except BaseException as exc:
            self._leave()
            _translate(self.ledger, self.db, exc, "written", False)
            raise
        return self.db

    def __exit__(self, exc_type: Any, exc: BaseException | None, *rest: Any) -> None:
        try:
            self.db.end(commit=exc_type is None)
        except BaseException as failure:
            if exc_type is None:  # the COMMIT itself failed: whether it landed is unknown, never run it again
                _translate(self.ledger, self.db, failure, "written", False, again=False)
                raise  # not the engine's error (Ctrl-C, out of memory): the write did not surely land either
            elif self.db.error_kind(failure) is None:
                raise
        finally:
            self._leave()
        _translate(self.ledger, self.db, exc, "written", self.raw_values)


_LEASE_CACHE_SECONDS = 1.0  # how long an answer of lease_alive is used again (a binding asks row by row)
_DEPTH = threading.local()  # how many ledger with-blocks this thread is inside (a retry restarts only the outermost)


class _Dropped(LedgerError):
    """A database server's connection dropped during a ledger call that may run again."""


def _retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a ledger call again (up to 3 times, reconnecting) when the server's connection dropped mid-call;
    a call inside another (``admit``'s check) leaves that to the outermost one."""
    @functools.wraps(method)
    def call(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        for attempt in range(_RECONNECTS + 1):
            try:
                return method(self, *args, **kwargs)
            except _Dropped as exc:
                if getattr(_DEPTH, "value", 0) or attempt == _RECONNECTS:
                    raise
                log.info("flora_nb: the ledger's connection dropped (%s); connecting again", exc)
                self._reconnect(attempt)
        raise AssertionError("unreachable")
    return call


_RECONNECTS = 3


def _translate(ledger: Ledger, backend: Backend, exc: BaseException | None, doing: str, raw_values: bool,
               again: bool = True) -> None:
    """Raise the ledger's own error for what failed in a ``with`` block; anything else goes on as it is."""
    if exc is None or isinstance(exc, LedgerError):
        return
    kind = backend.error_kind(exc)
    if kind == "bad_value" and raw_values:
        return
    if kind == "integrity":  # the ledger says which rule, never a raw engine error
        raise LedgerConflict(f"ledger rule broken: {_scrubbed(backend, exc)}") from exc
    if kind == "disconnected":
        if again:
            raise _Dropped(f"the ledger {ledger.location} lost its connection: {_scrubbed(backend, exc)}") from None
        raise LedgerError(f"the ledger {ledger.location} lost its connection while a write was being committed "
                          f"({_scrubbed(backend, exc)}); it may or may not have been recorded, and nothing that "
                          "depended on it was sent. Check the server, then go on: fl.resume() finds what was started.") from None
    if kind in ("closed", "not_a_database", "damaged", "database"):
        raise _failure(kind, _scrubbed(backend, exc), doing, ledger.location, ledger.path) from (exc if ledger.path else None)
    problem = text_problem(ascii(exc.object[:60]), exc.object) if isinstance(exc, UnicodeEncodeError) else None
    if problem:  # text a caller gave (a filter, a name) that UTF-8 cannot hold: never a raw UnicodeEncodeError
        raise InputError(f"{problem}; the ledger was not changed.") from exc


def _scrubbed(backend: Backend, exc: BaseException) -> str:
    return backend.scrub(exc) if isinstance(backend, PostgresBackend) else str(exc)


def _create_private(path: Path) -> None:
    # Create the file 0600 before SQLite does, so no other user ever reads run history.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def _intent_values(intent: Mapping[str, Any]) -> dict[str, Any]:
    """An intent's column values (JSON columns as text); user text UTF-8 cannot hold is an ``InputError``."""
    unknown = set(intent) - _UPDATABLE - {"endpoint", "idempotency_key"}
    if unknown:
        raise ValueError(f"not ledger columns: {sorted(unknown)}")
    values = {"status": "starting", "inputs": {}, "labels": {}, **intent}
    values = {k: (_dumps(v) if k in _JSON_COLUMNS else storable(v)) for k, v in values.items()}
    for name in _USER_TEXT:
        # JSON text is ASCII: "\ud" starts any character past U+FFFF (or a lone surrogate): only then look closer.
        if name in intent and (name not in _JSON_COLUMNS or "\\ud" in values[name]):
            check_text(name, intent[name])
    return values


# What a user gives that an intent keeps: refused when UTF-8 cannot hold it (the rest is made storable).
_USER_TEXT = ("inputs", "labels", "workspace_id")


def _failure(kind: str, detail: str, doing: str, location: str, path: Path | None) -> LedgerError:
    """The ledger's own error for an engine failure, saying what to do."""
    if kind == "closed":
        return LedgerError(f"the ledger {location} could not be {doing}: its session was closed; "
                           "connect a new session to use it again.")
    if path is None:  # a database server: its message (no password in it), and what to check
        return LedgerError(f"the team ledger {location} could not be {doing}: {detail}. "
                           "Check that the server is up and this user may read and write its tables.")
    if kind == "not_a_database":
        return _damaged(path, "SQLite cannot read it as a database: a damaged ledger, or another kind of file",
                        doing, head=f"{path} is not a flora_nb ledger")
    if kind == "damaged":
        return _damaged(path, detail, doing)
    return LedgerError(f"the ledger {path} could not be {doing}: {detail}. Check that the file and its folder are "
                       "writable and the disk is not full; other sessions on it wait up to 30 s for each other.")


def _damaged(path: Path, detail: str, doing: str, head: str = "") -> LedgerError:
    """The error for a damaged ledger file: what it is, where, and what to do (never "is the disk full?")."""
    done = ("nothing was started or sent" if doing == "opened" else
            f"it could not be {doing}; close the session (fl.close()) before anything else")
    quoted, rescued = shlex.quote(str(path)), shlex.quote(str(path.with_name(path.stem + "-recovered.sqlite")))
    return LedgerError(
        f"{head or f'the ledger {path} is damaged'} ({detail}); {done}. To go on: move the file aside (with any "
        f"{path.name}-wal and {path.name}-shm beside it) and a new, empty ledger starts there; or restore a copy "
        f"from a backup; or rescue what SQLite can still read with  sqlite3 {quoted} .recover | sqlite3 {rescued}  "
        "and pass that file as the session's ledger path (ledger_path=...), or put it where the damaged one was.")


def _summaries(plans: dict[str, dict[str, Any]], runs: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    retried = {r[2] for r in runs if r[2] is not None}
    out: dict[str, dict[str, Any]] = {}
    for sweep_id, local_id, _retry_of, status, charge, variation, tech_id, tech_name, intent_at in runs:
        plan = plans.get(sweep_id, {})
        entry = out.setdefault(sweep_id, {
            "sweep_id": sweep_id, "technique_id": plan.get("technique_id", tech_id),
            "technique_name": plan.get("technique_name", tech_name), "created_at": plan.get("created_at", intent_at),
            "variations": set(), "runs": 0, "counts": {}, "spent": 0.0, "budget": plan.get("budget"),
        })
        entry["variations"].add(variation)
        entry["spent"] += charge or 0.0
        if local_id in retried:
            continue  # a failed run that was tried again: its retry counts instead
        entry["runs"] += 1
        entry["counts"][status] = entry["counts"].get(status, 0) + 1
    for sweep_id, plan in plans.items():
        out.setdefault(sweep_id, {"sweep_id": sweep_id, "technique_id": plan["technique_id"],
                                  "technique_name": plan["technique_name"], "created_at": plan["created_at"],
                                  "variations": set(), "runs": 0, "counts": {}, "spent": 0.0, "budget": plan["budget"]})
    for entry in out.values():
        entry["variations"] = len(entry["variations"])
    return sorted(out.values(), key=lambda e: e["created_at"])


# What write_back reads to know a row is still the one its caller holds: the columns any other writer
# (another session's poll or binding, a rating) changes, with updated_at, stamped by every write.
_VERSION = ("status", "charged_cost", "updated_at", "run_id", "progress", "rating", "note", "error_code")
_VERSION_SQL = "local_id, " + ", ".join(_VERSION)


_ALL_FIELDS = operator.attrgetter(*COLUMNS)


_version: Callable[[LedgerRow], tuple[Any, ...]] = operator.attrgetter(*_VERSION)


def _write_grouped(db: Backend, items: Sequence[tuple[int, Mapping[str, Any], tuple[Any, ...] | None]],
                   now: float) -> None:
    """What ``_apply`` does for each ``(local_id, fields, (status, charged_cost, ...) before)``, with one
    ``executemany`` per set of changed columns and one for the status events (rows are distinct)."""
    groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
    events = []
    for local_id, fields, before in items:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"not ledger columns: {sorted(unknown)}")
        names = tuple(k for k in fields if k != "updated_at")
        values = [_dumps(fields[k]) if k in _JSON_COLUMNS else fields[k] for k in names]
        groups.setdefault(names, []).append((*values, now, local_id))
        if before is None:
            continue  # no such row: nothing written, nothing to log
        status, cost = fields.get("status", before[0]), fields.get("charged_cost", before[1])
        if status != before[0] or cost != before[1]:
            events.append((local_id, now, status, fields.get("progress"), cost, None))
    for names, params in groups.items():
        sets = "".join(f"{k} = ?, " for k in names)
        db.executemany(f"UPDATE runs SET {sets}updated_at = ? WHERE local_id = ?", params)
    if events:
        db.executemany("INSERT INTO events (local_id, at, status, progress, charged_cost, note) VALUES (?,?,?,?,?,?)",
                       events)


def _decoded(text: str | None, empty: str) -> Any:
    return json.loads(text) if text and text != empty else json.loads(empty)


def _derived(old: LedgerRow, fields: Mapping[str, Any], now: float) -> LedgerRow:
    """``old`` with ``fields`` written at ``now``: what reading the row back would give."""
    new = LedgerRow(*_ALL_FIELDS(old))
    for name, value in fields.items():
        # JSON columns as a read gives them (tuples become lists, odd values text), not the objects given.
        setattr(new, name, json.loads(_dumps(value)) if name in _JSON_COLUMNS else
                _shared(value) if name in _SHARED else value)
    new.updated_at = now
    return new


def _where(endpoint: str | None, statuses: Sequence[str] | None, technique: str | None, sweep_id: str | None,
           created_since: float | None, user: str | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause of ``iter_raw``."""
    # "+endpoint": scan in local_id order; through the endpoint index SQLite would sort every row again
    where: list[str] = ["+endpoint = ?"] if endpoint else []
    args: list[Any] = [endpoint] if endpoint else []
    if statuses is not None:
        where.append(f"status IN ({','.join('?' * len(statuses))})")
        args.extend(statuses)
    if technique is not None:
        where.append("(technique_id = ? OR technique_name = ?)")
        args.extend((technique, technique))
    if sweep_id is not None:
        where.append("sweep_id = ?")
        args.append(sweep_id)
    if user is not None:
        where.append("user_name = ?")
        args.append(user)
    if created_since is not None:
        where.append("created_at >= ?")
        args.append(created_since - 1e-6)
    return (f"WHERE {' AND '.join(where)}" if where else ""), args


def _select_in(db: Backend, columns: str, ids: list[int], make: Callable[[Any], Any]) -> Iterator[Any]:
    """``SELECT columns`` of the rows with these local ids, 500 ids per query (SQLite bounds parameters)."""
    for k in range(0, len(ids), 500):
        chunk = ids[k:k + 500]
        yield from map(make, db.execute(f"SELECT {columns} FROM runs WHERE local_id IN "
                                        f"({','.join('?' * len(chunk))})", chunk))


_UNREAD: Any = object()


def _apply(db: Backend, local_id: int, fields: Mapping[str, Any], now: float, note: str | None,
           before: tuple[Any, ...] | None = _UNREAD) -> None:
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"not ledger columns: {sorted(unknown)}")
    # Text here is the server's or flora_nb's own (user text is checked where it enters): made storable.
    values = {k: (_dumps(v) if k in _JSON_COLUMNS else storable(v)) for k, v in fields.items()}
    values["updated_at"] = now
    if before is _UNREAD:  # (status, charged_cost) before this change, unless the caller read a batch at once
        before = db.execute("SELECT status, charged_cost FROM runs WHERE local_id = ?", (local_id,)).fetchone()
    assignments = ", ".join(f"{k} = ?" for k in values)
    db.execute(f"UPDATE runs SET {assignments} WHERE local_id = ?", (*values.values(), local_id))
    if before is None:
        return
    status = fields.get("status", before[0])
    cost = fields.get("charged_cost", before[1])
    if status != before[0] or cost != before[1] or note:
        _event(db, local_id, now, status, fields.get("progress"), cost, note)


def _event(db: Backend, local_id: int, at: float, status: str, progress: float | None,
           cost: float | None, note: str | None) -> None:
    db.execute(
        "INSERT INTO events (local_id, at, status, progress, charged_cost, note) VALUES (?,?,?,?,?,?)",
        (local_id, at, status, progress, cost, note),
    )


# What ``python -m flora_nb ledger copy`` moves, each table with the order its rows are read in.
COPIED_TABLES = {"runs": "local_id", "events": "event_id", "sweeps": "created_at", "uploads": "created_at",
                 "spend_limits": "set_at", "clock_anchors": "boot_id"}


def _names(cursor: Any) -> list[str]:
    """The column names of a cursor's result (sqlite3 gives tuples, psycopg Column objects)."""
    return [getattr(d, "name", None) or d[0] for d in cursor.description]


def _upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """INSERT that replaces the row with the same ``key`` (both engines take this form)."""
    changed = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({','.join('?' * len(columns))})"
            f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {changed}")


_LIMIT_COLUMNS = ("endpoint", "technique_id", "period", "usd", "set_at", "set_by")


def canonical_json(value: Any) -> str:
    """The JSON form the ledger stores (sorted keys, no spaces): equal inputs give equal text."""
    return _dumps(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _packed_in_python(db: Backend, columns: Sequence[str], clause: str,
                      args: Sequence[Any]) -> list[tuple[Any, ...]]:
    """``iter_raw``'s rows with ``PACKED`` built in Python (no JSON functions, or a BLOB in a text column)."""
    names = [n for c in columns for n in (PACKED_COLUMNS if c == PACKED else (c,))]
    at = columns.index(PACKED) if PACKED in columns else -1
    rows = db.execute(f"SELECT {', '.join(names)} FROM runs {clause} ORDER BY local_id", args).fetchall()
    if at < 0:
        return rows
    k = len(PACKED_COLUMNS)
    return [(*r[:at], json.dumps(list(r[at:at + k]), default=str), *r[at + k:]) for r in rows]


for _name in ("_migrate", "add_intents", "update_many", "_write_back", "set_rating", "remember_upload",
              "forget_upload", "find_upload", "completed_inputs", "charge_ratios", "price_evidence", "exposure", "admit",
              "clock_anchor", "renew_lease", "end_lease", "lease_alive", "set_spend_limit", "spend_limits", "claim",
              "retried", "add_sweep", "get_sweep", "update_sweep", "stop_requested", "sweep_summaries", "total_charged",
              "known_run_ids", "_raw", "events", "_select", "dump", "load"):
    setattr(Ledger, _name, _retrying(getattr(Ledger, _name)))

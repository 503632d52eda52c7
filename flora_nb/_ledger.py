"""The run ledger: a SQLite file that remembers every start and every status change.

A start is written as an intent (with its idempotency key) *before* the POST and completed
after it, so a kernel that dies mid-start leaves a trace that ``resume()`` can reconcile.
Rows are keyed by endpoint (base URL) and workspace, so simulator runs never mix with live
ones. The API key is never stored.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ._files import private_dir

__all__ = ["ACTIVE", "COLUMNS", "Ledger", "LedgerRow", "canonical_json", "default_home", "default_ledger_path"]

SCHEMA_VERSION = 2
ACTIVE = ("starting", "pending", "running")  # statuses the poller still has work for

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
)

COLUMNS = (
    "local_id", "endpoint", "workspace_id", "idempotency_key", "run_id", "sweep_id", "variation",
    "technique_id", "technique_name", "project_id", "status", "progress", "estimated_cost",
    "charged_cost", "estimated_seconds", "intent_at", "created_at", "started_at", "completed_at",
    "error_code", "error_message", "outputs", "inputs", "labels", "poll_url", "reused_from", "updated_at",
    "owner",
)
_JSON_COLUMNS = ("outputs", "inputs", "labels")
_UPDATABLE = frozenset(COLUMNS) - {"local_id", "endpoint", "idempotency_key", "intent_at"}


def default_home() -> Path:
    """``$FLORA_NB_HOME``, else ``~/.flora_nb``."""
    return Path(os.environ.get("FLORA_NB_HOME") or Path.home() / ".flora_nb").expanduser()


def default_ledger_path() -> Path:
    return default_home() / "ledger.sqlite"


@dataclass
class LedgerRow:
    """One run as the ledger holds it (JSON columns decoded)."""

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

    @classmethod
    def from_sql(cls, values: Sequence[Any]) -> LedgerRow:
        data = dict(zip(COLUMNS, values))
        for name in _JSON_COLUMNS:
            data[name] = json.loads(data[name] or ("[]" if name == "outputs" else "{}"))
        return cls(**data)


class Ledger:
    """Thread-safe access to the ledger file; several processes may share it (WAL, busy timeout)."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = Path(path) if path is not None else default_ledger_path()
        private_dir(self.path.parent, tighten=path is None)  # ~/.flora_nb is 0700
        self._create_private(self.path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._migrate()

    @staticmethod
    def _create_private(path: Path) -> None:
        # Create the file 0600 before SQLite does, so no other user ever reads run history.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)

    def _migrate(self) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} was written by a newer flora_nb (schema {version}); upgrade flora_nb."
                )
            for number in range(version, SCHEMA_VERSION):
                _run_script(db, _MIGRATIONS[number])
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ writing

    def _write(self) -> _Transaction:
        return _Transaction(self._db, self._lock)

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
        with self._write() as db:
            for intent in intents:
                unknown = set(intent) - _UPDATABLE - {"endpoint", "idempotency_key"}
                if unknown:
                    raise ValueError(f"not ledger columns: {sorted(unknown)}")
                values = {"status": "starting", "inputs": {}, "labels": {}, **intent}
                values = {k: (_dumps(v) if k in _JSON_COLUMNS else v) for k, v in values.items()}
                values.update(intent_at=now, updated_at=now)
                names = ", ".join(values)
                cur = db.execute(f"INSERT INTO runs ({names}) VALUES ({','.join('?' * len(values))})",
                                 tuple(values.values()))
                ids.append(int(cur.lastrowid))
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

    # ------------------------------------------------------------------ reading

    def get(self, local_id: int) -> LedgerRow | None:
        rows = self._select("WHERE local_id = ?", (local_id,))
        return rows[0] if rows else None

    def find_run(self, endpoint: str, run_id: str) -> LedgerRow | None:
        rows = self._select("WHERE endpoint = ? AND run_id = ?", (endpoint, run_id))
        return rows[0] if rows else None

    def completed_inputs(self, endpoint: str, workspace_id: str, technique_id: str) -> dict[str, str]:
        """Canonical inputs JSON -> run id of a completed, paid run with exactly those inputs."""
        with self._lock:
            cur = self._db.execute(
                "SELECT inputs, run_id FROM runs WHERE endpoint = ? AND workspace_id = ? AND technique_id = ?"
                " AND status = 'completed' AND run_id IS NOT NULL AND reused_from IS NULL ORDER BY local_id",
                (endpoint, workspace_id, technique_id),
            )
            return {inputs: run_id for inputs, run_id in cur}

    def total_charged(self, endpoint: str) -> float:
        """Sum of known charges for this endpoint (USD)."""
        with self._lock:
            value = self._db.execute("SELECT SUM(charged_cost) FROM runs WHERE endpoint = ?", (endpoint,)).fetchone()[0]
        return float(value or 0.0)

    def open_starts(self, endpoint: str, workspace_id: str, technique_id: str) -> list[LedgerRow]:
        """Starts not yet bound to a run (in flight, lost or unconfirmed), any session."""
        return self._select(
            "WHERE endpoint = ? AND workspace_id = ? AND technique_id = ? AND status = 'starting'"
            " AND run_id IS NULL ORDER BY local_id", (endpoint, workspace_id, technique_id))

    def known_run_ids(self, endpoint: str) -> set[str]:
        with self._lock:
            cur = self._db.execute("SELECT run_id FROM runs WHERE endpoint = ? AND run_id IS NOT NULL", (endpoint,))
            return {r[0] for r in cur}

    def rows(self, endpoint: str | None = None, *, statuses: Sequence[str] | None = None,
             sweep_id: str | None = None, since: float | None = None) -> list[LedgerRow]:
        """Rows matching the filters, oldest intent first."""
        where, args = [], []
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

    def iter_raw(self, endpoint: str | None = None) -> Iterator[tuple[Any, ...]]:
        """Raw rows in column order, for building DataFrames without per-row objects."""
        clause, args = ("WHERE endpoint = ?", (endpoint,)) if endpoint else ("", ())
        with self._lock:
            yield from self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM runs {clause} ORDER BY local_id", args).fetchall()

    def events(self, local_id: int) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute(
                "SELECT at, status, progress, charged_cost, note FROM events WHERE local_id = ? ORDER BY event_id",
                (local_id,),
            )
            return [dict(zip(("at", "status", "progress", "charged_cost", "note"), r)) for r in cur]

    def _select(self, clause: str, args: tuple[Any, ...]) -> list[LedgerRow]:
        with self._lock:
            cur = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM runs {clause}", args)
            return [LedgerRow.from_sql(r) for r in cur.fetchall()]



class _Transaction:
    """``with`` block holding the ledger lock and one IMMEDIATE transaction."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock):
        self.db = db
        self.lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.db

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        try:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.lock.release()


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT our open transaction; run the statements one by one instead.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _apply(db: sqlite3.Connection, local_id: int, fields: Mapping[str, Any], now: float, note: str | None) -> None:
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"not ledger columns: {sorted(unknown)}")
    values = {k: (_dumps(v) if k in _JSON_COLUMNS else v) for k, v in fields.items()}
    values["updated_at"] = now
    before = db.execute("SELECT status, charged_cost FROM runs WHERE local_id = ?", (local_id,)).fetchone()
    assignments = ", ".join(f"{k} = ?" for k in values)
    db.execute(f"UPDATE runs SET {assignments} WHERE local_id = ?", (*values.values(), local_id))
    if before is None:
        return
    status = fields.get("status", before[0])
    cost = fields.get("charged_cost", before[1])
    if status != before[0] or cost != before[1] or note:
        _event(db, local_id, now, status, fields.get("progress"), cost, note)


def _event(db: sqlite3.Connection, local_id: int, at: float, status: str, progress: float | None,
           cost: float | None, note: str | None) -> None:
    db.execute(
        "INSERT INTO events (local_id, at, status, progress, charged_cost, note) VALUES (?,?,?,?,?,?)",
        (local_id, at, status, progress, cost, note),
    )


def canonical_json(value: Any) -> str:
    """The JSON form the ledger stores (sorted keys, no spaces): equal inputs give equal text."""
    return _dumps(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)

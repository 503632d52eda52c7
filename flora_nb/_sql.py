"""Where the ledger's rows live: a SQLite file (the default) or a team's PostgreSQL database.

The ledger writes its SQL once, in the dialect both engines share (``?`` parameters, ``ON
CONFLICT``, ``CASE``, ``COALESCE``); a backend turns it into what its engine takes, opens (and,
for a server, re-opens) the connection, and makes a write transaction exclusive the way SQLite's
``BEGIN IMMEDIATE`` is. On PostgreSQL that is a transaction-level advisory lock of the ledger's
schema: a spend-limit check and the start it lets through are one step for every kernel on every
host, so racing kernels never pass a limit together. Reads never wait for it (MVCC).

A connection string's password never leaves this module: ``describe()`` and every error show the
string with its password replaced by ``***``. psycopg is imported only when a PostgreSQL ledger
is opened.
"""

from __future__ import annotations

import abc
import functools
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import quote

from ._errors import LedgerError

__all__ = ["Backend", "PostgresBackend", "SqliteBackend", "is_database_url", "open_backend", "redact_url"]

BUSY_SECONDS = 30.0  # how long a write waits for another session's (or process's) write to end
CONNECT_SECONDS = 10.0  # how long opening a connection to a database server may take
_POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_database_url(target: object) -> bool:
    """Is this a PostgreSQL connection string (``postgresql://...``), rather than a file?"""
    return isinstance(target, str) and target.split("://", 1)[0].lower() in _POSTGRES_SCHEMES and "://" in target


def sqlite_path(target: str | os.PathLike[str]) -> Path:
    """The file of a plain path or a ``sqlite:///path`` URL."""
    text = os.fspath(target)
    if isinstance(text, str) and text.lower().startswith("sqlite://"):
        rest = text[len("sqlite://"):]
        return Path(rest[1:] if rest.startswith("//") else rest).expanduser()
    return Path(text).expanduser()


def redact_url(url: str) -> str:
    """A connection string with its passwords (in the user part or the query) shown as ``***``.

    The secrets are found as libpq itself reads the string (so a password holding ``?``, ``#`` or
    ``/`` is hidden whole), then the user part after its ``:`` and every password option are masked too.
    """
    shown = _without_secrets(url, url)
    head, sep, rest = shown.partition("://")
    if not sep:
        return "a PostgreSQL connection string"
    end = min([k for k in (rest.find("@"), rest.find("/")) if k >= 0], default=-1)
    if end >= 0 and rest[end] == "@" and ":" in rest[:end]:  # libpq's rule: the user part ends at the first @ or /
        rest = rest[:end].split(":", 1)[0] + ":***" + rest[end:]
    elif "@" in rest and ":" in rest.split("@", 1)[0]:  # a string libpq cannot read: hide all that may be a password
        rest = rest.split(":", 1)[0] + ":***@" + rest.rsplit("@", 1)[1]
    return head + "://" + _PASSWORD_OPTION.sub(r"\1***", rest)


_PASSWORD_OPTION = re.compile(r"(?i)((?:ssl)?password=)[^&]*")


def _secrets(url: str) -> list[str]:
    """The passwords libpq reads from a connection string (none when psycopg is missing or cannot read it)."""
    try:
        from psycopg.conninfo import conninfo_to_dict
        values = conninfo_to_dict(url)
    except Exception:  # psycopg missing, or a string libpq refuses: the structural masking still applies
        return []
    return [str(values[k]) for k in ("password", "sslpassword") if values.get(k)]


def _without_secrets(text: str, url: str) -> str:
    """``text`` with every password of ``url`` (as written, or percent-encoded) replaced by ``***``."""
    for secret in sorted(_secrets(url), key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            text = text.replace(form, "***")
    return text


class Backend(abc.ABC):
    """What the ledger needs of a database: statements, transactions, the schema version, errors."""

    shared = False  # a database other machines may use at once (leases, not process ids, tell who lives)
    path: Path | None = None
    now_sql = "0"  # the engine's clock (seconds since 1970) as an SQL expression

    @abc.abstractmethod
    def describe(self) -> str:
        """What messages show: the file, or the connection string without its password."""

    @abc.abstractmethod
    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run one statement of the shared dialect; its cursor."""

    @abc.abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each row of parameters."""

    @abc.abstractmethod
    def insert(self, sql: str, args: Sequence[Any]) -> int:
        """Run an INSERT into runs; the new row's local id."""

    @abc.abstractmethod
    def begin(self) -> None:
        """Open a write transaction no other writer of this ledger shares."""

    def end(self, commit: bool) -> None:
        self.execute("COMMIT" if commit else "ROLLBACK")

    @abc.abstractmethod
    def schema_version(self) -> int:
        """The ledger's schema version (0: a new ledger)."""

    @abc.abstractmethod
    def set_schema_version(self, version: int) -> None:
        """Record the schema version the migrations reached."""

    def statements(self, script: str) -> list[str]:
        """A migration's statements as this engine takes them."""
        return [s for s in script.split(";") if s.strip()]

    @abc.abstractmethod
    def packed(self, columns: Sequence[str]) -> str:
        """An expression giving these text columns as one JSON array text."""

    @abc.abstractmethod
    def error_kind(self, exc: BaseException) -> str | None:
        """``integrity``, ``bad_value``, ``disconnected``, ``closed``, ``not_a_database``, ``damaged``,
        ``database`` (another engine error), or None: not the engine's error."""

    def reconnect(self) -> None:
        """Open the connection again after it dropped (a server's; a file's never drops)."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection; a closed ledger is never opened again."""


class SqliteBackend(Backend):
    """A SQLite file: WAL, a busy timeout, ``BEGIN IMMEDIATE`` for writes."""

    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, path: Path):
        self.path = path
        self._db = sqlite3.connect(str(path), timeout=BUSY_SECONDS, check_same_thread=False, isolation_level=None)

    def describe(self) -> str:
        return str(self.path)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._db.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    def insert(self, sql: str, args: Sequence[Any]) -> int:
        return int(self._db.execute(sql, args).lastrowid or 0)  # an INSERT always sets it

    def begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def prepare(self) -> None:
        """WAL, patience with other sessions, and a check of every page before anything is written."""
        self._db.execute(f"PRAGMA busy_timeout={int(BUSY_SECONDS * 1000)}")
        _use_wal(self._db)
        self._db.execute("PRAGMA synchronous=NORMAL")

    def quick_check(self) -> list[str]:
        # A damaged page would otherwise surface mid-session, after runs were started (0.25 s per 100k runs).
        return [row[0] for row in self._db.execute("PRAGMA quick_check")]

    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, version: int) -> None:
        self._db.execute(f"PRAGMA user_version={int(version)}")

    def packed(self, columns: Sequence[str]) -> str:
        return f"json_array({', '.join(columns)})"

    def error_kind(self, exc: BaseException) -> str | None:
        if isinstance(exc, (UnicodeError, OverflowError, sqlite3.InterfaceError)) or (
                isinstance(exc, sqlite3.ProgrammingError) and str(exc).startswith("Error binding parameter")):
            return "bad_value"
        if not isinstance(exc, sqlite3.Error):
            return None
        if isinstance(exc, sqlite3.IntegrityError):
            return "integrity"
        if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
            return "closed"
        name = getattr(exc, "sqlite_errorname", "")  # Python 3.11+; the message otherwise
        if name == "SQLITE_NOTADB" or "not a database" in str(exc):
            return "not_a_database"
        if name.startswith("SQLITE_CORRUPT") or "malformed" in str(exc):
            return "damaged"
        return "database"

    def close(self) -> None:
        self._db.close()


def _use_wal(db: sqlite3.Connection, patience: float = 30.0) -> None:
    """Switch the file to WAL; another process opening it at the same moment makes SQLite answer
    "locked" at once (no busy wait for a journal change), so try again for a while."""
    deadline = time.monotonic() + patience
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class PostgresBackend(Backend):
    """A PostgreSQL database (psycopg 3): autocommit reads, advisory-locked write transactions."""

    shared = True
    now_sql = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"

    def __init__(self, url: str):
        self._url, self._shown = url, redact_url(url)
        try:
            import psycopg
        except ImportError as exc:
            raise LedgerError('a PostgreSQL ledger needs psycopg 3: pip install "flora_nb[postgres]"') from exc
        self._psycopg = psycopg
        self._conn: Any = None
        self._closed = False  # closed by its session: never opened again
        self.reconnect()

    def describe(self) -> str:
        return self._shown

    def reconnect(self) -> None:
        if self._closed:
            return
        if self._conn is not None:
            self._conn.close()
        try:
            self._conn = self._psycopg.connect(self._url, autocommit=True, connect_timeout=int(CONNECT_SECONDS),
                                               application_name="flora_nb")
        except self._psycopg.Error as exc:
            raise LedgerError(f"the team ledger {self._shown} could not be reached: {self.scrub(exc)}. Check that "
                              "the server is up and the connection string (user, host, database) is right; a "
                              "password can also come from PGPASSWORD or ~/.pgpass.") from None
        # One lock per database and schema: every kernel of this ledger writes in turn, other ledgers never wait.
        self._lock_key = self._conn.execute(
            "SELECT hashtext('flora_nb:' || current_database() || ':' || current_schema())").fetchone()[0]

    def scrub(self, exc: BaseException) -> str:
        """An engine error's text without the connection string's password."""
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _without_secrets(text, self._url)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._conn.execute(_postgres_sql(sql), _clean(args))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(_postgres_sql(sql), [_clean(r) for r in rows])

    def insert(self, sql: str, args: Sequence[Any]) -> int:
        return int(self.execute(f"{sql} RETURNING local_id", args).fetchone()[0])

    def begin(self) -> None:
        self._conn.execute("BEGIN")
        try:
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
        except BaseException:  # a lock timeout, Ctrl-C while waiting: never leave the connection in a dead transaction
            try:
                self._conn.execute("ROLLBACK")
            except self._psycopg.Error:
                pass  # a broken connection: the next call opens it again
            raise

    def schema_version(self) -> int:
        self._conn.execute("CREATE TABLE IF NOT EXISTS flora_nb_schema (version BIGINT NOT NULL)")
        row = self._conn.execute("SELECT max(version) FROM flora_nb_schema").fetchone()
        return int(row[0] or 0)

    def set_schema_version(self, version: int) -> None:
        self._conn.execute("DELETE FROM flora_nb_schema")
        self._conn.execute("INSERT INTO flora_nb_schema (version) VALUES (%s)", (int(version),))

    def statements(self, script: str) -> list[str]:
        return [_postgres_ddl(s) for s in super().statements(script)]

    def packed(self, columns: Sequence[str]) -> str:
        return f"json_build_array({', '.join(columns)})::text"

    def error_kind(self, exc: BaseException) -> str | None:
        errors = self._psycopg.errors
        if isinstance(exc, (UnicodeError, OverflowError, self._psycopg.DataError)):
            return "bad_value"
        if not isinstance(exc, self._psycopg.Error):
            return None
        if isinstance(exc, self._psycopg.IntegrityError):
            return "integrity"
        if self._closed:
            return "closed"
        if self._conn is None or self._conn.closed or self._conn.broken or isinstance(exc, errors.AdminShutdown):
            return "disconnected"
        return "database"

    def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()


@functools.lru_cache(maxsize=512)
def _postgres_sql(sql: str) -> str:
    """The shared dialect for psycopg: ``%s`` parameters, no SQLite index hints (``+column``)."""
    return re.sub(r"(?<![\w)'])\+(?=[a-z_]+ )", "", sql.replace("%", "%%").replace("?", "%s"))


def _postgres_ddl(statement: str) -> str:
    """A migration statement for PostgreSQL: 64-bit integers and doubles, identity keys."""
    statement = statement.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
    return re.sub(r"\bREAL\b", "DOUBLE PRECISION", re.sub(r"\bINTEGER\b", "BIGINT", statement))


def _clean(args: Sequence[Any]) -> Sequence[Any]:
    """Values as SQLite stores them: PostgreSQL text holds no NUL character (shown as U+FFFD, as other text
    no engine can hold is), and True/False are the numbers 1/0."""
    if any((type(a) is str and "\x00" in a) or type(a) is bool for a in args):
        return [a.replace("\x00", "\ufffd") if type(a) is str else int(a) if type(a) is bool else a for a in args]
    return args


def open_backend(target: str | os.PathLike[str]) -> Backend:
    """The backend of a path, a ``sqlite:///`` URL or a ``postgresql://`` connection string."""
    if is_database_url(target):
        return PostgresBackend(str(target))
    text = os.fspath(target)
    if isinstance(text, str) and "://" in text and not text.lower().startswith("sqlite://"):
        raise LedgerError(f"a ledger is a file path, sqlite:///PATH or postgresql://USER@HOST/DB; got "
                          f"{text.split('://', 1)[0]}://... ; give one of those.")
    return SqliteBackend(sqlite_path(target))

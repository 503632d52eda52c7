"""The ledger file: migrations, privacy, concurrent writers."""

from __future__ import annotations

import os
import sqlite3

from flora_nb._ledger import _MIGRATIONS, SCHEMA_VERSION, Ledger


def test_a_version_1_ledger_is_migrated_in_place(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_MIGRATIONS[0])
    db.execute(
        "INSERT INTO runs (endpoint, workspace_id, idempotency_key, technique_id, status, intent_at, updated_at)"
        " VALUES ('e', 'ws', 'k', 'tech_a', 'completed', 1, 1)")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    ledger = Ledger(path)
    [row] = ledger.rows("e")
    assert row.idempotency_key == "k" and row.owner is None and row.status == "completed"
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == len(_MIGRATIONS)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    Ledger(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    try:
        Ledger(path)
    except RuntimeError as exc:
        assert "newer flora_nb" in str(exc)
    else:
        raise AssertionError("a ledger from a newer flora_nb must not be opened")


def test_file_mode_and_events(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    local = ledger.add_intent(endpoint="e", workspace_id="ws", idempotency_key="k", technique_id="tech_a")
    ledger.update(local, status="pending", run_id="run_1")
    ledger.update(local, progress=50.0)  # no status or cost change: no event
    ledger.update(local, status="completed", charged_cost=0.04)
    assert oct(os.stat(ledger.path).st_mode & 0o777) == "0o600"
    assert [e["status"] for e in ledger.events(local)] == ["starting", "pending", "completed"]
    assert ledger.total_charged("e") == 0.04 and ledger.known_run_ids("e") == {"run_1"}

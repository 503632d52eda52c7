"""The ledger file: migrations, privacy, concurrent writers."""

from __future__ import annotations

import os
import sqlite3

import pytest

from flora_nb._errors import LedgerError
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
    assert row.rating is None and row.note is None


def test_a_version_2_ledger_keeps_its_rows_and_gains_ratings_and_uploads(tmp_path):
    path = tmp_path / "v2.sqlite"
    db = sqlite3.connect(path)
    db.executescript(_MIGRATIONS[0] + ";" + _MIGRATIONS[1])
    for n in range(3):
        db.execute(
            "INSERT INTO runs (endpoint, workspace_id, idempotency_key, run_id, technique_id, status, charged_cost,"
            " inputs, owner, intent_at, updated_at) VALUES ('e', 'ws', ?, ?, 'tech_a', 'completed', 0.04,"
            " '{\"prompt\":\"p\"}', 'host:1:t', 1, 1)", (f"k{n}", f"run_{n}"))
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    ledger = Ledger(path)
    rows = ledger.rows("e")
    assert [r.run_id for r in rows] == ["run_0", "run_1", "run_2"]
    assert all(r.owner == "host:1:t" and r.inputs == {"prompt": "p"} and r.charged_cost == 0.04 for r in rows)
    assert all(r.rating is None and r.note is None for r in rows)
    ledger.set_rating(rows[1].local_id, 4.0, "good")
    again = ledger.get(rows[1].local_id)
    assert again.rating == 4.0 and again.note == "good" and again.status == "completed"
    assert ledger.find_upload("e", "ws", "0" * 64) is None
    ledger.remember_upload(endpoint="e", workspace_id="ws", sha256="0" * 64, size=3, content_type="image/png",
                           file_name="a.png", asset_id="asset_1", url="http://x/a.png", created_at=1.0)
    assert ledger.find_upload("e", "ws", "0" * 64)["asset_id"] == "asset_1"
    ledger.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    reopened = Ledger(path)  # opening a current ledger again migrates nothing and loses nothing
    assert reopened.get(rows[1].local_id).rating == 4.0 and len(reopened.rows("e")) == 3


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    Ledger(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="newer flora_nb.*upgrade"):
        Ledger(path)


def test_reads_raise_the_ledgers_own_error_never_a_raw_sqlite3_one(ledger_at):
    ledger = Ledger(ledger_at())
    local = ledger.add_intent(endpoint="e", workspace_id="ws", idempotency_key="k", technique_id="tech_a")
    ledger.close()
    reads = [lambda: ledger.get(local), lambda: ledger.rows("e"), lambda: list(ledger.iter_raw("e")),
             lambda: ledger.total_charged("e"), lambda: ledger.exposure("e"), lambda: ledger.events(local),
             lambda: ledger.sweep_summaries("e"), lambda: ledger.update(local, status="pending")]
    for read in reads:
        with pytest.raises(LedgerError, match="session was closed") as caught:
            read()
        assert not isinstance(caught.value, sqlite3.Error) and "sqlite3" not in type(caught.value).__module__


def test_a_file_that_is_not_a_ledger_is_refused_with_the_ledgers_error(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"these are my notes, not a database" * 100)
    with pytest.raises(LedgerError, match="notes.sqlite is not a flora_nb ledger.*ledger path"):
        Ledger(path)


def test_file_mode_and_events(ledger_at):
    ledger = Ledger(ledger_at())
    local = ledger.add_intent(endpoint="e", workspace_id="ws", idempotency_key="k", technique_id="tech_a")
    ledger.update(local, status="pending", run_id="run_1")
    ledger.update(local, progress=50.0)  # no status or cost change: no event
    ledger.update(local, status="completed", charged_cost=0.04)
    assert ledger.path is None or oct(os.stat(ledger.path).st_mode & 0o777) == "0o600"
    assert [e["status"] for e in ledger.events(local)] == ["starting", "pending", "completed"]
    assert ledger.total_charged("e") == 0.04 and ledger.known_run_ids("e") == {"run_1"}


def _two_rows(ledger: Ledger) -> list[int]:
    ids = [ledger.add_intent(endpoint="http://127.0.0.1:9/api/v1", workspace_id="ws", idempotency_key=f"k{i}",
                             technique_id="t", technique_name="T", estimated_cost=0.04,
                             inputs={"prompt": "same", "size": 256 + i}, labels={"exp": "a"}) for i in range(2)]
    ledger.update_many([(ids[0], {"run_id": "run_a", "status": "completed", "charged_cost": 0.04, "created_at": 100.0,
                                  "started_at": 101.0, "completed_at": 103.5,
                                  "outputs": [{"output_id": "image", "type": "imageUrl", "url": "http://x/a.png"}]})])
    return ids


def test_runs_frame_from_selected_columns_matches_the_frame_from_all_columns(ledger_at):
    import gc

    import pandas as pd

    from flora_nb._frames import FRAME_COLUMNS, runs_frame

    ledger = Ledger(ledger_at())
    _two_rows(ledger)
    full = runs_frame(ledger.iter_raw())
    lean = runs_frame(ledger.iter_raw(None, FRAME_COLUMNS), FRAME_COLUMNS)
    pd.testing.assert_frame_equal(full, lean)
    assert gc.isenabled()  # the pause while building is undone
    assert list(lean["input.size"]) == [256, 257] and list(lean["label.exp"]) == ["a", "a"]
    assert lean.loc[0, "output_urls"] == ["http://x/a.png"] and lean.loc[1, "output_urls"] == []
    assert lean.loc[0, "run_seconds"] == 2.5 and pd.isna(lean.loc[1, "run_seconds"])
    lean.loc[0, "label.exp"] = "changed"  # rows sharing one parsed JSON text stay independent
    assert lean.loc[1, "label.exp"] == "a"


def test_iter_raw_refuses_a_column_the_ledger_has_not(ledger_at):
    import pytest

    ledger = Ledger(ledger_at())
    with pytest.raises(ValueError, match="not ledger columns"):
        list(ledger.iter_raw(None, ("run_id", "password")))


def test_write_back_returns_each_row_as_written_and_logs_status_changes(ledger_at):
    ledger = Ledger(ledger_at())
    ids = _two_rows(ledger)
    rows = [ledger.get(i) for i in ids]
    events_before = len(ledger.events(ids[0]))
    outputs = [{"output_id": "image", "type": "imageUrl", "url": "http://x/b.png"}]
    written = ledger.write_back([(rows[0], {"progress": 100.0}),
                                 (rows[1], {"status": "completed", "charged_cost": 0.05, "outputs": outputs})])
    assert written == {i: ledger.get(i) for i in ids}  # the same rows a read gives, inputs and labels included
    assert written[ids[1]].outputs == outputs and written[ids[1]].inputs == {"prompt": "same", "size": 257}
    assert [e["status"] for e in ledger.events(ids[1])][-1] == "completed"
    assert len(ledger.events(ids[0])) == events_before  # progress alone is no status event


def test_write_back_derives_rows_a_read_would_give_and_logs_the_events_update_many_logs(ledger_at):
    ledgers = [Ledger(ledger_at("a")), Ledger(ledger_at("b"))]
    ids = [_two_rows(ledger) for ledger in ledgers][0]
    outputs = ({"output_id": "image", "type": "imageUrl", "url": "http://x/ü.png"},)  # a tuple: a read gives a list
    changes = [(ids[0], {"progress": 100.0, "project_id": "prj"}),
               (ids[1], {"status": "completed", "charged_cost": 0.05, "outputs": outputs, "progress": 100.0})]
    written = ledgers[0].write_back([(ledgers[0].get(i), ch) for i, ch in changes])
    ledgers[1].update_many(changes)
    assert written == {i: ledgers[0].get(i) for i in ids} and isinstance(written[ids[1]].outputs, list)
    logged = [[(e["status"], e["charged_cost"]) for e in ledger.events(ids[1])] for ledger in ledgers]
    assert logged[0] == logged[1] and logged[0][-1] == ("completed", 0.05)
    assert len(ledgers[0].events(ids[0])) == len(ledgers[1].events(ids[0]))


def test_write_back_reads_back_a_row_another_writer_changed_and_rows_changed_twice(ledger_at):
    ledger = Ledger(ledger_at())
    ids = _two_rows(ledger)
    held = [ledger.get(i) for i in ids]
    other = Ledger(ledger_at())  # another session on the same ledger rates a run meanwhile
    other.set_rating(ids[0], 5.0, "another kernel")
    other.update(ids[1], error_message="set elsewhere")
    written = ledger.write_back([(held[0], {"progress": 42.0}), (held[1], {"progress": 7.0})])
    assert written == {i: ledger.get(i) for i in ids}
    assert (written[ids[0]].rating, written[ids[0]].note) == (5.0, "another kernel")
    assert written[ids[1]].error_message == "set elsewhere"
    row = ledger.get(ids[1])
    twice = ledger.write_back([(row, {"status": "running"}), (row, {"progress": 50.0}), (row, {"status": "completed"})])
    assert twice == {ids[1]: ledger.get(ids[1])}
    assert (twice[ids[1]].status, twice[ids[1]].progress) == ("completed", 50.0)
    assert [e["status"] for e in ledger.events(ids[1])][-2:] == ["running", "completed"]


def test_write_back_skips_a_row_that_is_gone_and_refuses_unknown_columns(ledger_at):
    import dataclasses

    import pytest

    ledger = Ledger(ledger_at())
    ids = _two_rows(ledger)
    ghost = dataclasses.replace(ledger.get(ids[0]), local_id=999)
    assert ledger.write_back([(ghost, {"progress": 1.0})]) == {}
    before = ledger.get(ids[1])
    with pytest.raises(ValueError, match="not ledger columns"):
        ledger.write_back([(ledger.get(ids[0]), {"progress": 3.0}), (before, {"api_key": "x"})])
    assert ledger.get(ids[0]).progress == 0.0 and ledger.get(ids[1]) == before  # nothing of the batch was written


def _open_and_write(path, barrier, results):
    barrier.wait()  # every process opens the new file at the same moment
    try:
        ledger = Ledger(path)
        ledger.add_intent(endpoint="e", workspace_id="ws", idempotency_key=f"k{os.getpid()}", technique_id="t")
        ledger.close()
        results.put("ok")
    except Exception as exc:  # reported to the test, which names it
        results.put(repr(exc))


def test_processes_opening_a_new_ledger_at_the_same_moment_all_get_in(ledger_at):
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")  # children forked from a clean, thread-free process
    ctx.set_forkserver_preload(["flora_nb._ledger"])
    for trial in range(8):  # before the fix, about one trial in three had a "database is locked"
        path, n = ledger_at(f"l{trial}"), 6
        barrier, results = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_open_and_write, args=(path, barrier, results)) for _ in range(n)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(10)
        assert outcomes == ["ok"] * n
        assert len(Ledger(path).rows("e")) == n


def test_a_folder_where_the_ledger_file_should_be_is_the_ledgers_error(tmp_path):
    with pytest.raises(LedgerError, match="could not be opened.*ledger path"):
        Ledger(tmp_path)


def test_an_interrupted_commit_is_never_taken_for_a_written_intent(ledger_at, monkeypatch):
    ledger = Ledger(ledger_at())
    backend = ledger._backend
    real_end = backend.end

    def interrupted(commit: bool) -> None:
        if commit:
            real_end(commit=False)
            raise KeyboardInterrupt  # Ctrl-C while COMMIT was on its way
        real_end(commit=commit)

    monkeypatch.setattr(backend, "end", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ledger.add_intent(endpoint="e", workspace_id="ws", idempotency_key="k", technique_id="t")
    monkeypatch.setattr(backend, "end", real_end)
    assert ledger.rows("e") == []  # the caller saw it fail, so nothing was sent for it
    ledger.add_intent(endpoint="e", workspace_id="ws", idempotency_key="k", technique_id="t")
    assert len(ledger.rows("e")) == 1

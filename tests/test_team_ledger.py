"""A team ledger on PostgreSQL (issue 22): several kernels, people and hosts, one record of runs and spend.

Everything here runs against the suite's real PostgreSQL cluster (``make test`` starts it; in CI these
tests fail rather than skip without it) and is checked against the server's and the database's own
records, never against what a client believes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from flora_nb import Flora
from flora_nb._errors import LedgerError
from flora_nb._lease import Lease
from flora_nb._ledger import Ledger
from flora_nb._ledger_copy import copy_ledger
from flora_nb._sql import redact_url
from flora_nb.sim import FloraSimulator
from tests.invariants import SimProcess, check
from tests.waiting import until

POSTER = "tech_a1poster"  # $0.04 a run, charged exactly

KERNEL = textwrap.dedent("""
    import sys
    from flora_nb import Flora
    key, base, ledger, tag = sys.argv[1:5]
    with Flora(api_key=key, base_url=base, ledger=ledger, poll_interval=(0.02, 0.05), reconcile_grace=1.0,
               confirm_above=None) as fl:
        fl.client.timeout = (1.0, 2.0)  # a lost answer is known lost soon
        print("ready", flush=True)
        sys.stdin.readline()  # every kernel sweeps from the same moment
        try:
            sweep = fl.sweep("tech_a1poster", grid={"prompt": [f"{tag}-{i:02d}" for i in range(12)]},
                             max_concurrency=4)
        except Exception as exc:  # the shared limit was spent before this sweep could start any run
            print("refused", type(exc).__name__, flush=True)
        else:
            sweep.wait(150)
            print(sum(1 for r in sweep.runs if r.id), flush=True)
""")


def _count(url: str, sql: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return int(conn.execute(sql).fetchone()[0])


def test_three_kernels_sweeping_at_once_with_lost_answers_share_one_ledger_and_one_limit(postgres_schema):
    ledger = postgres_schema
    with SimProcess(speed=50.0, seed=7, faults={"latency": 0.01, "drop_rate": 0.1}) as sim:
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger=ledger, user="lead") as fl:
            fl.set_spend_limit(1.00)  # 36 runs of $0.04 would be $1.44: the limit must hold across kernels
        kernels = []
        for user in ("ana", "ben", "chloe"):
            env = {**os.environ, "FLORA_NB_USER": user}
            kernels.append(subprocess.Popen([sys.executable, "-c", KERNEL, sim.api_key, sim.base_url, ledger, user],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env))
        assert [k.stdout.readline().strip() for k in kernels] == ["ready"] * 3
        for k in kernels:
            k.stdin.write("go\n")
            k.stdin.flush()
        outs = [k.communicate(timeout=200)[0] for k in kernels]
        assert all(k.returncode == 0 for k in kernels), outs
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger=ledger, poll_interval=(0.02, 0.05),
                   reconcile_grace=1.0) as fl:
            fl.resume()
            until(lambda: all(r.status in ("completed", "failed", "skipped") for r in fl.ledger.rows(fl.endpoint)),
                  90, "every row of the team ledger final", interval=0.1, fail=False)  # check() says what is not
            by_user = fl.costs(by="user", detail=True)
        stats, records = sim.stats(), sim.records()
    assert stats["drops"] > 0, "some start answers were lost"
    report = check(ledger, records, stats)
    assert report.ok, report  # each run bound to its own prompt, none doubled, none missing, charges equal
    assert 0.80 - 1e-9 <= stats["total_charged"] <= 1.00 + 1e-9, stats["total_charged"]  # the limit held, used
    assert _count(ledger, "SELECT COUNT(*) FROM runs") == 36 - sum("refused" in o for o in outs) * 12
    for record in records:  # the database's own rows: who started each run the server made
        assert record["inputs"]["prompt"].split("-")[0] in ("ana", "ben", "chloe")
    started_by = {u for u in by_user.index if u != "total"}
    assert started_by <= {"ana", "ben", "chloe"} and len(started_by) >= 2, by_user


def test_a_dead_kernel_on_another_host_is_known_by_its_lease_not_its_pid(postgres_schema):
    ledger = Ledger(postgres_schema)
    other = "render-box-7:4242:feedc0de"  # another host: its process id says nothing here
    assert ledger.owner_alive(other) is None  # no lease: the caller falls back to the row's age
    ledger.renew_lease(other, "ben", "render-box-7", 60.0)
    assert Ledger(postgres_schema).owner_alive(other) is True
    ledger.end_lease(other)  # what a closing session does; a killed one's lease runs out instead
    assert Ledger(postgres_schema).owner_alive(other) is False
    ledger.renew_lease(other, "ben", "render-box-7", -1.0)  # ran out a second ago, on the database's clock
    assert Ledger(postgres_schema).lease_alive(other) is False


def test_a_session_on_a_team_ledger_keeps_its_lease_while_it_lives(postgres_schema):
    ledger = Ledger(postgres_schema)
    lease = Lease(ledger, "here:1:abc", "ana", every=0.02)
    renewed = _count(postgres_schema, "SELECT COUNT(*) FROM leases WHERE owner = 'here:1:abc'")
    assert renewed == 1 and ledger.lease_alive("here:1:abc") is True

    def renewed_at() -> float:
        with psycopg.connect(postgres_schema, autocommit=True) as conn:
            return conn.execute("SELECT renewed_at FROM leases").fetchone()[0]

    first = renewed_at()
    until(lambda: renewed_at() > first, 10, "the lease to be renewed", interval=0.01)
    lease.stop()
    assert ledger.lease_alive("here:1:abc") is False and lease.trouble is None
    with FloraSimulator(speed=100.0) as sim:
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger=postgres_schema, user="ana") as fl:
            assert Ledger(postgres_schema).owner_alive(fl.owner) is True and fl.status()["ledger_lease"] is None
            assert "(a team ledger, shared by every kernel using it; you are ana)" in dict(fl.status().rows())["ledger"]
        assert Ledger(postgres_schema).lease_alive(fl.owner) is False  # closing ended it


def test_a_dropped_connection_is_opened_again_and_the_call_goes_on(postgres_schema):
    ledger = Ledger(postgres_schema)
    first = ledger.add_intent(endpoint="e", workspace_id="ws", idempotency_key="k1", technique_id="t")
    _drop(postgres_schema, ledger)  # the server drops the ledger's connection
    assert [row.local_id for row in ledger.rows("e")] == [first]  # a read after the drop: reconnected
    _drop(postgres_schema, ledger)
    second = ledger.add_intent(endpoint="e", workspace_id="ws", idempotency_key="k2", technique_id="t")
    assert _count(postgres_schema, "SELECT COUNT(*) FROM runs") == 2 and second != first  # written once


def _backend_pid(ledger: Ledger) -> int:
    """The server process of this ledger's connection (only this test's: other tests share the cluster)."""
    return ledger._backend._conn.info.backend_pid


def _drop(url: str, ledger: Ledger) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (_backend_pid(ledger),))


def test_runs_carry_who_started_them_and_from_where(postgres_schema):
    with FloraSimulator(speed=100.0) as sim:
        for user in ("ana", "ben"):
            with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger=postgres_schema, user=user) as fl:
                fl.run(POSTER, prompt=f"by {user}").wait(30).rate(4)
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger=postgres_schema, user="chloe") as fl:
            frame = fl.runs()
            assert list(frame["user"]) == ["ana", "ben"] and frame["host"].notna().all()
            assert list(frame["rated_by"]) == ["ana", "ben"]
            assert list(fl.runs(user="ben")["input.prompt"]) == ["by ben"]
            costs = fl.costs(by="user")
            assert list(costs.index) == ["ana", "ben", "total"] and list(costs["runs"]) == [1, 1, 2]
            with pytest.raises(Exception, match="no runs started by zed.*users with runs: ana, ben"):
                fl.runs(user="zed")
    users = _count(postgres_schema, "SELECT COUNT(DISTINCT user_name) FROM runs")
    assert users == 2


def test_copying_a_personal_ledger_in_and_out_is_idempotent(postgres_schema, tmp_path):
    personal = tmp_path / "mine.sqlite"
    with FloraSimulator(speed=100.0) as sim:
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger=personal, user="ana") as fl:
            fl.sweep(POSTER, grid={"prompt": ["a", "b", "c"]}).wait(30)
            fl.set_spend_limit(5.0)
    first = copy_ledger(str(personal), postgres_schema)
    assert first["runs"] == 3 and first["sweeps"] == 1 and first["spend_limits"] == 1 and first["events"] >= 9
    again = copy_ledger(str(personal), postgres_schema)
    assert again == {name: 0 for name in again}  # copying twice adds nothing
    assert _count(postgres_schema, "SELECT COUNT(*) FROM runs") == 3
    assert _count(postgres_schema, "SELECT COUNT(*) FROM events") == first["events"]
    back = tmp_path / "back.sqlite"
    result = subprocess.run([sys.executable, "-m", "flora_nb", "ledger", "copy", postgres_schema, str(back)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "added 3 run(s)" in result.stdout, result
    theirs, mine = Ledger(back), Ledger(personal)
    key = lambda r: r.idempotency_key
    assert [(r.run_id, r.inputs, r.charged_cost, r.user_name) for r in sorted(theirs.rows(), key=key)] == \
        [(r.run_id, r.inputs, r.charged_cost, r.user_name) for r in sorted(mine.rows(), key=key)]


def test_the_connection_strings_password_is_never_shown(postgres_schema, caplog):
    secret = "s3cr3t-Pa55"
    url = postgres_schema.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@")
    assert "***" in redact_url(url) and secret not in redact_url(url)
    with FloraSimulator(speed=100.0) as sim:
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger=url) as fl:  # trust auth: any password works
            shown = [repr(fl), repr(fl.status()), fl.status()._repr_html_() if hasattr(fl.status(), "_repr_html_")
                     else "", str(fl.status().rows()), fl.ledger.location]
            assert all(secret not in text for text in shown), shown
    unreachable = f"postgresql://ana:{secret}@127.0.0.1:9/flora?connect_timeout=2"
    with pytest.raises(LedgerError) as refused:
        Ledger(unreachable)
    text = str(refused.value)
    assert secret not in text and "***" in text and "PGPASSWORD" in text, text
    assert refused.value.__cause__ is None or secret not in str(refused.value.__cause__)
    assert all(secret not in record.getMessage() for record in caplog.records)


def test_a_postgresql_ledger_is_chosen_by_setting_and_sqlite_stays_the_default(postgres_schema, tmp_path, monkeypatch):
    with FloraSimulator(speed=100.0) as sim:
        monkeypatch.setenv("FLORA_NB_LEDGER", postgres_schema)
        with Flora(api_key=sim.api_key, base_url=sim.base_url) as fl:
            assert fl.ledger.shared and fl.ledger.path is None
            fl.run(POSTER, prompt="team").wait(30)
        assert _count(postgres_schema, "SELECT COUNT(*) FROM runs") == 1
        monkeypatch.delenv("FLORA_NB_LEDGER")
        with Flora(api_key=sim.api_key, base_url=sim.base_url, ledger=f"sqlite:///{tmp_path}/x.sqlite") as fl:
            assert not fl.ledger.shared and fl.ledger.path == tmp_path / "x.sqlite"
        with Flora(api_key=sim.api_key, base_url=sim.base_url) as fl:
            assert fl.ledger.path is not None and fl.ledger.path.name == "ledger.sqlite"
    with pytest.raises(Exception, match="give the ledger once"):
        Flora.simulated(ledger=postgres_schema, ledger_path=tmp_path / "y.sqlite")


def test_a_limit_check_and_its_start_are_one_step_for_every_kernel(postgres_schema):
    """Two kernels' spend-limit checks never overlap: the second waits in the database until the first wrote."""
    import threading

    first, second = Ledger(postgres_schema), Ledger(postgres_schema)
    ids = first.add_intents([{"endpoint": "e", "workspace_id": "ws", "idempotency_key": f"k{i}", "technique_id": "t",
                              "estimated_cost": 0.6, "status": "queued"} for i in range(2)])
    inside, go, seen = threading.Event(), threading.Event(), []

    def check_first() -> None:
        inside.set()
        go.wait(30)

    def check_second() -> None:  # what the second kernel's check finds already taken
        seen.append(sum(e for _, _, e, _, _ in second.exposure("e")))

    a = threading.Thread(target=first.admit, args=(ids[0], {"status": "starting"}, check_first))
    a.start()
    assert inside.wait(30)
    b = threading.Thread(target=second.admit, args=(ids[1], {"status": "starting"}, check_second))
    b.start()
    waiting = ("SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
               f" AND query LIKE '%pg_advisory_xact_lock%' AND pid = {_backend_pid(second)}")
    until(lambda: _count(postgres_schema, waiting) == 1, 30, "the second check to wait for the first", interval=0.01)
    assert seen == []  # it has not run while the first one's transaction is open
    go.set()
    a.join(30)
    b.join(30)
    assert seen == [pytest.approx(0.6)]  # it saw the first start's hold: two checks never both see the room


def test_the_magic_reaches_a_team_ledger_by_option_and_by_setting(postgres_schema, tmp_path, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    from flora_nb._magic import FloraMagics

    monkeypatch.setenv("FLORA_NB_HOME", str(tmp_path))
    shell = InteractiveShell.instance()
    magics = FloraMagics(shell=shell)
    shell.register_magics(magics)
    try:
        fl = shell.run_line_magic("flora", f"connect --sim --speed 100 --no-persist --ledger {postgres_schema}")
        assert fl.ledger.shared
        shell.run_line_magic("flora", "run poster-studio prompt=fox --wait")
        assert _count(postgres_schema, "SELECT COUNT(*) FROM runs WHERE status = 'completed'") == 1
        shell.run_line_magic("config", f'FloraMagics.ledger = "{postgres_schema}"')
        fl = shell.run_line_magic("flora", "connect --sim --speed 100 --no-persist")
        assert fl.ledger.shared and len(fl.runs(all_endpoints=True)) == 1  # another simulator: its own endpoint
        with pytest.raises(Exception, match="no runs started by nobody"):
            shell.run_line_magic("flora", "runs --user nobody")
    finally:
        shell.config.FloraMagics.pop("ledger", None)
        magics.ledger = ""
        if magics.session is not None:
            magics.session.close()


# -- found by a hostile review -------------------------------------------------------------------


def test_a_write_that_timed_out_waiting_for_another_kernel_leaves_the_ledger_usable(postgres_schema):
    impatient = postgres_schema.replace("options=-c", "options=-clock_timeout%3D200%20-c")
    ledger = Ledger(impatient)
    with psycopg.connect(postgres_schema, autocommit=True) as other:  # another kernel holds the write lock
        key = other.execute("SELECT hashtext('flora_nb:' || current_database() || ':' || current_schema())").fetchone()[0]
        other.execute("SELECT pg_advisory_lock(%s)", (key,))
        with pytest.raises(LedgerError, match="could not be written"):
            ledger.add_intent(endpoint="e", workspace_id="ws", idempotency_key="k1", technique_id="t")
        other.execute("SELECT pg_advisory_unlock(%s)", (key,))
    ledger.add_intent(endpoint="e", workspace_id="ws", idempotency_key="k2", technique_id="t")  # not stuck
    assert [row.idempotency_key for row in ledger.rows("e")] == ["k2"]


@pytest.mark.parametrize("password", ["pa?ss", "s3cr#t", "p/ss", "p%40ss", "pl@in:colon"])
def test_a_password_libpq_accepts_is_hidden_whole(password):
    url = f"postgresql://ana:{password}@db-host/flora?sslpassword=other-secret"
    shown = redact_url(url)
    for part in (password, password.split("@")[0], "other-secret"):
        assert part not in shown, shown
    assert shown.startswith("postgresql://ana:***@") or shown.startswith("postgresql://ana:***")


def test_the_magics_ledger_setting_is_printed_without_its_password():
    import contextlib
    import io

    from IPython.core.interactiveshell import InteractiveShell

    from flora_nb._magic import FloraMagics

    shell = InteractiveShell.instance()
    magics = FloraMagics(shell=shell)
    try:
        magics.ledger = "postgresql://ana:Hunter2Secret@db-host/flora"
        shown = io.StringIO()
        with contextlib.redirect_stdout(shown):
            print(FloraMagics.class_get_help(magics))
        assert "Hunter2Secret" not in shown.getvalue() and "ana:***@db-host" in shown.getvalue()
        assert magics.ledger == "postgresql://ana:Hunter2Secret@db-host/flora"  # the value itself is intact
    finally:
        magics.ledger = ""


def test_a_process_id_is_asked_only_where_it_means_the_same_process_else_the_lease(postgres_schema):
    import socket

    from flora_nb._owner import new_owner

    ledger = Ledger(postgres_schema)
    twin = f"{socket.gethostname()}~0badf00d:999999:abcdef"  # another machine (or container) named like this one
    ledger.renew_lease(twin, "ben", socket.gethostname(), 60.0)
    assert ledger.owner_alive(twin) is True  # its process id means nothing here: the lease tells
    here = new_owner().rsplit(":", 2)[0]
    killed = f"{here}:999999:abcdef"  # a kernel of this very host and process namespace, killed (no such pid)
    ledger.renew_lease(killed, "ana", socket.gethostname(), 60.0)
    assert ledger.owner_alive(killed) is False  # known dead at once, not after its lease runs out


def test_a_copy_links_a_retry_to_a_run_an_earlier_copy_brought(postgres_schema, tmp_path):
    personal = Ledger(tmp_path / "mine.sqlite")
    first = personal.add_intent(endpoint="e", workspace_id="ws", idempotency_key="kA", technique_id="t",
                                sweep_id="s1", status="failed")
    copy_ledger(str(tmp_path / "mine.sqlite"), postgres_schema)
    personal.add_intent(endpoint="e", workspace_id="ws", idempotency_key="kB", technique_id="t", sweep_id="s1",
                        retry_of=first)
    assert copy_ledger(str(tmp_path / "mine.sqlite"), postgres_schema)["runs"] == 1
    team = Ledger(postgres_schema)
    assert team.retried("s1") == {team.rows("e")[0].local_id}
    with pytest.raises(LedgerError, match="no ledger at"):
        copy_ledger(str(tmp_path / "typo.sqlite"), postgres_schema)
    assert not (tmp_path / "typo.sqlite").exists()


@pytest.fixture
def password_role(postgres_schema):
    """A role that must give a password (scram) on the suite's cluster: one hba line for it alone, first.
    The file is written directly: the tests run as the cluster's owner or as root (``scripts/with-postgres``)."""
    role, password = f"pw_{os.getpid()}", "Corr3ct-Horse"
    with psycopg.connect(postgres_schema, autocommit=True) as admin:
        hba = Path(admin.execute("SHOW hba_file").fetchone()[0])
        before = hba.read_text()
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        schema = admin.execute("SELECT current_schema()").fetchone()[0]
        admin.execute(f'GRANT ALL ON SCHEMA "{schema}" TO {role}')
        hba.write_text(f"local all {role} scram-sha-256\nhost all {role} all scram-sha-256\n{before}")
        admin.execute("SELECT pg_reload_conf()")
    url = postgres_schema.replace("postgresql://postgres@", f"postgresql://{role}@")
    # The server reloads its rules a moment later: wait until it asks this role for a password.
    until(lambda: _refused(url), 10, "the server to ask the new role for a password", interval=0.02)
    try:
        yield role, password, url
    finally:
        hba.write_text(before)
        with psycopg.connect(postgres_schema, autocommit=True) as admin:
            admin.execute("SELECT pg_reload_conf()")
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def _refused(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=2, passfile="/nonexistent").close()
    except psycopg.OperationalError:
        return True
    return False


def test_a_password_comes_from_pgpassword_or_pgpass_and_a_wrong_one_is_said_without_it(password_role, tmp_path,
                                                                                        monkeypatch):
    role, password, url = password_role
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(LedgerError, match="could not be reached.*PGPASSWORD"):
        Ledger(url)  # no password anywhere: refused by the server
    wrong = url.replace(f"{role}@", f"{role}:Wr0ng-Secret@")
    with pytest.raises(LedgerError) as refused:
        Ledger(wrong)
    assert "Wr0ng-Secret" not in str(refused.value) and "password authentication failed" in str(refused.value)
    monkeypatch.setenv("PGPASSWORD", password)
    Ledger(url).add_intent(endpoint="e", workspace_id="ws", idempotency_key="k1", technique_id="t")
    monkeypatch.delenv("PGPASSWORD")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:{role}:{password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    assert [r.idempotency_key for r in Ledger(url).rows("e")] == ["k1"]

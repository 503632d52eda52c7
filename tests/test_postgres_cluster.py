"""The suite's throwaway PostgreSQL (issue 22, item 7): `make test` starts a real cluster for the tests
(scripts/with-postgres), and each test that needs it gets an empty schema of its own. In CI these tests
fail rather than skip when the cluster is missing (tests/conftest.py, ``postgres_schema``)."""

from __future__ import annotations

import os
import stat
from urllib.parse import parse_qs, urlsplit


def test_each_test_gets_an_empty_schema_of_a_real_server(postgres_schema):
    import psycopg

    with psycopg.connect(postgres_schema, autocommit=True) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        assert schema.startswith("t_")
        tables = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,))
        assert tables.fetchone()[0] == 0
        conn.execute("CREATE TABLE probe (n integer PRIMARY KEY)")
        conn.execute("INSERT INTO probe VALUES (1), (2)")
        assert conn.execute("SELECT sum(n) FROM probe").fetchone()[0] == 3
        assert int(conn.info.server_version) >= 130000


def test_the_cluster_listens_on_a_private_socket_only(postgres_schema):
    import psycopg

    host = parse_qs(urlsplit(os.environ["FLORA_NB_TEST_POSTGRES"]).query)["host"][0]
    assert host.startswith("/tmp/flora-pg.") and stat.S_ISSOCK(os.stat(f"{host}/.s.PGSQL.5432").st_mode)
    with psycopg.connect(postgres_schema, autocommit=True) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == ""  # no TCP port at all

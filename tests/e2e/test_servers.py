"""The test servers of tests/servers.py: loopback addresses read right, PostgreSQL on loopback
only. `mlflow server` over it and the two-node Ray cluster are exercised, loopback-only checks
included, by tests/e2e/test_scaleout.py (restarts, every point kept, tasks on both nodes)."""

from __future__ import annotations

import uuid

import pytest

from tests.servers import assert_loopback_only, is_loopback, listeners


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1:5432", True), ("127.0.0.53%lo:53", True), ("[::1]:5000", True),
    ("[::ffff:127.0.0.1]:6379", True), ("0.0.0.0:5000", False), ("[::]:5000", False),
    ("*:22", False), ("192.0.2.2:80", False), ("[::ffff:10.0.0.1]:80", False),
])
def test_is_loopback_reads_ss_addresses(address, loopback):
    assert is_loopback(address) is loopback


def test_postgres_listens_on_loopback_and_accepts_connections(postgres):
    import psycopg

    url = postgres.create_database(f"t_{uuid.uuid4().hex[:8]}")
    database = url.rsplit("/", 1)[1]
    with psycopg.connect(host="127.0.0.1", port=postgres.port, user="postgres",
                         dbname=database, connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    ours = [addr for addr, pids in listeners() if pids & postgres.pids()]
    assert ours == [f"127.0.0.1:{postgres.port}"]
    assert_loopback_only(postgres.pids())

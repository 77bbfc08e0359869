"""`make server`'s refusals, in one line each and before anything starts (the servers
themselves: tests/e2e/test_server.py)."""

import socket
import time

import pytest

from annlab.databases import redact
from pipelines.server import main
from tests.servers import free_port


def refusal(capsys, *argv: str) -> str:
    """Run `make server` with ``argv``; it must fail with exactly one line on stderr."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_hosts_beyond_loopback_need_auth(capsys, tmp_path):
    err = refusal(capsys, "--host", "0.0.0.0", "--state-dir", str(tmp_path))
    assert err.startswith("error: HOST='0.0.0.0'") and "127.0.0.1 | localhost | ::1" in err
    assert "AUTH=1" in err


def test_a_port_in_use_is_refused(capsys, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = refusal(capsys, "--port", str(port), "--state-dir", str(tmp_path))
    assert f"PORT={port}" in err and "not available" in err


def test_an_unreachable_database_is_reported_within_seconds(capsys, tmp_path):
    db = f"postgresql+psycopg://postgres:hunter2@127.0.0.1:{free_port()}/annlab"
    started = time.monotonic()
    err = refusal(capsys, "--db", db, "--port", str(free_port()), "--state-dir", str(tmp_path),
                  "--artifacts", str(tmp_path / "artifacts"))
    assert time.monotonic() - started < 10
    assert "cannot use the backend store" in err and "Connection refused" in err
    assert "hunter2" not in err and redact(db) in err


def test_auth_without_a_password_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    err = refusal(capsys, "--auth", "--port", str(free_port()), "--state-dir", str(tmp_path),
                  "--artifacts", str(tmp_path / "artifacts"))
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in err and "no default" in err

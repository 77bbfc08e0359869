"""`make server`'s refusals, in one line each and before anything starts (the servers
themselves: tests/e2e/test_server.py)."""

import socket
import time

import pytest

from annlab.databases import redact
from pipelines.server import main
from tests.servers import free_port


def refusal(capsys, *argv: str, command=main) -> str:
    """Run `make server` (or ``command``) with ``argv``; it must fail with exactly one line on
    stderr."""
    with pytest.raises(SystemExit) as info:
        command(list(argv))
    assert info.value.code == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_hosts_beyond_loopback_need_auth(capsys, tmp_path):
    err = refusal(capsys, "--host", "0.0.0.0", "--state-dir", str(tmp_path))
    assert err.startswith("error: HOST='0.0.0.0'") and "127.0.0.1 | localhost | ::1" in err
    assert "AUTH=1" in err


@pytest.mark.parametrize("command, variable", [("server", "PORT"), ("ui", "UI_PORT")])
@pytest.mark.parametrize("port", ["busy", "99999", "0", "-1"])
def test_a_port_in_use_or_out_of_range_is_refused(capsys, tmp_path, command, variable, port):
    import pipelines.ui

    entry = {"server": main, "ui": pipelines.ui.main}[command]
    extra = ["--state-dir", str(tmp_path)] if command == "server" else []
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        if port == "busy":
            port = str(busy.getsockname()[1])
        err = refusal(capsys, "--port", port, *extra, command=entry)
    if int(port) in range(1, 65536):
        assert err == (f"error: {variable}={port} on 127.0.0.1 is not available (Address "
                       f"already in use); choose another, e.g. {variable}={int(port) + 1}")
    else:
        assert err == f"error: {variable}={port} is not a port number; allowed: 1-65535"


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

"""`make server` (pipelines/server.py): refusals in one line, and a basic-auth server over
PostgreSQL that stops with its whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.servers import assert_loopback_only, descendants, free_port, kill_pids

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "test-admin-" + uuid.uuid4().hex[:12]


def get(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        import base64

        token = base64.b64encode(":".join(auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_auth_server_over_postgres_serves_logins_only_and_stops_cleanly(postgres, tmp_path):
    port = free_port()
    db = postgres.create_database(f"t_{uuid.uuid4().hex[:8]}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.server", "--db", db, "--port", str(port), "--auth",
         "--state-dir", str(tmp_path / "state"), "--artifacts", str(tmp_path / "artifacts")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD}, start_new_session=True)
    server: set[int] = set()
    try:
        ready = proc.stdout.readline()
        assert f"MLFLOW_TRACKING_URI=http://127.0.0.1:{port}" in ready, proc.stderr.read()
        url = f"http://127.0.0.1:{port}"
        api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert get(f"{url}/health") == 200
        assert get(api) == 401
        assert get(api, ("admin", PASSWORD)) == 200
        server = descendants([proc.pid]) - {proc.pid}  # mlflow server, in its own group
        assert server
        assert_loopback_only(descendants([proc.pid]))

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and out == "" and err == ""
        assert not descendants(server)
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"{url}/health", timeout=5)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        kill_pids(descendants(server), signal.SIGKILL)
    written = [p for p in (tmp_path / "state").iterdir()]
    assert {p.name for p in written} >= {"basic_auth.ini", "basic_auth.db"}
    assert not any(PASSWORD.encode() in p.read_bytes() for p in written), "password leaked"


def test_a_database_that_does_not_exist_yet_is_created(postgres, tmp_path):
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.server", "--db", postgres.url(name), "--port",
         str(port), "--state-dir", str(tmp_path / "state"), "--artifacts",
         str(tmp_path / "artifacts")], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        created, ready = proc.stdout.readline(), proc.stdout.readline()
        assert created.startswith(f"created the database '{name}'"), proc.stderr.read()
        assert f"MLFLOW_TRACKING_URI=http://127.0.0.1:{port}" in ready
        assert get(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?"
                   "max_results=1") == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0

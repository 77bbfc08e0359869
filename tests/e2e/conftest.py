"""End-to-end fixtures: the throwaway servers of tests/servers.py (PostgreSQL, `mlflow
server`, a two-node Ray cluster, all on loopback) and a way to stop a command midway."""

from __future__ import annotations

import pytest

from tests.servers import loopback_netns, postgres, ray_cluster, start_mlflow_server  # noqa: F401


@pytest.fixture(scope="session")
def sigterm_when():
    """sigterm_when(proc, ready, timeout, pause=0) -> (stdout, stderr): once ``ready()``
    holds (or ``timeout`` s pass), wait ``pause`` s, send SIGTERM and wait for the process;
    killed if it lingers."""
    import signal
    import time

    def _stop(proc, ready, timeout, pause=0.0):
        try:
            deadline = time.monotonic() + timeout
            while not ready() and time.monotonic() < deadline:
                time.sleep(0.3)
            time.sleep(pause)
            proc.send_signal(signal.SIGTERM)
            return proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    return _stop

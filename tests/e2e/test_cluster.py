"""`make cluster`'s recipe run as a user runs it, inside a loopback-only network namespace: a
head with token authentication on, usage stats off, on its fixed ports and loopback only, that
a driver with the token uses and one without cannot, and that Ctrl-C stops whole."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from annlab.cluster import RAY_HEAD_PORTS, RAY_PORTS
from tests.servers import assert_loopback_only, descendants, listeners, short_tempdir

REPO = Path(__file__).resolve().parents[2]
DRIVER = ("import ray; ray.init(address='127.0.0.1:6379', logging_level='ERROR', "
          "log_to_driver=False); print(ray.get(ray.remote(lambda: 6 * 7).remote()))")


def test_the_cluster_recipe_starts_a_safe_head_and_stops_it(loopback_netns):
    base = short_tempdir("annlab-cluster-")
    home = base / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    proc = subprocess.Popen(loopback_netns.cmd(
        [sys.executable, "-m", "pipelines.cluster", "head", "--node-ip", "127.0.0.1",
         "--temp-dir", str(base / "ray")]), cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen: list[str] = []
    threading.Thread(target=lambda: seen.extend(proc.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 180
        while not seen and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        assert seen[0].startswith("Ray head node on 127.0.0.1 (token authentication on")
        token = (home / ".ray" / "auth_token")
        assert token.exists() and oct(token.stat().st_mode & 0o777) == "0o600"

        def driver(**extra):
            return subprocess.run(loopback_netns.cmd([sys.executable, "-c", DRIVER]),
                                  env={**env, "RAY_AUTH_MODE": "token", **extra},
                                  capture_output=True, text=True, timeout=120)

        assert driver().stdout.strip() == "42"  # the token in ~/.ray/auth_token
        refused = driver(RAY_AUTH_TOKEN="x" * 32)
        assert refused.returncode != 0 and "42" not in refused.stdout
        ports = {int(address.rsplit(":", 1)[1]) for address, _ in listeners(loopback_netns)}
        assert {*RAY_HEAD_PORTS.values(), RAY_PORTS["--node-manager-port"],
                RAY_PORTS["--object-manager-port"]} <= ports
        assert_loopback_only(descendants([proc.pid]), loopback_netns)
        log = (REPO / "outputs" / "ray-head.log").read_text()
        assert "Usage stats collection is disabled" in log
    finally:
        group = descendants([proc.pid])
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert not descendants(group), "Ray processes outlived `make cluster`"

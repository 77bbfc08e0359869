"""Ray, for `make sweep LAUNCHER=ray` and `make cluster`: a cluster checked before any job starts
(:func:`check_cluster`), and a node started safe by default (:func:`ray_node`).

A sweep on a cluster with nodes on other machines and a store only the launching machine sees (a
sqlite file, a server on loopback) is refused before connecting, as is an address where nothing
answers. `make cluster` runs `ray start` with token authentication on, usage stats off, no
dashboard and fixed ports, in the foreground until a signal stops it and all it started.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from annlab import tracking
from annlab.errors import AnnlabError
from annlab.services import (
    OUTPUTS,
    READY_TIMEOUT,
    ServerError,
    foreground,
    is_loopback,
    log_tail,
    shown_path,
)


def local_addresses() -> set[str]:
    """This machine's addresses (loopback included), as other nodes would name it."""
    hosts = {socket.gethostname(), "localhost"}
    found = {"127.0.0.1", "::1"}
    for host in hosts:
        with contextlib.suppress(OSError):
            found |= {info[4][0] for info in socket.getaddrinfo(host, None)}
    return found


class UnreachableStore(AnnlabError):
    """A cluster whose nodes cannot reach the tracking store."""


class NoCluster(AnnlabError):
    """A Ray cluster address where nothing answers."""


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return host.strip("[]") or address, int(port) if port.isdigit() else 6379


def _resolved(host: str) -> set[str]:
    """The host's addresses; none if its name does not resolve."""
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return set()


def _answers(host: str, port: int) -> str | None:
    """None if something accepts connections at host:port within seconds, else why not."""
    try:
        with socket.create_connection((host, port), timeout=5):
            return None
    except socket.gaierror:
        return "its name does not resolve"
    except OSError as err:
        return err.strerror or type(err).__name__


def _running_cluster() -> str | None:
    """The address of a cluster `ray start` left running on this machine, if it answers: what
    ``ray.init()`` without an address finds (Ray's record of it in its temp dir) and joins."""
    try:
        address = (Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster").read_text()
    except OSError:
        return None
    address = address.strip()
    return address if address and _answers(*_host_port(address)) is None else None


def check_cluster(config: DictConfig, uri: str) -> None:
    """Before any job starts and before connecting to it, refuse a Ray cluster that cannot
    work: one on another machine (its address says so) when the store is one only this machine
    can reach (a sqlite file, a server on loopback); an address where nothing answers. A
    cluster on this machine with such a store is asked for its nodes: one of them elsewhere is
    refused too."""
    init = OmegaConf.select(config, "hydra.launcher.ray.init")
    if init is None:
        return  # not Ray
    if not init.get("address"):  # a local instance: its jobs see what this machine sees
        if (running := _running_cluster()) is not None:
            raise NoCluster(f"a Ray cluster started with `ray start` runs on this machine "
                            f"({running}), and Ray would join it with the settings of a new "
                            f"local instance; set RAY_ADDRESS={running} to run on it, or stop "
                            "it (`ray stop`)")
        return
    address = str(init.address)
    local_store = not tracking.is_server(uri) or is_loopback(urlparse(uri).hostname)
    advice = ("start `make server` (on a PostgreSQL DB) and set MLFLOW_TRACKING_URI=http://"
              "<this machine>:<port> before the sweep")
    if address not in ("auto", "local"):  # "auto": a cluster started on this machine
        host, port = _host_port(address)
        here = _resolved(host) & local_addresses() or is_loopback(host)
        if local_store and not here:
            raise UnreachableStore(f"the Ray cluster at {address} is on another machine and "
                                   f"cannot reach the store {uri}, which only this machine "
                                   f"sees; {advice}")
        if (why := _answers(host, port)) is not None:
            raise NoCluster(f"no Ray cluster answers at RAY_ADDRESS={address} ({why}); start "
                            "it, or unset RAY_ADDRESS for a local Ray instance")
    if not local_store:
        return  # a server the nodes can reach
    import ray

    ray.init(**OmegaConf.to_container(init, resolve=True))  # the launcher reuses it
    here = local_addresses()
    remote = sorted({n["NodeManagerAddress"] for n in ray.nodes()
                     if n["Alive"] and n["NodeManagerAddress"] not in here})
    if remote:
        raise UnreachableStore(
            f"the Ray cluster at {address} has nodes on other machines "
            f"({', '.join(remote)}) that cannot reach the store {uri}, which only this "
            f"machine sees; {advice}")


# `make cluster`: every port a node listens on for other nodes is fixed, so that a firewall can
# open exactly these (the worker ports: a range) and nothing else.
RAY_PORTS = {"--node-manager-port": 6380, "--object-manager-port": 6381,
             "--runtime-env-agent-port": 6382, "--dashboard-agent-grpc-port": 6383,
             "--dashboard-agent-listen-port": 6384, "--metrics-export-port": 6385,
             "--min-worker-port": 10002, "--max-worker-port": 10031}
RAY_HEAD_PORTS = {"--port": 6379, "--ray-client-server-port": 10001}
RAY_TOKEN = Path.home() / ".ray" / "auth_token"  # where Ray keeps its token by default


def ray_command(role: str, node_ip: str, address: str | None = None,
                temp_dir: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """`ray start` for a head or a worker node, safe by default: Ray's token authentication
    on (every node and driver needs the head's token), usage stats off, no dashboard, fixed
    ports, in the foreground (``--block``). A head on a loopback address is kept on it (Ray
    would otherwise listen on the machine's network address); it is then a one-machine
    cluster."""
    ray = str(Path(sys.executable).with_name("ray"))
    argv = [ray, "start", f"--node-ip-address={node_ip}", "--include-dashboard=false",
            "--disable-usage-stats", "--block",
            *(f"{flag}={port}" for flag, port in RAY_PORTS.items())]
    env = {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    if role == "head":
        argv[2:2] = ["--head", *(f"{flag}={port}" for flag, port in RAY_HEAD_PORTS.items())]
        if is_loopback(node_ip):
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    else:
        argv[2:2] = [f"--address={address}"]
    if temp_dir is not None:
        argv.append(f"--temp-dir={temp_dir}")
    return argv, env


def ray_node(role: str, node_ip: str, address: str | None = None,
             temp_dir: Path | None = None) -> None:
    """A Ray node of `make cluster` in the foreground, until a signal stops it and every
    process it started; prints how to join it and how to run a sweep on it."""
    argv, extra = ray_command(role, node_ip, address, temp_dir)
    env = {**os.environ, **extra}
    if role == "worker" and not address:
        raise ServerError("a worker node needs RAY_ADDRESS=<head>:6379")
    if not env.get("RAY_AUTH_TOKEN") and not RAY_TOKEN.exists():
        if role == "worker":
            raise ServerError(f"a worker node needs the head's token: copy the head's "
                              f"{RAY_TOKEN} here, or export RAY_AUTH_TOKEN")
        subprocess.run([argv[0], "get-auth-token", "--generate"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        RAY_TOKEN.chmod(0o600)
    log = OUTPUTS / f"ray-{role}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    head = address or f"{node_ip}:{RAY_HEAD_PORTS['--port']}"
    foreground("ray start", argv, log, env,
                lambda proc: _wait_for_line(proc, log, "Ray runtime started", READY_TIMEOUT),
                lambda: f"Ray {role} node on {node_ip} (token authentication on; its log is "
                        f"{shown_path(log)}; Ctrl-C stops it)\n"
                        f"  sweeps: RAY_ADDRESS={head} make sweep LAUNCHER=ray, with the token "
                        f"in {RAY_TOKEN} or RAY_AUTH_TOKEN"
                        + ("" if is_loopback(node_ip) or role == "worker" else
                           f"\n  another machine joins with: RAY_ADDRESS={head} make "
                           "cluster-worker NODE_IP=<its address>, its token copied from this "
                           "one"))


def _wait_for_line(proc: subprocess.Popen, log: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if proc.poll() is not None:
            raise ServerError(f"ray start exited with code {proc.returncode}: "
                              f"{log_tail(log)} (log: {log})")
        if time.monotonic() > deadline:
            raise ServerError(f"ray start did not report its node started within "
                              f"{timeout:.0f} s (log: {log})")
        time.sleep(0.2)

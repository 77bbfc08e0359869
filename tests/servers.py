"""Throwaway servers for tests: PostgreSQL, `mlflow server`, a two-node Ray cluster.

Everything listens on loopback only and is stopped by the PIDs started here, never by name.
Ray rewrites 127.0.0.1 to the machine's address and then listens on every interface, so the
Ray cluster runs inside a private network namespace whose only interface is `lo`
(`LoopbackNetns`, made with `unshare --net`, which needs root). Nothing in it can listen beyond
loopback, and its ports never clash with anything else on the machine. Whatever must reach the
cluster runs in the same namespace: PostgreSQL and `mlflow server` take `netns=`, processes
start through `netns.cmd(argv)`, and `netns.call(fn)` runs a function of the test process in a
thread that joined the namespace (the PostgreSQL helpers use its Unix socket, which is not
namespaced).

Fixtures (registered by `tests/e2e/conftest.py`): `postgres`, `loopback_netns`,
`start_mlflow_server` and `ray_cluster`. A missing PostgreSQL or `unshare` fails the test when
$CI is set, else skips it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from annlab.services import stop_group, wait_healthy

BIN = Path(sys.executable).parent
CLONE_NEWNET = 0x40000000
PG_PACKAGE = "postgresql"  # the Debian package with initdb, pg_ctl, postgres


def unavailable(reason: str) -> None:
    """CI must run every test: a missing tool fails there and skips elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def short_tempdir(prefix: str) -> Path:
    """Under /tmp: Unix socket paths (PostgreSQL's, Ray's) must stay under ~107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


# --- processes and listening sockets -------------------------------------------------------

def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, process group) of a live process; None for a zombie or a gone one."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return None if fields[0] in "ZX" else (int(fields[1]), int(fields[2]))


def descendants(roots: Iterable[int], groups: Iterable[int] = ()) -> set[int]:
    """Live processes among ``roots``, the members of process groups ``groups``, and all their
    descendants."""
    stats = {int(p.name): s for p in Path("/proc").iterdir()
             if p.name.isdigit() and (s := _proc_stat(int(p.name)))}
    groups = set(groups)
    found = {pid for pid in roots if pid in stats}
    found |= {pid for pid, (_, pgid) in stats.items() if pgid in groups}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in stats.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return found


def kill_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def is_loopback(address: str) -> bool:
    """Whether an `ss` local address (``127.0.0.1:5432``, ``[::1]:80``, ``*:22``, ...) is
    loopback; IPv4-mapped IPv6 (``[::ffff:127.0.0.1]``) counts as IPv4."""
    host = address.rsplit(":", 1)[0].strip("[]").split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # "*" and the like: every interface
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def listeners(netns: LoopbackNetns | None = None) -> list[tuple[str, set[int]]]:
    """Listening TCP sockets as (local address, owning pids), from `ss -ltnpH`."""
    argv = ["ss", "-ltnpH"]
    out = subprocess.run(netns.cmd(argv) if netns else argv, capture_output=True, text=True,
                         check=True, timeout=30).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        found.append((fields[3], {int(pid) for pid in re.findall(r"pid=(\d+)", line)}))
    return found


def assert_loopback_only(pids: Iterable[int] = (), netns: LoopbackNetns | None = None) -> None:
    """Nothing the test started listens beyond 127.0.0.0/8 and ::1: no socket of ``pids`` (and
    their descendants) in this namespace, and no socket at all in ``netns``, whose only
    interface must be `lo`."""
    ours = descendants(pids)
    wide = [(addr, owners) for addr, owners in listeners()
            if owners & ours and not is_loopback(addr)]
    if netns is not None:
        wide += [(addr, owners) for addr, owners in listeners(netns) if not is_loopback(addr)]
        links = subprocess.run(netns.cmd(["ip", "-o", "link", "show"]), capture_output=True,
                               text=True, check=True, timeout=30).stdout
        names = [line.split(":")[1].strip() for line in links.splitlines()]
        assert names == ["lo"], f"the test namespace has interfaces besides lo: {names}"
    assert not wide, f"listening beyond loopback: {wide}"


# --- a network namespace with only `lo` ----------------------------------------------------

class LoopbackNetns:
    """A private network namespace with only `lo` up, held open by one `sleep` process."""

    def __init__(self) -> None:
        if not (shutil.which("unshare") and shutil.which("nsenter") and shutil.which("ip")):
            unavailable("a loopback-only network namespace needs unshare, nsenter (util-linux) "
                        "and ip (iproute2)")
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c",
             "ip link set lo up && echo up && exec sleep infinity"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        if self.holder.stdout.readline().strip() != "up":
            err = self.holder.stderr.read().strip()
            self.holder.wait(timeout=10)
            unavailable(f"cannot create a network namespace (unshare --net, needs root): {err}")
        self.path = f"/proc/{self.holder.pid}/ns/net"
        self.inode = os.stat(self.path).st_ino

    def cmd(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace (nsenter execs it: the PID stays the program's)."""
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def call(self, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` in a new thread that joined the namespace (only that thread
        does; sockets it opens stay in the namespace)."""
        outcome: dict = {}

        def run() -> None:
            try:
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                finally:
                    os.close(fd)
                outcome["value"] = fn(*args, **kwargs)
            except BaseException as err:  # re-raised in the caller's thread
                outcome["error"] = err

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def members(self) -> set[int]:
        """Every process in the namespace except its holder: all started by this test."""
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != self.holder.pid:
                try:
                    if (entry / "ns" / "net").stat().st_ino == self.inode:
                        found.add(int(entry.name))
                except (FileNotFoundError, PermissionError, ProcessLookupError):
                    pass
        return found

    def close(self) -> set[int]:
        """Kill what is left in the namespace (returned: a helper leaked it), then the holder."""
        left = self.members()
        kill_pids(left, signal.SIGKILL)
        self.holder.kill()
        self.holder.wait(timeout=10)
        return left


# --- PostgreSQL ------------------------------------------------------------------------------

def postgres_bindir() -> Path | None:
    """$ANNLAB_PG_BINDIR, else the newest /usr/lib/postgresql/<version>/bin, else the PATH."""
    candidates = [os.environ.get("ANNLAB_PG_BINDIR", "")]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                         key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                         reverse=True)
    candidates += [str(Path(found).parent) if (found := shutil.which("pg_ctl")) else ""]
    for candidate in candidates:
        if candidate and all((Path(candidate) / tool).exists()
                             for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(candidate)
    return None


class Postgres:
    """A PostgreSQL cluster in a temporary directory, on 127.0.0.1 only, user ``postgres``
    trusted without a password; run as the ``postgres`` system user when we are root."""

    def __init__(self, netns: LoopbackNetns | None = None) -> None:
        self.bindir = postgres_bindir()
        if self.bindir is None:
            unavailable(f"PostgreSQL server binaries (initdb, pg_ctl) not found: install the "
                        f"Debian package {PG_PACKAGE} (or set ANNLAB_PG_BINDIR)")
        self.netns = netns
        self.base = short_tempdir("annlab-pg-")
        self.data, self.sockdir, self.log = (self.base / "data", self.base / "sock",
                                             self.base / "postgres.log")
        self.sockdir.mkdir()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for path in (self.base, self.sockdir):
                os.chown(path, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = 0
        self.started_in = 0.0

    def _run(self, *argv: str, timeout: float = 60) -> None:
        argv = [*self.as_user, *argv]
        done = subprocess.run(self.netns.cmd(argv) if self.netns else argv, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}{log}")

    def start(self) -> Postgres:
        started = time.monotonic()
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust",
                  "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync")
        # Throwaway: no fsync. -k: the socket lives in our directory, not /var/run/postgresql.
        for attempt in range(3):
            self.port = free_port()
            options = (f"-p {self.port} -h 127.0.0.1 -k {self.sockdir} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off")
            try:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                          "-w", "-t", "60", "-o", options, "start")
                break
            except RuntimeError:
                if attempt == 2:  # the port was taken between free_port() and the bind
                    raise
        self.started_in = time.monotonic() - started
        return self

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):
        """A psycopg connection over the Unix socket (reachable from any network namespace)."""
        import psycopg

        return psycopg.connect(host=str(self.sockdir), port=self.port, user="postgres",
                               dbname=database, autocommit=True, connect_timeout=10)

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        from psycopg import sql

        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def pids(self) -> set[int]:
        pidfile = self.data / "postmaster.pid"
        if not pidfile.exists():
            return set()
        return descendants([int(pidfile.read_text().split()[0])])

    def stop(self) -> None:
        """Stop by the postmaster's PID (pg_ctl reads it from the data directory), then remove
        the directory."""
        try:
            if (self.data / "postmaster.pid").exists():
                leftover = self.pids()
                try:
                    self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                              "-w", "-t", "30", "stop")
                except (RuntimeError, subprocess.TimeoutExpired):
                    kill_pids(leftover, signal.SIGKILL)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


# --- mlflow server ---------------------------------------------------------------------------

class MlflowServer:
    """`mlflow server` over ``backend_uri`` with proxied artifacts on a free loopback port, in its
    own process group; `stop()` and `start()` again keep the port (a server that dies and comes
    back mid-sweep)."""

    def __init__(self, backend_uri: str, workdir: Path, netns: LoopbackNetns | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.backend_uri, self.netns = backend_uri, netns
        self.artifacts, self.log = workdir / "artifacts", workdir / "mlflow-server.log"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> float:
        """Start and wait for /health; returns the seconds it took."""
        argv = [str(BIN / "mlflow"), "server", "--backend-store-uri", self.backend_uri,
                "--serve-artifacts", "--artifacts-destination", str(self.artifacts),
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        started = time.monotonic()
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(self.netns.cmd(argv) if self.netns else argv,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env,
                                         start_new_session=True)
        try:
            if self.netns:
                self.netns.call(wait_healthy, self.proc, self.url, self.log, timeout)
            else:
                wait_healthy(self.proc, self.url, self.log, timeout)
        except Exception:
            self.stop()
            raise
        return time.monotonic() - started

    def pids(self) -> set[int]:
        return descendants([self.proc.pid], [self.proc.pid]) if self.proc else set()

    def stop(self) -> float:
        """SIGTERM to the server's process group by its leader's PID (SIGKILL if it lingers);
        returns the seconds it took."""
        started = time.monotonic()
        if self.proc is not None:
            stop_group(self.proc, timeout=10)
            self.proc = None
        return time.monotonic() - started

    def restart(self) -> float:
        self.stop()
        return self.start()


# --- a two-node Ray cluster ------------------------------------------------------------------

class RayCluster:
    """A head and ``nodes - 1`` worker nodes started with `ray start` inside ``netns``, each with
    its own temp dir, one CPU and a small object store; HOME is private, so no token or state in
    ~/.ray is read or left. Drivers use `driver_env()` (RAY_ADDRESS) inside the namespace."""

    def __init__(self, netns: LoopbackNetns, nodes: int = 2, cpus_per_node: int = 1,
                 object_store_mb: int = 100) -> None:
        self.netns, self.nodes, self.cpus = netns, nodes, cpus_per_node
        self.object_store = object_store_mb * 1024 * 1024
        self.base = short_tempdir("annlab-ray-")
        (self.base / "home").mkdir()
        self.address = f"127.0.0.1:{free_port()}"
        self.groups: list[int] = []  # one process group per node, led by its `ray start`
        self.timings: dict[str, float] = {}

    def env(self) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.base / "home"), "RAY_USAGE_STATS_ENABLED": "0"}

    def driver_env(self, **extra: str) -> dict[str, str]:
        return {**self.env(), "RAY_ADDRESS": self.address, **extra}

    def _launch_node(self, name: str, *args: str) -> subprocess.Popen:
        argv = [str(BIN / "ray"), "start", *args, "--node-ip-address=127.0.0.1",
                f"--temp-dir={self.base / name}", "--disable-usage-stats",
                f"--num-cpus={self.cpus}", f"--object-store-memory={self.object_store}"]
        with (self.base / f"{name}.log").open("w") as out:
            # cwd: jobs inherit the node's working directory, and Hydra resolves a relative
            # sweep dir against it; keep what they write out of the checkout.
            proc = subprocess.Popen(self.netns.cmd(argv), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self.env(), cwd=self.base,
                                    start_new_session=True)
        self.groups.append(proc.pid)  # the node's daemons stay in this group after it exits
        return proc

    def _await_node(self, name: str, proc: subprocess.Popen, deadline: float) -> None:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"ray start ({name}) did not finish in time; see "
                               f"{self.base / name}.log") from None
        if proc.returncode != 0:
            raise RuntimeError(f"ray start ({name}) failed:\n"
                               f"{(self.base / f'{name}.log').read_text()[-3000:]}")

    def python(self, code: str, timeout: float = 120, **env: str) -> str:
        """Run ``code`` as a driver inside the namespace; returns its stdout."""
        done = subprocess.run(self.netns.cmd([sys.executable, "-c", code]), capture_output=True,
                              text=True, env=self.driver_env(**env), timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"driver failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done.stdout

    def start(self, timeout: float = 120) -> RayCluster:
        started = time.monotonic()
        deadline = started + timeout
        try:
            # One after the other: started together they only compete for the CPUs.
            head = self._launch_node("head", "--head", "--include-dashboard=false",
                                     f"--port={self.address.rsplit(':', 1)[1]}")
            self._await_node("head", head, deadline)
            self.timings["head"] = time.monotonic() - started
            for i in range(1, self.nodes):
                node = self._launch_node(f"node{i}", f"--address={self.address}")
                self._await_node(f"node{i}", node, deadline)
                self.timings[f"node{i}"] = time.monotonic() - started
            self.python(WAIT_FOR_NODES.format(n=self.nodes), timeout=deadline - time.monotonic())
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - started
        return self

    def pids(self) -> set[int]:
        return descendants(self.groups, self.groups)

    def stop(self, grace: float = 1.0) -> None:
        """SIGTERM every process of the nodes' groups and their descendants, by PID; SIGKILL
        what is left after ``grace`` s (gcs_server and raylet linger for seconds; nothing here
        needs a graceful stop). Then remove the temp dir."""
        started = time.monotonic()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            kill_pids(self.pids(), sig)
            deadline = time.monotonic() + grace
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.05)
        self.timings["stop"] = time.monotonic() - started
        shutil.rmtree(self.base, ignore_errors=True)


WAIT_FOR_NODES = """
import time, ray
ray.init(logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + 60
while sum(n["Alive"] for n in ray.nodes()) < {n}:
    if time.monotonic() > deadline:
        raise SystemExit("only %d of {n} nodes alive" % sum(n["Alive"] for n in ray.nodes()))
    time.sleep(0.2)
"""


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster for this test process; `postgres.create_database(name)`."""
    server = Postgres()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def loopback_netns():
    netns = LoopbackNetns()
    try:
        yield netns
    finally:
        leaked = netns.close()
        assert not leaked, f"processes left in the test namespace: {sorted(leaked)}"


@pytest.fixture
def start_mlflow_server(tmp_path):
    """start_mlflow_server(backend_uri, netns=None) -> a started MlflowServer, stopped after
    the test."""
    servers: list[MlflowServer] = []

    def _start(backend_uri: str, netns: LoopbackNetns | None = None) -> MlflowServer:
        server = MlflowServer(backend_uri, tmp_path / f"mlflow-server-{len(servers)}", netns)
        servers.append(server)
        server.start()
        return server

    yield _start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def ray_cluster(loopback_netns):
    """A two-node Ray cluster inside the loopback-only namespace."""
    cluster = RayCluster(loopback_netns)
    try:
        yield cluster.start()
    finally:
        cluster.stop()

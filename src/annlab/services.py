"""MLflow's own processes for `make server` and `make ui`: started, waited for, stopped.

`make server` runs `mlflow server` over a backend store (any SQLAlchemy URL; PostgreSQL as
`postgresql+psycopg://user@host:port/db`), artifacts proxied by the server (`--serve-
artifacts`), so clients need no shared filesystem; its schema is brought up to date (`mlflow db
upgrade`) first. Only loopback hosts are allowed unless `auth` turns on MLflow's basic-auth
app, whose admin user (`admin`) is created on first start with the password in
MLFLOW_AUTH_ADMIN_PASSWORD (MLflow's own variable, at least 12 characters; read only while the
auth store has no admin). `make ui` runs `mlflow ui` on 127.0.0.1 over annlab's store. Each
runs in a process group of its own, its output in a log under outputs/, and stops with that
whole group on a signal.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from annlab import databases, interrupts, tracking
from annlab.databases import redact
from annlab.errors import AnnlabError
from annlab.paths import REPO_ROOT as REPO
from annlab.paths import default_paths

OUTPUTS = Path(default_paths().outputs)
ADMIN_USER = "admin"
PASSWORD_VAR = "MLFLOW_AUTH_ADMIN_PASSWORD"
SECRET_VAR = "MLFLOW_FLASK_SERVER_SECRET_KEY"
READY_TIMEOUT = 120.0
BACKEND = "the backend store DB"
AUTH_CACHE_SECONDS = 60
STOP_TIMEOUT = 15.0


class ServerError(AnnlabError):
    """A tracking server or UI that cannot start or has stopped; the message says why."""


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name or an address; None: none given) stays on this machine."""
    if host in (None, "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, auth: bool) -> None:
    if not is_loopback(host) and not auth:
        raise ServerError(f"HOST={host!r} would serve beyond this machine without a login; "
                          "allowed: a loopback host (127.0.0.1 | localhost | ::1), or any host "
                          "with AUTH=1")


def check_port_free(host: str, port: int, variable: str = "PORT") -> None:
    """A server can listen on ``port`` at ``host``; else one line naming ``variable`` (the make
    variable that sets the port) and what to pass instead."""
    if not 0 < port < 65536:
        raise ServerError(f"{variable}={port} is not a port number; allowed: 1-65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            other = port + 1 if port < 65535 else port - 1
            raise ServerError(f"{variable}={port} on {host} is not available ({err.strerror}); "
                              f"choose another, e.g. {variable}={other}") from None


def check_db(url: str) -> None:
    """The backend store answers (one short connection: MLflow itself retries for minutes); a
    PostgreSQL database that does not exist yet is created, when the user may."""
    parsed = databases.parse(url, BACKEND)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    if databases.create_if_missing(url, BACKEND):
        print(f"created the database {parsed.database!r} on {parsed.host}", flush=True)
    databases.check_mlflow_or_empty(url, BACKEND)


def log_tail(log: Path, lines: int = 1) -> str:
    text = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(text[-lines:]) if text else "(empty log)"


def upgrade_db(mlflow: Path, url: str, log: Path, env: dict[str, str]) -> None:
    with log.open("a") as out:
        out.write(f"--- mlflow db upgrade {redact(url)}\n")
        out.flush()
        done = subprocess.run([str(mlflow), "db", "upgrade", url], stdout=out,
                              stderr=subprocess.STDOUT, env=env, timeout=600)
    if done.returncode != 0:
        raise ServerError(f"mlflow db upgrade failed for DB={redact(url)}: {log_tail(log)} "
                          f"(log: {log})")


def write_auth_config(state: Path) -> Path:
    """An auth ini whose user store is an absolute path (the shipped one is relative). MLflow
    hashes the password again on every request unless its credential cache is on: on, for a
    minute (the server has one worker, so a changed password holds on no other worker)."""
    ini = state / "basic_auth.ini"
    ini.write_text("[mlflow]\n"
                   "default_permission = READ\n"
                   f"database_uri = sqlite:///{state / 'basic_auth.db'}\n"
                   f"admin_username = {ADMIN_USER}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                   f"auth_cache_ttl_seconds = {AUTH_CACHE_SECONDS}\n")
    return ini


def auth_env(state: Path, env: dict[str, str]) -> dict[str, str]:
    """Environment for the basic-auth app; the password is checked, never written anywhere."""
    first_start = not (state / "basic_auth.db").exists()
    password = env.get(PASSWORD_VAR, "")
    if first_start and not password:
        raise ServerError(f"AUTH=1 needs the admin password in ${PASSWORD_VAR} (at least 12 "
                          "characters; there is no default)")
    if first_start and len(password) < 12:
        raise ServerError(f"${PASSWORD_VAR} is shorter than the 12 characters MLflow requires")
    return {**env, "MLFLOW_AUTH_CONFIG_PATH": str(write_auth_config(state)),
            # One worker, so a key made per start is consistent; sessions end with the server.
            SECRET_VAR: env.get(SECRET_VAR) or secrets.token_urlsafe(32)}


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float,
                 what: str = "mlflow server") -> None:
    """Until ``url``/health answers; refused naming the log if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"{what} exited with code {proc.returncode} before "
                              f"answering: {log_tail(log)} (log: {log})")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise ServerError(f"{what} did not answer {url}/health within {timeout:.0f} s "
                      f"(log: {log})")


def stop_group(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the server's process group (its own, by the leader's PID); SIGKILL if it lingers.
    Then SIGKILL, by PID, whatever it started that left the group (a Ray node's workers)."""
    started = _descendants(proc.pid)
    _stop_group(proc, timeout)
    for pid in started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stop_group(proc: subprocess.Popen, timeout: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; wait for the rest of its group (uvicorn) too.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def _descendants(pid: int) -> set[int]:
    """The processes ``pid`` started, and theirs (from /proc), whatever their group."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            with contextlib.suppress(OSError):
                children = {int(c) for c in (task / "children").read_text().split()}
                todo += list(children - found)
                found |= children
    return found


def serve(db: str, host: str, port: int, artifacts: Path, auth: bool, state: Path) -> None:
    """`mlflow server` over ``db``, in the foreground until a signal; one line once ready."""
    started = time.monotonic()
    check_host(host, auth)
    check_port_free(host, port)
    state = state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    artifacts = artifacts.resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    log = state / f"mlflow-server-{port}.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if auth:
        state.chmod(0o700)  # the auth ini and the user store (password hashes) live here
        env = auth_env(state, env)
    check_db(db)
    mlflow = Path(sys.executable).with_name("mlflow")
    upgrade_db(mlflow, db, log, env)

    cmd = [str(mlflow), "server", "--backend-store-uri", db, "--serve-artifacts",
           "--artifacts-destination", str(artifacts), "--host", host,
           "--port", str(port), "--workers", "1"]
    if auth:
        cmd += ["--app-name", "basic-auth"]
    url = f"http://{url_host(probe_host(host))}:{port}"
    public = host if is_loopback(host) else socket.getfqdn()
    login = (f"; log in as MLFLOW_TRACKING_USERNAME={ADMIN_USER} with "
             f"MLFLOW_TRACKING_PASSWORD=<${PASSWORD_VAR}>") if auth else ""
    foreground("mlflow server", cmd, log, env,
                lambda proc: wait_healthy(proc, url, log, READY_TIMEOUT),
                lambda: f"MLflow server ready in {time.monotonic() - started:.1f} s: "
                        f"MLFLOW_TRACKING_URI=http://{url_host(public)}:{port}{login} "
                        f"(log: {shown_path(log)}; Ctrl-C stops it)",
                shown=lambda text: text.replace(db, redact(db)))


def ui(uri: str, experiment: str, port: int) -> None:
    """`mlflow ui` over the store at ``uri`` on 127.0.0.1, until a signal; prints the link that
    opens the experiment's runs. A tracking server has its own UI: its link only."""
    opened = tracking.open(uri, experiment)  # a new store is created whole, before the UI
    if tracking.is_server(uri):
        print(f"the store is a tracking server; open {runs_link(uri, opened.id)}")
        return
    base = f"http://127.0.0.1:{port}"
    log = OUTPUTS / f"mlflow-ui-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host",
           "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    def ready(proc: subprocess.Popen) -> None:
        try:
            wait_healthy(proc, base, log, READY_TIMEOUT, "mlflow ui")
        except ServerError as err:
            raise ServerError(f"{err}; port {port} in use? try `make ui UI_PORT={port + 1}`"
                              ) from err

    foreground("mlflow ui", cmd, log, env, ready,
                lambda: f"MLflow UI: {runs_link(base, opened.id)}\n"
                        f"  (experiment {experiment!r}; Ctrl-C stops it; its log is "
                        f"{shown_path(log)})\n  The UI keeps to its training views on every page "
                        "once switched: click 'GenAI' and then 'Model training' at the top left")


def serve_model(uri: str, name: str, run_id: str | None, port: int) -> None:
    """MLflow's own scoring server (`mlflow models serve`, in this environment) for the run's
    model or ``name``'s champion, on 127.0.0.1 until a signal; prints a `curl` line that works
    once it answers. The registry is the tracking store's (a server's own, for a server)."""
    store = tracking.connect(uri)
    model, source = tracking.model_uri(store, name, run_id)
    body = tracking.serving_example(store, source)
    base = f"http://127.0.0.1:{port}"
    log = OUTPUTS / f"mlflow-serve-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)  # its uvicorn, as the server looks it up
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri,
           "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    cmd = [str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", model, "--env-manager",
           "local", "--host", "127.0.0.1", "--port", str(port)]
    foreground("mlflow models serve", cmd, log, env,
                lambda proc: wait_healthy(proc, base, log, READY_TIMEOUT, "mlflow models serve"),
                lambda: f"serving {model} at {base} (Ctrl-C stops it; its log is "
                        f"{shown_path(log)}):\n  curl -s {base}/invocations -H 'Content-Type: "
                        f"application/json' -d '{body}'")


def runs_link(base: str, experiment_id: str, view: str = "annlab-runs") -> str:
    """The experiment's runs table in model-training mode (MLflow 3.17's UI honours the
    parameter for the page it opens), in annlab's saved ``view``: best first, the columns
    that matter."""
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?"
            f"workflowType=machine_learning&viewStateShareKey={view}")


def foreground(name: str, cmd: list[str], log: Path, env: dict[str, str],
                ready: Callable[[subprocess.Popen], None], announce: Callable[[], str],
                shown: Callable[[str], str] = lambda text: text) -> None:
    """``cmd`` in a process group of its own until a signal: once ``ready(proc)`` returns, the
    line ``announce()`` is printed; a signal stops the whole group (and what it started); the
    process ending by itself is an error naming ``name`` and its log."""
    with interrupts.raised():
        proc = _start(cmd, log, env, shown)
        try:
            ready(proc)
            print(announce(), flush=True)
            proc.wait()
            raise ServerError(f"{name} exited with code {proc.returncode}: {log_tail(log)} "
                              f"(log: {log})")
        except KeyboardInterrupt:
            return
        finally:
            with interrupts.held():
                stop_group(proc)


def _start(cmd: list[str], log: Path, env: dict[str, str], shown=lambda text: text
           ) -> subprocess.Popen:
    """``cmd`` in a process group of its own, its output appended to ``log``."""
    with log.open("a") as out:
        out.write(f"--- {shown(' '.join(cmd))}\n")
        out.flush()
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def shown_path(path: Path) -> Path:
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def probe_host(host: str) -> str:
    """Where this process asks for /health: a wildcard host answers on loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)

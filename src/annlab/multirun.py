"""What a grid sweep and a tuning study share: their parent run, each job's overrides and
progress line (the job itself: :mod:`annlab.job`), and how an early stop closes what is open and
says how to resume.

The launching process opens the parent before any job starts and tells each job the parent's
id and the store in the job's own overrides (``tracking.parent_run_id``, ``tracking.uri``), so
jobs on any launcher or machine nest under it; never through MLFLOW_RUN_ID, which makes MLflow
ignore the parent (mlflow #15713).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from annlab import interrupts, names, tracking
from annlab.errors import AnnlabError, Stopped
from annlab.names import Status

POLL_SECONDS = 0.5  # how often the launching process looks for jobs that ended
Parent = tuple[tracking.Run, bool]  # a sweep's or study's parent run, and whether it resumed


def quoted(value: str) -> str:
    """A value as a Hydra override quotes it (URIs hold ':' and '/')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def job_overrides(point: list[str], parent: tracking.Run, uri: str, label: str) -> list[str]:
    """A job's overrides: its point, then where and under which name it is tracked."""
    return [*point, f"tracking.parent_run_id={parent.run_id}", f"tracking.uri={quoted(uri)}",
            f"tracking.run_name={quoted(label)}"]


def progress(number: int, total: int, label: str, state: str, metrics: dict | None = None,
             seconds: float | None = None) -> str:
    """``[3/27] tanh-h10-lr0.5     finished     val accuracy 0.970    1.2 s``."""
    line = f"[{number}/{total}] {label:<20} {state:<12}"
    if metrics and "val_accuracy" in metrics:
        line += f" val accuracy {metrics['val_accuracy']:.3f}"
    return line + (f"  {seconds:5.1f} s" if seconds is not None else "")


def _state(record: tracking.Record) -> str:
    if record.status == Status.FINISHED:
        return "finished" if record.pruned_at is None else "pruned"  # its name says where
    return f"{record.status}  {record.failure or ''}".rstrip()


@contextlib.contextmanager
def reporting(experiment: tracking.Experiment, parent: tracking.Run, total: int,
              done: int) -> Iterator[None]:
    """While inside, a progress line for each child of ``parent`` that ends, in the order they
    end, numbered after the ``done`` ones: printed by this process from the store, whatever
    the launcher and wherever its jobs run (their own output may not reach this terminal)."""
    since, seen, stop = int(time.time() * 1000), set(), threading.Event()

    def report() -> None:
        ended = sorted((r for r in experiment.children(parent.run_id)
                        if r.start_time >= since and r.run_id not in seen
                        and r.status != Status.RUNNING), key=lambda r: r.end_time or 0)
        for r in ended:
            seen.add(r.run_id)
            seconds = (r.end_time - r.start_time) / 1000 if r.end_time else None
            print(progress(done + len(seen), total, r.run_name, _state(r), r.metrics, seconds),
                  flush=True)

    def poll() -> None:
        while not stop.wait(POLL_SECONDS):
            with contextlib.suppress(Exception):  # a store away now: its end says so
                report()

    thread = threading.Thread(target=poll, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(Exception):
            report()


def results(returns) -> dict[str, dict]:
    """The jobs' results by run id (those that ran; a failed job has none)."""
    found = {}
    for ret in returns:
        with contextlib.suppress(Exception):  # the job raised: its run says why
            if (result := ret.return_value).get("run_id"):
                found[result["run_id"]] = result
    return found


@contextlib.contextmanager
def launching(experiment: tracking.Experiment, open_parent: Callable[[], Parent],
              parent_name: str, what: str, resumes: str,
              keep_parent: Callable[[], bool] = lambda: False) -> Iterator[Parent]:
    """Where a sweep or study opens its parent (``open_parent() -> (run, resumed)``), then
    launches and summarises its jobs: signals raise here (:func:`annlab.interrupts.raised`) and
    the parent's heartbeat is renewed. Stopped early by anything but an error annlab names
    (Ctrl-C, SIGTERM, a launcher that lost its workers), it closes the children left RUNNING
    and the parent (unless ``keep_parent()``: other workers of a study still run trials) as
    KILLED and raises :class:`Stopped` with a line for each and how to resume."""
    parent, since = None, int(time.time() * 1000)
    with interrupts.raised() as received:
        try:
            with interrupts.held():  # made whole, or not at all
                parent, resumed = open_parent()
            with parent.heartbeat():
                yield parent, resumed
        except AnnlabError:
            raise
        except BaseException as err:
            if parent is None:
                raise
            reason = stop_reason(err, received, what)
            lines = close_children(experiment, parent, reason, what, since)
            if keep_parent():
                parent.share()
                lines.append(f"  (the parent {parent_name} stays open: other workers run "
                             "trials)")
            else:
                parent.end(Status.KILLED, f"{reason} before the {what}'s summary")
                lines.append(f"  {parent_name} ({parent.run_id}), the {what}'s parent")
            # joblib's exit handler deletes the workers' temporary folder again after an
            # interrupted launch removed it, and warns that it failed: noise under these lines.
            warnings.filterwarnings("ignore", "Failed to delete temporary folder", UserWarning)
            raise Stopped([*lines, f"rerun the same command to resume: {resumes}"]) from err


def log_best(parent: tracking.Run, value: float, run_id: str, run_name: str | None) -> None:
    """A sweep's or study's best child on its parent; the metric once, not again on a rerun
    that found the same best."""
    if parent.record().metrics.get(names.BEST_VAL_MISCLASSIFICATION) != value:
        parent.log_metrics({names.BEST_VAL_MISCLASSIFICATION: value})
    parent.set_tags({names.BEST_RUN: run_id, names.BEST_RUN_NAME: run_name})


def stop_reason(err: BaseException, received: list[str], what: str) -> str:
    """Why a sweep or study stopped early: the signal, else the error."""
    if received:
        return received[0]
    if isinstance(err, KeyboardInterrupt):
        return getattr(err, "reason", interrupts.CTRL_C)
    return f"the {what} stopped: {tracking.first_line(err)}"


def close_children(experiment: tracking.Experiment, parent: tracking.Run, reason: str,
                   what: str, since: int) -> list[str]:
    """Close the parent's children left RUNNING as KILLED; one line for each, and for each
    child started since ``since`` (ms) that its own job closed as KILLED. With the store gone,
    stop at once instead: what is left RUNNING is closed the next time annlab opens it."""
    try:
        experiment.store.check_reachable("its runs left RUNNING are closed the next time "
                                         "annlab opens the store; rerun the same command then")
    except tracking.TrackingError as err:
        raise tracking.TrackingError(f"{reason}: {err}") from err
    closed = experiment.close_stale_children(parent.run_id, f"{reason}; the {what} stopped")
    ids = {r.run_id for r in closed}
    closed += [r for r in experiment.children(parent.run_id) if r.run_id not in ids
               and r.status == Status.KILLED and r.start_time >= since]
    return [f"{reason}: closed as KILLED:", *(f"  {r.run_name} ({r.run_id})" for r in closed)]


# -- a cluster's reach -----------------------------------------------------------------------

def local_addresses() -> set[str]:
    """This machine's addresses (loopback included), as other nodes would name it."""
    hosts = {socket.gethostname(), "localhost"}
    found = {"127.0.0.1", "::1"}
    for host in hosts:
        with contextlib.suppress(OSError):
            found |= {info[4][0] for info in socket.getaddrinfo(host, None)}
    return found


def is_loopback(host: str | None) -> bool:
    if host in (None, "localhost"):
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


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

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
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping

from annlab import interrupts, names, tracking
from annlab.errors import AnnlabError, Stopped
from annlab.names import Status

POLL_SECONDS = 1.0  # how often the launching process looks for jobs that ended, at first
MAX_POLL_SECONDS = 5.0  # ... and at most, while none does
Parent = tuple[tracking.Run, bool]  # a sweep's or study's parent run, and whether it resumed


def quoted(value: str) -> str:
    """A value as a Hydra override quotes it (URIs hold ':' and '/')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def job_overrides(point: list[str], parent: tracking.Run, uri: str, label: str) -> list[str]:
    """A job's overrides: its point, then where and under which name it is tracked."""
    return [*point, f"tracking.parent_run_id={parent.run_id}", f"tracking.uri={quoted(uri)}",
            f"tracking.run_name={quoted(label)}"]


def progress(number: int, total: int, label: str, state: str, metrics: dict | None = None,
             seconds: float | None = None, width: int = 24) -> str:
    """``[ 3/27] tanh-h10-lr0.5   finished      val accuracy 0.970    1.2 s``: columns
    aligned for labels up to ``width`` characters."""
    line = f"[{number:>{len(str(total))}}/{total}] {label:<{width}}  {state:<14}"
    if metrics and "val_accuracy" in metrics:
        line += f"val accuracy {metrics['val_accuracy']:.3f}"
    return (line + (f"  {seconds:6.1f} s" if seconds is not None else "")).rstrip()


def _state(record: tracking.Record) -> tuple[str, str]:
    """A child's label (its name, without the prefix a pruned trial's name gets) and how it
    ended."""
    label = record.run_name
    if record.pruned_at is not None:
        return label.removeprefix(f"pruned@{record.pruned_at}-"), f"pruned at {record.pruned_at}"
    if record.status == Status.FINISHED:
        return label, "finished"
    return label, f"{record.status}  {record.failure or ''}".rstrip()


@contextlib.contextmanager
def reporting(experiment: tracking.Experiment, parent: tracking.Run, total: int,
              done: int, width: int = 24) -> Iterator[None]:
    """While inside, a progress line for each child of ``parent`` that ends, in the order they
    end, numbered after the ``done`` ones: printed by this process from the store, whatever
    the launcher and wherever its jobs run (their own output may not reach this terminal).
    The store is asked for the children that ended since it last asked, at first every
    POLL_SECONDS and less often while none ends (up to MAX_POLL_SECONDS): its requests follow
    the jobs' count, not the sweep's length."""
    since, seen, stop = int(time.time() * 1000), set(), threading.Event()
    query = f"tags.`{names.PARENT_RUN}` = '{parent.run_id}' and attributes.end_time >= "

    def report() -> bool:
        nonlocal since
        ended = sorted((r for r in experiment.search(query + str(since))
                        if r.run_id not in seen and r.status != Status.RUNNING),
                       key=lambda r: r.end_time or 0)
        for r in ended:
            seen.add(r.run_id)
            since = max(since, r.end_time or since)
            seconds = (r.end_time - r.start_time) / 1000 if r.end_time else None
            print(progress(done + len(seen), total, *_state(r), r.metrics, seconds, width),
                  flush=True)
        return bool(ended)

    def poll() -> None:
        wait = POLL_SECONDS
        while not stop.wait(wait):
            with contextlib.suppress(Exception):  # a store away now: its end says so
                wait = POLL_SECONDS if report() else min(wait * 1.5, MAX_POLL_SECONDS)

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


def log_best(parent: tracking.Run, bests: Mapping[str, tuple[float, str, str | None]]) -> None:
    """Each dataset's best child (dataset -> its validation misclassification, run id and
    name) on a sweep's or study's parent: ``best_val_misclassification``, ``annlab.best_run``
    and ``annlab.best_run_name``, each suffixed with ``.<dataset>`` when there are several. A
    metric is logged once, not again by a rerun that found the same best."""
    end = (lambda dataset: f".{dataset}") if len(bests) > 1 else (lambda dataset: "")
    metrics, tags = {}, {}
    for dataset, (value, run_id, run_name) in bests.items():
        metrics[names.BEST_VAL_MISCLASSIFICATION + end(dataset)] = value
        tags |= {names.BEST_RUN + end(dataset): run_id,
                 names.BEST_RUN_NAME + end(dataset): run_name}
    logged = parent.record().metrics
    if new := {k: v for k, v in metrics.items() if logged.get(k) != v}:
        parent.log_metrics(new)
    parent.set_tags(tags)


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

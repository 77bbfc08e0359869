"""One job of a sweep or a study, in the process that runs it (a worker, or the launching
process under the basic launcher): tracked as a child run. Its progress line comes from the
launching process (:func:`annlab.multirun.reporting`), which reads the run's end from the
store; the job itself speaks only of a failure the store may not have recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from annlab import collector, study, tracking
from annlab.names import Status
from annlab.pipeline import ParentClosed, run_experiment
from annlab.spec import RunSpec


def run(spec: RunSpec, overrides: list[str], out_dir: Path) -> dict[str, Any]:
    """One config of a sweep, or one trial of a study, in its job's process. A failure is
    recorded (FAILED) and handed back, and the sweep goes on; an interrupt (KILLED) stops it."""
    try:
        stop = study.Reporter(spec.tune) if spec.trial else None
        result = run_experiment(spec, overrides, out_dir, stop=stop, job=True)
    except ParentClosed:  # queued before a Ctrl-C: its launching process says so
        return {"status": Status.KILLED}
    except Exception as err:  # recorded as FAILED by the run itself; the sweep goes on
        if isinstance(err, tracking.TrackingError):  # the store may not know: say it here
            print(f"{spec.name} FAILED {err}", flush=True)
        collector.keep_after_first_job()
        return {"status": Status.FAILED, "error": str(err)}
    # What the summary shows of this config, handed back with the result so that the launching
    # process need not read it from the store again.
    final = result.figures.get("boundary_final")
    collector.keep_after_first_job()
    return {"status": Status.FINISHED, **result.scores, "run_id": result.run_id,
            "value": result.val_curve[-1], "pruned_at": result.stopped_at,
            "val_curve": result.val_curve, "boundary_final": final.read_bytes() if final else None}

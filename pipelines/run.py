"""`make run` / `make sweep`: one experiment through every stage, tracked in MLflow.

    python -m pipelines.run model.activation=relu train.epochs=500
    python -m pipelines.run sweep=default            # the grid, see conf/sweep/default.yaml
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from annlab.config import ConfigError, run_name
from annlab.names import Status
from pipelines import defer_interrupts, fail, freeze_what_stays, interruptible


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return sweep_job(cfg, hc)
    name_after_defaults(cfg)
    interruptible()  # Hydra and OmegaConf are done with the config
    # Imported here, not above: a sweep's launching process needs neither (nor scikit-learn),
    # and starts its workers' fork server before it imports MLflow.
    from annlab.network import DivergenceError
    from annlab.pipeline import run_experiment
    from annlab.tracking import TrackingError

    try:
        result = run_experiment(cfg, hc.overrides.task, Path(hc.runtime.output_dir))
    except (ConfigError, TrackingError) as err:
        fail(f"error: {err}", err)
    except DivergenceError as err:
        fail(f"error: run failed, {err} (recorded as FAILED in MLflow)", err)
    except KeyboardInterrupt as err:
        fail(str(err) or "interrupted (Ctrl-C)", err, code=130)
    global _finished_alone
    _finished_alone = True
    s = result.scores
    print(f"run {result.run_name} ({result.run_id}) finished\n"
          f"  test accuracy {s['test_accuracy']:.4f}  (train {s['train_accuracy']:.4f}, "
          f"validation {s['val_accuracy']:.4f})\n"
          f"  figures in {result.figures['boundary'].parent}\n"
          f"  tracked in {result.uri}, experiment {cfg.tracking.experiment!r}; "
          "browse with `make ui`")
    return s


def name_after_defaults(cfg: DictConfig) -> None:
    """Name the run by what differs from the default config (a sweep's names come from its
    launching process, which knows them all)."""
    cfg.tracking.run_name = run_name(cfg, compose(config_name="config"))


def sweep_job(cfg: DictConfig, hc) -> dict:
    """One config of a sweep, or one trial of a study: a failure is recorded and reported,
    and the sweep goes on."""
    from annlab.pipeline import run_experiment
    from pipelines.sweep import SIZE_ENV

    start, label = time.perf_counter(), run_name(cfg)
    trial = cfg.get("tune") is not None and cfg.tune.trial_id is not None
    progress = f"[{hc.job.num + 1}/{os.environ.get(SIZE_ENV, '?')}] {label:<{30 if trial else 20}}"
    try:
        stop = None
        if trial:
            from annlab import tune

            stop = tune.Reporter(cfg.tune, cfg.tune.storage)
        result = run_experiment(cfg, hc.overrides.task, Path(hc.runtime.output_dir),
                                entry_point="pipelines/tune.py" if trial else "pipelines/run.py",
                                stop=stop)
    except Exception as err:  # recorded as FAILED by the run itself; the sweep goes on
        print(f"{progress} FAILED  {err}", flush=True)
        _settle()
        return {"status": Status.FAILED, "error": str(err)}
    except KeyboardInterrupt as err:  # recorded as KILLED; the launching process stops
        print(f"{progress} KILLED  {getattr(err, 'reason', 'interrupted')}", flush=True)
        raise
    seconds = time.perf_counter() - start
    state = ("already done" if result.skipped else "finished" if result.stopped_at is None
             else f"pruned@{result.stopped_at}")
    print(f"{progress} {state:<12} val accuracy {result.scores['val_accuracy']:.3f}  "
          f"{seconds:5.1f} s", flush=True)
    # What the summary shows of this config, handed back with the result so that the launching
    # process need not read it from the store again (a job of an earlier attempt has none).
    final = result.figures.get("boundary_final")
    _settle()
    return {"status": Status.FINISHED, **result.scores, "run_id": result.run_id,
            "value": 1.0 - result.scores["val_accuracy"], "pruned_at": result.stopped_at,
            "val_curve": result.val_curve, "boundary_final": final.read_bytes() if final else None}


_settled = False


def _settle() -> None:
    """After a process's first job, what it imported and set up stays for every later job."""
    global _settled
    if not _settled:
        _settled = True
        freeze_what_stays()


_finished_alone = False  # a single run finished: nothing of it is left to close


def exit_now() -> None:
    """Everything is recorded and closed: skip the interpreter's teardown of ~300 MB of modules
    (~1.2 s). Only for a finished single run; sweeps and studies (Ray, joblib) exit normally."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    defer_interrupts()  # until the run, the sweep or the study starts recording
    main()
    if _finished_alone:
        exit_now()

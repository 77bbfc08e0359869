"""The Hydra callback that makes a multirun one tracked, resumable sweep.

In the launching process, before any job starts, it composes and validates every config of the
grid, creates the store and the experiment, and opens the sweep's parent run (resuming an
earlier one of the same name and grid). Jobs learn the parent's id from the variable
ANNLAB_SWEEP_PARENT_RUN_ID (read by the sweep overlay into ``tracking.parent_run_id``), never
from MLFLOW_RUN_ID. When the jobs end it writes the summary onto the parent; if the sweep is
interrupted instead, it closes the parent and any orphaned child as KILLED.
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import os
import signal
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from annlab import sweep, tracking
from annlab.config import ConfigError, config_hash, run_name, validate

PARENT_ENV = "ANNLAB_SWEEP_PARENT_RUN_ID"
SIZE_ENV = "ANNLAB_SWEEP_SIZE"


def grid_overrides(config: DictConfig) -> list[list[str]]:
    """Each job's overrides, expanded exactly as Hydra's basic sweeper does."""
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*params, *config.hydra.overrides.task])
    return BasicSweeper.split_arguments(parsed, None)[0]


def grid_configs(config: DictConfig) -> list[DictConfig]:
    """Every job's config, to validate and hash before anything runs.

    Composing a config costs ~0.15 s, so a job whose overrides only set values gets the primary
    config with those values set (what Hydra would compose); only a job that sweeps a config
    group (``model=a,b``) is composed in full.
    """
    points = grid_overrides(config)
    groups = set(config.hydra.runtime.choices)
    values = defaultdict(set)
    for point in points:
        for override in point:
            key, value = override.split("=", 1)
            values[key].add(value)
    swept_groups = {k for k, v in values.items() if len(v) > 1 and k.lstrip("+~") in groups}
    base = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    parser = OverridesParser.create()
    configs = []
    for point in points:
        if any(o.split("=", 1)[0] in swept_groups for o in point):
            configs.append(compose(config_name="config", overrides=point))
            continue
        cfg = copy.deepcopy(base)
        for override in parser.parse_overrides(point):
            key = override.key_or_group
            if key not in groups and not key.startswith("hydra"):
                OmegaConf.update(cfg, key, override.value(), merge=False)
        configs.append(cfg)
    return configs


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.uri = self.experiment_id = self.parent = self.parent_name = None
        self.grid: dict[str, str] = {}
        self.done = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        jobs = grid_configs(config)
        try:
            for job in jobs:
                validate(job)
        except ConfigError as err:
            sys.exit(f"error: {err}")
        self.grid = {config_hash(job): run_name(job) for job in jobs}
        if len(self.grid) < len(jobs):
            sys.exit("error: the sweep repeats a config; each grid point must differ")
        name = config.tracking.sweep or "grid"
        grid_hash = hashlib.sha256(",".join(sorted(self.grid)).encode()).hexdigest()[:16]
        self.parent_name = f"sweep-{name}-{grid_hash[:8]}"
        try:
            self.uri = tracking.resolve_uri(config.tracking.uri)
            self.experiment_id = tracking.prepare(self.uri, config.tracking.experiment)
            self.parent, resumed = tracking.open_sweep_parent(
                self.uri, self.experiment_id, name, grid_hash, self.parent_name,
                {"annlab.sweep_size": str(len(jobs))})
        except tracking.TrackingError as err:
            sys.exit(f"error: {err}")
        os.environ[PARENT_ENV], os.environ[SIZE_ENV] = self.parent, str(len(jobs))
        atexit.register(self._abandon)
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
        verb = "resuming" if resumed else "starting"
        print(f"{verb} sweep {name!r}: {len(jobs)} configs, parent run {self.parent_name} "
              f"({self.parent})", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        tracking.kill_stale_children(self.uri, self.experiment_id, self.parent,
                                     "its job ended without closing the run")
        table = sweep.summary_table(
            tracking.children(self.uri, self.experiment_id, self.parent), self.grid)
        run = tracking.Run(tracking.client_for(self.uri), self.parent)
        out = Path(config.hydra.sweep.dir) / "summary"
        out.mkdir(parents=True, exist_ok=True)
        self._log_summary(run, table, out)
        failed = table[table["status"] != "FINISHED"]
        reason = None
        if len(failed):
            reason = f"{len(failed)} of {len(table)} configs did not finish: " + \
                ", ".join(failed["run_name"])
        tracking.end_run(self.uri, self.parent, "FAILED" if reason else "FINISHED", reason)
        self.done = True
        _print_summary(table, self.parent, self.parent_name)
        if reason:
            sys.exit(f"error: {reason}")

    def _log_summary(self, run: tracking.Run, table, out: Path) -> None:
        table.to_csv(out / "sweep_summary.csv", index=False)
        run.log_artifact(out / "sweep_summary.csv")
        finished = table[table["status"] == "FINISHED"]
        figures = [sweep.plot_heatmaps(table, out / "val_misclassification_heatmaps.png")]
        curves = {r.run_name: tracking.metric_history(self.uri, r.run_id,
                                                      "val_misclassification")
                  for r in finished.itertuples()}
        figures.append(sweep.plot_curves(curves, out / "val_curves.png"))
        with tempfile.TemporaryDirectory() as tmp:
            finals = {r.run_name: tracking.download(self.uri, r.run_id,
                                                    "figures/boundary_final.png",
                                                    Path(tmp) / r.run_id)
                      for r in finished.itertuples()}
            if finals:
                figures.append(sweep.tile_images(finals, out / "boundaries.png"))
        for path in figures:
            run.log_artifact(path, "figures")
        if len(finished):
            best = finished.iloc[0]
            run.log_metrics({"best_val_misclassification": best["val_misclassification"]})
            run.set_tags({"annlab.best_run": best["run_id"]})

    def _abandon(self) -> None:
        """At exit without a summary (Ctrl-C, SIGTERM, a dead worker): nothing stays RUNNING."""
        if self.done or self.parent is None:
            return
        reason = "sweep interrupted before its summary; rerun the same command to resume"
        tracking.kill_stale_children(self.uri, self.experiment_id, self.parent, reason)
        tracking.end_run(self.uri, self.parent, "KILLED", reason)
        print(f"\n{reason} (parent run {self.parent} marked KILLED)", file=sys.stderr)


def _sigterm_to_interrupt(signum, frame):
    raise KeyboardInterrupt("terminated (SIGTERM)")


def _print_summary(table, parent: str, name: str) -> None:
    shown = table[["run_name", "status", "train_accuracy", "val_accuracy", "test_accuracy"]]
    print("\n" + shown.to_string(index=False, float_format=lambda v: f"{v:.3f}",
                                 na_rep="-"))
    print(f"\nsweep parent run {name} ({parent}): summary in its figures/ and "
          "sweep_summary.csv; browse with `make ui`", flush=True)

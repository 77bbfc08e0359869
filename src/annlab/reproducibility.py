"""Prove a tracked run reproduces: rerun it from its recorded config and compare everything.

Bitwise on the platform and lock file it was recorded with. On another platform (other CPU
SIMD kernels or BLAS) the last bits of exp/tanh may differ, so numbers are compared within
``rtol=atol=1e-6`` and images by their pixels, of which at most 0.5 % may differ.

What can be compared depends on how the run ended: a FINISHED run has curves, final metrics,
weights and figures; a run that diverged has its curves up to the divergence and the epoch it
diverged at; an interrupted (KILLED) one has the curves of the epochs it trained. A RUNNING
run whose process is gone is closed as KILLED first; one whose process lives is refused.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image, ImageSequence

from annlab import names, provenance, tracking, training
from annlab.config import Config
from annlab.model_io import load_weights
from annlab.names import Status
from annlab.network import HISTORY_KEYS, DivergenceError
from annlab.paths import default_paths
from annlab.pipeline import Outcome, rebuild
from annlab.spec import RunSpec, config_hash, resolve

TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}
PIXEL_TOLERANCE = 0.005


@dataclass
class Report:
    run_id: str
    run_name: str
    experiment_id: str
    tolerant: bool  # another platform: compared within TOLERANCE
    differences: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.differences:
            return "different"
        return "within tolerance" if self.tolerant else "identical"

    def text(self) -> str:
        lines = [f"reproducing run {self.run_name} ({self.run_id}) from its recorded config"]
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [f"  {d}" for d in self.differences]
        lines.append(f"{self.verdict}: " + ", ".join(self.checked) if not self.differences
                     else f"{self.verdict}: {len(self.differences)} difference(s) above")
        return "\n".join(lines)


def _same(a, b, tolerant: bool) -> np.ndarray:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.isclose(a, b, **TOLERANCE) if tolerant else a == b


def compare_curve(name: str, recorded: pd.Series, reproduced: pd.Series, tolerant: bool
                  ) -> str | None:
    if list(recorded.index) != list(reproduced.index):
        return f"{name}: recorded {len(recorded)} epochs, reproduced {len(reproduced)}"
    same = _same(recorded.values, reproduced.values, tolerant)
    if same.all():
        return None
    epoch = recorded.index[int(np.argmin(same))]
    return (f"{name}: first differs at epoch {epoch}: recorded {float(recorded[epoch])!r}, "
            f"reproduced {float(reproduced[epoch])!r}")


def _frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as img:
        return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(img)]


def compare_file(name: str, recorded: Path, reproduced: Path, tolerant: bool) -> str | None:
    a, b = recorded.read_bytes(), reproduced.read_bytes()
    if a == b:
        return None
    digests = f"recorded sha256 {_sha(a)}, reproduced {_sha(b)}"
    if tolerant:
        fa, fb = _frames(recorded), _frames(reproduced)
        if len(fa) == len(fb) and all(x.shape == y.shape for x, y in zip(fa, fb)):
            share = np.mean([np.any(x != y, axis=-1).mean() for x, y in zip(fa, fb)])
            if share <= PIXEL_TOLERANCE:
                return None
            return f"{name}: {share:.2%} of pixels differ ({digests})"
    return f"{name}: bytes differ ({digests})"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


# -- what was recorded -----------------------------------------------------------------------

@dataclass
class Recorded:
    """A tracked run as the checks need it: its record, config, curves and files."""

    run: tracking.Run
    record: tracking.Record
    spec: RunSpec  # today's resolution of the recorded config
    config_hash: str  # of the config file as recorded
    environment: dict
    curves: dict[str, pd.Series]
    files: Path  # where its artifacts are downloaded
    data_files: dict[str, str]  # data=file: each file's content digest, as recorded

    @property
    def finished(self) -> bool:
        return self.record.status == Status.FINISHED

    @property
    def diverged(self) -> bool:
        return (self.record.status == Status.FAILED
                and (self.record.failure or "").startswith(DivergenceError.PREFIX))

    @property
    def epochs(self) -> int:
        return max((len(c) for c in self.curves.values()), default=0)

    def artifact(self, path: str) -> Path:
        return self.run.download(path, self.files)


def load_recorded(store: tracking.Store, run_id: str, scratch: Path,
                  moved: Mapping[str, str] | None = None) -> Recorded:
    """Read what ``run_id`` recorded; refuse, in one line, what cannot be reproduced. ``moved``
    gives a data file's new place (``data.path`` -> its path): its content decides."""
    run = tracking.Run(store, run_id)
    record = run.settled()
    what = f"run {record.run_name} ({run_id})"
    if record.kind == "verdict":
        raise tracking.TrackingError(f"{what} is make reproduce's verdict on run "
                                     f"{record.tags[names.REPRODUCES]}: reproduce that run")
    if record.config_hash is None:
        raise tracking.TrackingError(f"{what} was not made by annlab (it has no "
                                     f"{names.CONFIG_HASH} tag); nothing to reproduce")
    if record.status == Status.RUNNING:
        raise tracking.TrackingError(f"{what} is still RUNNING (its process is alive and "
                                     "writing it); reproduce it once it has ended")
    files = scratch / "recorded"
    try:
        config_file = run.download(names.CONFIG_FILE, files)
        environment = json.loads(record.tags.get(names.ENVIRONMENT) or run.download(
            names.ENVIRONMENT_FILE, files).read_text())  # a tag, or a file in older runs
    except tracking.TrackingError as err:
        raise tracking.TrackingError(f"{what} was made by annlab but its {names.CONFIG_FILE} "
                                     "artifact is missing (deleted?); it cannot be rerun"
                                     ) from err
    recorded_cfg = OmegaConf.load(config_file)
    # Where files go is this checkout's business, whatever the recording machine had; data
    # files are read as they are now (their recorded digests are compared by a check).
    data = {key.removeprefix("data."): path for key, path in (moved or {}).items()}
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), recorded_cfg,
                              {"paths": OmegaConf.to_container(default_paths()),
                               "data": {**data, "sha256": None}})
    except OmegaConfBaseException as err:
        raise tracking.TrackingError(f"{what}: its recorded {names.CONFIG_FILE} does not fit "
                                     f"today's config schema: {tracking.first_line(err)}"
                                     ) from err
    curves = {key: run.metric_history(key) for key in HISTORY_KEYS}
    recorded = OmegaConf.to_container(recorded_cfg, resolve=True)
    return Recorded(run, record, resolve(cfg), config_hash(recorded), environment, curves, files,
                    recorded["data"].get("sha256") or {})


# -- the checks ------------------------------------------------------------------------------

# A check: (recorded, rerun outcome, tolerant) -> (what was checked, differences), or None when
# the recorded run has nothing it could compare.
Check = Callable[[Recorded, Outcome, bool], "tuple[str, list[str]] | None"]


def check_config_hash(rec: Recorded, out: Outcome, tolerant: bool):
    diff = [] if rec.record.config_hash == rec.config_hash else [
        f"config hash: recorded {rec.record.config_hash}, recorded config hashes to "
        f"{rec.config_hash} (config artifact altered?)"]
    return "config hash", diff


def check_data_hash(rec: Recorded, out: Outcome, tolerant: bool):
    if rec.record.data_hash is None and not rec.finished:
        return None  # the run's process died before its data was recorded
    now = out.splits.digest()
    diff = [] if rec.record.data_hash == now else [
        f"data hash: recorded {rec.record.data_hash}, reproduced {now}"]
    return "data hash", diff


def check_datasets(rec: Recorded, out: Outcome, tolerant: bool):
    if not rec.record.datasets:
        return None  # recorded before datasets were logged, or died first
    now = out.splits.context_digests()
    diff = [f"dataset {context}: recorded digest {digest}, reproduced {now.get(context)}"
            for context, digest in sorted(rec.record.datasets.items())
            if now.get(context) != digest]
    return f"{len(rec.record.datasets)} dataset digests", diff


def check_curves(rec: Recorded, out: Outcome, tolerant: bool):
    if rec.epochs == 0:
        return None
    diffs = []
    for key, recorded in rec.curves.items():
        reproduced = out.history[key] if key in out.history else pd.Series(dtype=float)
        if diff := compare_curve(key, recorded, reproduced, tolerant):
            diffs.append(diff)
    return f"{len(rec.curves)} curves x {rec.epochs} epochs", diffs


def check_divergence(rec: Recorded, out: Outcome, tolerant: bool):
    if not rec.diverged:
        return None
    epoch = rec.epochs + 1  # the curves stop at the last finite epoch
    got = out.failure.epoch if isinstance(out.failure, DivergenceError) else None
    diff = [] if got == epoch else [
        f"divergence: recorded at epoch {epoch}, reproduced "
        f"{f'at epoch {got}' if got else 'none (training ' + _ending(out) + ')'}"]
    return f"divergence at epoch {epoch}", diff


def _ending(out: Outcome) -> str:
    return f"failed: {out.failure}" if out.failure else "finished"


def check_data_files(rec: Recorded, out: Outcome, tolerant: bool):
    """data=file: each file's content now against its recorded digest; a file that changed is
    named, with the first split whose data differs."""
    if not rec.data_files:
        return None
    now = out.splits.context_digests()
    first = next((split for split in now if rec.record.datasets.get(split) not in (
        None, now[split])), None)
    diffs = [f"data file {f.path} ({f.key}) changed since the run: recorded sha256 "
             f"{rec.data_files.get(f.key.removeprefix('data.'), '?')[:12]}, now "
             f"{f.sha256[:12]}" + (f"; the first split that differs: {first}" if first else "")
             for f in rec.spec.data.files
             if rec.data_files.get(f.key.removeprefix("data.")) != f.sha256]
    return f"{len(rec.spec.data.files)} data files' content", diffs


def check_final_metrics(rec: Recorded, out: Outcome, tolerant: bool):
    if not rec.finished:
        return None
    diffs = []
    for key in training.FINAL_METRICS:
        recorded, reproduced = rec.record.metrics.get(key), out.scores.get(key)
        if recorded is None or reproduced is None or not _same(recorded, reproduced, tolerant):
            diffs.append(f"{key}: recorded {recorded!r}, reproduced "
                         f"{reproduced if reproduced is None else float(reproduced)!r}")
    return f"{len(training.FINAL_METRICS)} final metrics", diffs


def check_weights(rec: Recorded, out: Outcome, tolerant: bool):
    if not rec.finished:
        return None
    recorded = load_weights(rec.run.download_model_file(names.WEIGHTS_FILE, rec.files / "model"))
    model = out.model
    diffs = []
    for i, (a, b) in enumerate(zip(recorded.coefs_ + recorded.intercepts_,
                                   model.coefs_ + model.intercepts_)):
        if a.shape != b.shape or not _same(a, b, tolerant).all():
            diffs.append(f"weights[{i}]: differ (max |difference| "
                         f"{np.max(np.abs(a - b)) if a.shape == b.shape else 'shape'})")
    return "weights", diffs


def check_figures(rec: Recorded, out: Outcome, tolerant: bool):
    if not rec.finished:
        return None
    recorded = rec.artifact(names.FIGURES_DIR)
    diffs = [diff for path in out.figures.values()
             if (diff := compare_file(f"{names.FIGURES_DIR}/{path.name}", recorded / path.name,
                                      path, tolerant))]
    return f"{len(out.figures)} figures' bytes", diffs


def check_step_images(rec: Recorded, out: Outcome, tolerant: bool):
    """The per-epoch boundary images, by key and step, by pixels (MLflow re-encodes them)."""
    recorded = rec.run.images(names.BOUNDARY_IMAGE_KEY, rec.files / "images")
    if not rec.finished or not (recorded or out.step_images):
        return None
    diffs = []
    if sorted(recorded) != sorted(out.step_images):
        diffs.append(f"{names.BOUNDARY_IMAGE_KEY} images: recorded steps {sorted(recorded)}, "
                     f"reproduced {sorted(out.step_images)}")
    for step in sorted(set(recorded) & set(out.step_images)):
        a, b = _frames(recorded[step]), _frames(out.step_images[step])
        share = np.mean([np.any(x != y, axis=-1).mean() if x.shape == y.shape else 1.0
                         for x, y in zip(a, b)])
        if share > (PIXEL_TOLERANCE if tolerant else 0):
            diffs.append(f"{names.BOUNDARY_IMAGE_KEY} image at step {step}: {share:.2%} of "
                         "pixels differ")
    return f"{len(recorded)} boundary images' pixels", diffs


CHECKS: tuple[Check, ...] = (check_data_files, check_curves, check_divergence,
                             check_final_metrics, check_weights, check_data_hash, check_datasets,
                             check_config_hash, check_figures, check_step_images)


def reproduce(uri: str, run_id: str, moved: Mapping[str, str] | None = None) -> Report:
    """Rerun ``run_id`` in a scratch directory and compare; the original is only read.
    ``moved``: data files found elsewhere now (``data.path`` -> their path)."""
    store = tracking.connect(uri)
    with tempfile.TemporaryDirectory(prefix="annlab-reproduce-") as tmp:
        scratch = Path(tmp)
        rec = load_recorded(store, run_id, scratch, moved)
        here = provenance.platform_info()["fingerprint"]
        report = Report(run_id, rec.record.run_name, rec.record.experiment_id,
                        tolerant=rec.record.platform != here)
        _warn_environment(report, rec, here)
        last = None  # the epoch the recorded run stopped at, when it did not train them all
        if not rec.finished and not rec.diverged:
            report.warnings.append(
                f"the run ended {rec.record.status} ({rec.record.failure or 'no reason'}) after "
                f"{rec.epochs} epochs: only those epochs' curves and the hashes are compared; it "
                "has no final metrics, weights or figures")
            last = max(rec.epochs, 1)
        elif rec.diverged:
            report.warnings.append(
                f"the run failed ({rec.record.failure}): its curves up to the divergence and "
                "the epoch it diverged at are compared")
        elif rec.record.pruned_at is not None:
            report.warnings.append(f"the trial was pruned after {rec.record.pruned_at} epochs: "
                                   "rerun to that epoch")
            last = rec.record.pruned_at
        outcome = rebuild(rec.spec, scratch / "rerun",
                          stop=None if last is None else lambda m: m.n_iter_ >= last)
        if outcome.failure is not None and not isinstance(outcome.failure, DivergenceError):
            raise outcome.failure
        for check in CHECKS:
            if (result := check(rec, outcome, report.tolerant)) is not None:
                report.checked.append(result[0])
                report.differences += result[1]
    return report


def _warn_environment(report: Report, rec: Recorded, platform: str) -> None:
    git = provenance.git_state()
    if rec.record.git_commit != git.commit:
        report.warnings.append(f"recorded at commit {rec.record.git_commit}, now at {git.commit}")
    if rec.record.git_dirty:
        report.warnings.append("the run was recorded from a dirty work tree "
                               f"(its diff is in {names.GIT_DIFF_FILE})")
    lock = provenance.file_hash(provenance.LOCK_FILE)
    if rec.record.lock_hash != lock:
        report.warnings.append(f"lock file hash was {rec.record.lock_hash}, now {lock}")
    now = provenance.package_versions()
    changed = [f"{k} {v} -> {now.get(k)}"
               for k, v in rec.environment.get("packages", {}).items() if now.get(k) != v]
    if changed:
        report.warnings.append("package versions differ: " + ", ".join(changed))
    if report.tolerant:
        report.warnings.append(
            f"recorded on platform {rec.record.platform}, this is {platform}: CPU SIMD "
            "kernels or BLAS may change the last bits, so numbers are compared within "
            f"rtol=atol={TOLERANCE['rtol']} and figures by pixels "
            f"(at most {PIXEL_TOLERANCE:.1%} may differ), not bitwise")


def parent_and_children(uri: str, run_id: str
                        ) -> tuple[tracking.Record, list[tracking.Record]] | None:
    """A sweep's or study's parent and its finished children, in the order they started; None
    for a run of another kind."""
    store = tracking.connect(uri)
    record = tracking.Run(store, run_id).settled()
    if record.kind not in ("sweep", "study"):
        return None
    children = tracking.Experiment.by_id(store, record.experiment_id).children(run_id)
    return record, sorted((r for r in children if r.status == Status.FINISHED),
                          key=lambda r: r.start_time)


def record_verdict(uri: str, report: Report) -> str:
    """A run tagged ``annlab.reproduces=<id>`` holding the verdict and the report."""
    experiment = tracking.Experiment.by_id(tracking.connect(uri), report.experiment_id)
    tags = {names.REPRODUCES: report.run_id, names.VERDICT: report.verdict}
    with experiment.start_run(f"reproduce-{report.run_name}", tags=tags) as run:
        run.log_text(report.text(), names.REPORT_FILE)
        run.log_metrics({names.REPRODUCE_DIFFERENCES: len(report.differences)})
    return run.run_id

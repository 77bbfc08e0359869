"""Prove a tracked run reproduces: rerun it from its recorded config and compare everything.

Bitwise on the platform and lock file it was recorded with. On another platform (other CPU
SIMD kernels or BLAS) the last bits of exp/tanh may differ, so numbers are compared within
``rtol=atol=1e-6`` and images by their pixels, of which at most 0.5 % may differ.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from PIL import Image, ImageSequence

from annlab import provenance, tracking, training
from annlab.config import Config, config_hash, validate
from annlab.model_io import load_weights
from annlab.network import HISTORY_KEYS
from annlab.pipeline import build_data, build_model, execute

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
        return (f"{name}: recorded {len(recorded)} epochs, reproduced {len(reproduced)}")
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


def reproduce(uri: str, run_id: str) -> Report:
    """Rerun ``run_id`` in a scratch directory and compare; the original is only read."""
    record = tracking.load_run(uri, run_id)
    tags = record["tags"]
    with tempfile.TemporaryDirectory(prefix="annlab-reproduce-") as tmp:
        scratch = Path(tmp)
        try:
            recorded_cfg = tracking.download(uri, run_id, "config/config.yaml", scratch / "rec")
        except tracking.TrackingError as err:
            raise tracking.TrackingError(f"run {run_id} has no config/config.yaml artifact; "
                                         "it was not made by annlab") from err
        cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(recorded_cfg))
        validate(cfg)
        env_path = tracking.download(uri, run_id, "environment/environment.json",
                                     scratch / "rec")
        recorded_env = json.loads(env_path.read_text())
        here = provenance.platform_info()["fingerprint"]
        tolerant = tags.get("annlab.platform") != here
        report = Report(run_id, record["run_name"], record["experiment_id"], tolerant)
        _warn_environment(report, tags, recorded_env, here)

        splits = build_data(cfg)
        model = build_model(cfg)
        outcome = execute(cfg, splits, model, scratch / "rerun")

        check = report.differences.append
        if tags.get("annlab.config_hash") != config_hash(cfg):
            check(f"config hash: recorded {tags.get('annlab.config_hash')}, "
                  f"recorded config hashes to {config_hash(cfg)} (config artifact altered?)")
        if tags.get("annlab.data_hash") != splits.digest():
            check(f"data hash: recorded {tags.get('annlab.data_hash')}, "
                  f"reproduced {splits.digest()}")
        for key in HISTORY_KEYS:
            diff = compare_curve(key, tracking.metric_history(uri, run_id, key),
                                 outcome.history[key], tolerant)
            if diff:
                check(diff)
        for key in training.FINAL_METRICS:
            recorded, reproduced = record["metrics"].get(key), outcome.scores[key]
            if recorded is None or not _same(recorded, reproduced, tolerant):
                check(f"{key}: recorded {recorded!r}, reproduced {float(reproduced)!r}")
        weights = load_weights(tracking.download(uri, run_id, "model/data/weights.npz",
                                                 scratch / "rec"))
        for i, (a, b) in enumerate(zip(weights.coefs_ + weights.intercepts_,
                                       model.coefs_ + model.intercepts_)):
            if a.shape != b.shape or not _same(a, b, tolerant).all():
                check(f"weights[{i}]: differ (max |difference| "
                      f"{np.max(np.abs(a - b)) if a.shape == b.shape else 'shape'})")
        figures = tracking.download(uri, run_id, "figures", scratch / "rec")
        for path in outcome.figures.values():
            diff = compare_file(f"figures/{path.name}", figures / path.name, path, tolerant)
            if diff:
                check(diff)
    report.checked = [f"{len(HISTORY_KEYS)} curves x {len(outcome.history)} epochs",
                      f"{len(training.FINAL_METRICS)} final metrics", "weights", "data hash",
                      "config hash", f"{len(outcome.figures)} figures' bytes"]
    return report


def _warn_environment(report: Report, tags: dict, recorded_env: dict, platform: str) -> None:
    git = provenance.git_state()
    recorded_commit = tags.get("mlflow.source.git.commit")
    if recorded_commit != git["commit"]:
        report.warnings.append(f"recorded at commit {recorded_commit}, now at {git['commit']}")
    if tags.get("annlab.git_dirty") == "True":
        report.warnings.append("the run was recorded from a dirty work tree "
                               "(its diff is in environment/git.diff)")
    lock = provenance.file_hash(provenance.LOCK_FILE)
    if tags.get("annlab.lock_hash") != lock:
        report.warnings.append(f"lock file hash was {tags.get('annlab.lock_hash')}, now {lock}")
    now = provenance.package_versions()
    changed = [f"{k} {v} -> {now.get(k)}" for k, v in recorded_env.get("packages", {}).items()
               if now.get(k) != v]
    if changed:
        report.warnings.append("package versions differ: " + ", ".join(changed))
    if report.tolerant:
        report.warnings.append(
            f"recorded on platform {tags.get('annlab.platform')}, this is {platform}: CPU SIMD "
            "kernels or BLAS may change the last bits, so numbers are compared within "
            f"rtol=atol={TOLERANCE['rtol']} and figures by pixels "
            f"(at most {PIXEL_TOLERANCE:.1%} may differ), not bitwise")


def record_verdict(uri: str, report: Report) -> str:
    """A run tagged ``annlab.reproduces=<id>`` holding the verdict and the report."""
    tags = {"annlab.reproduces": report.run_id, "annlab.verdict": report.verdict}
    with tracking.tracked_run(uri, report.experiment_id, f"reproduce-{report.run_name}",
                              tags) as run:
        run.log_text(report.text(), "reproduce/report.txt")
        run.log_metrics({"reproduce_differences": len(report.differences)})
    return run.run_id

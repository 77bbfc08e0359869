"""Commands started at once, as two terminals or a script start them, on a machine kept busy:
a first install of .venv made once, and first runs on a brand-new store that all finish."""

import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[2]
FAST = ["train.epochs=60", "plot.frames=5", "plot.grid_size=40", "plot.dpi=40",
        "data.n_samples=200"]


def _busy(n: int) -> list[subprocess.Popen]:
    """CPU-bound processes beside the commands (load ~n on this machine's 2 cores)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def test_targets_started_at_once_install_the_environment_once(tmp_path):
    # A stand-in for python that logs when each pip step starts and ends: the lock must let
    # one target install and the others find the stamp fresh.
    fake, log = tmp_path / "python", tmp_path / "log"
    fake.write_text(f"#!/bin/bash\necho start $$ >> {log}\nsleep 1\necho end $$ >> {log}\n")
    fake.chmod(0o755)
    venv = tmp_path / "venv"
    venv.mkdir()
    procs = [subprocess.Popen(["make", "-s", "install", f"VENV={venv}", f"PY={fake}"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    events = log.read_text().split()[::2]
    assert events == ["start", "end", "start", "end"]  # two pip steps, once, never at once
    assert (venv / ".installed").exists()


def test_first_runs_started_at_once_on_a_new_store_under_load_all_finish(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    burners = _busy(2)
    try:
        runs = [subprocess.Popen(
            ["make", "-s", "run", f"ARGS={' '.join(FAST)} seed={k} tracking.uri={uri} "
             f"hydra.run.dir={tmp_path / str(k)}"], cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
            for k in range(3)]
        outs = [p.communicate(timeout=600) for p in runs]
    finally:
        _stop(burners)
    assert [p.returncode for p in runs] == [0] * 3, [err for _, err in outs]
    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "annlab"]
    found = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.params["seed"] for r in found) == [str(k) for k in range(3)]
    assert {r.info.status for r in found} == {"FINISHED"}

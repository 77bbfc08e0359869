"""Ctrl-C and SIGTERM as a user meets them: one line, the process ends as interrupted, nothing
left RUNNING. Each test waits for a phase the command shows, then signals; a terminal's Ctrl-C
reaches the whole process group (the launching process, the workers' server, the workers), so
each command runs in a process group of its own and the group is signalled. (Interrupts inside
a sweep's jobs: tests/e2e/test_sweep.py and test_tune.py; the rules themselves:
tests/unit/test_interrupts.py.)"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from annlab import tracking

REPO = Path(__file__).resolve().parents[2]
TINY = ["train.epochs=200000", "plot.frames=3", "plot.grid_size=12", "plot.dpi=30",
        "data.n_samples=120", "model.activation=tanh,relu", "model.hidden_nodes=3",
        "train.learning_rate=0.1,0.5"]


@pytest.mark.parametrize("sig, line", [(signal.SIGINT, "interrupted (Ctrl-C)"),
                                       (signal.SIGTERM, "terminated (SIGTERM)")])
def test_before_anything_is_recorded_a_signal_ends_the_command_in_one_line(sig, line):
    # What holds while a command imports and Hydra composes its config; a worker process of a
    # sweep leaves silently (its launching process reports the same Ctrl-C).
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import multiprocessing, os, signal, time
        import pipelines

        def worker():
            os.kill(os.getpid(), {int(sig)})
            time.sleep(30)

        if __name__ == "__main__":
            child = multiprocessing.get_context("fork").Process(target=worker)
            child.start()
            child.join()
            print(child.exitcode, flush=True)
            os.kill(os.getpid(), {int(sig)})
            time.sleep(30)
            print("not reached")
    """)], cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert (out.returncode, out.stdout, out.stderr) == (130, "130\n", f"{line}\n")


def _runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("annlab")
    return [] if experiment is None else client.search_runs([experiment.experiment_id])


def _interrupted_when(argv: list[str], ready, timeout: float = 180) -> tuple[int, str, str]:
    """``argv`` in a process group of its own, the group sent SIGINT (as a terminal's Ctrl-C)
    once ``ready(stdout so far)`` holds: (return code, stdout, stderr)."""
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while not ready("".join(seen)) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        stderr = proc.communicate(timeout=120)[1]
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, "".join(seen), stderr


def test_ctrl_c_as_a_sweep_launches_its_jobs_closes_its_parent_in_a_few_lines(tmp_path):
    # The parent is open and the workers' server may still be importing: the server and the
    # workers leave the Ctrl-C to the launching process.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, stdout, stderr = _interrupted_when(
        [sys.executable, "-m", "pipelines.run", "sweep=default", *TINY, "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=2", f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path / 's'}"],
        lambda out: "starting sweep" in out)
    assert code == 130, stderr
    lines = stderr.strip().splitlines()
    assert lines[0] == "interrupted (Ctrl-C): closed as KILLED:", stderr
    assert lines[-1] == ("rerun the same command to resume: finished configs are not run "
                         "again")
    runs = _runs(uri)
    assert runs and all(r.info.status == "KILLED" for r in runs)
    assert all(r.info.run_id in stderr for r in runs)  # each one said


def test_ctrl_c_during_a_run_closes_it_as_killed_in_one_line(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.connect(uri)  # created whole before this test polls it

    def running(_):
        return any(r.info.status == "RUNNING" for r in _runs(uri))

    code, _, stderr = _interrupted_when(
        [sys.executable, "-m", "pipelines.run", "train.epochs=200000", f"tracking.uri={uri}",
         f"hydra.run.dir={tmp_path / 'run'}"], running)
    (run,) = _runs(uri)
    assert code == 130 and run.info.status == "KILLED"
    assert stderr.strip().splitlines() == [
        f"interrupted (Ctrl-C): run {run.info.run_name} ({run.info.run_id}) closed as KILLED"]

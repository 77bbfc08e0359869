"""Ctrl-C while a command starts: one line, the process ends as interrupted, nothing left
RUNNING. (Later interrupts: tests/test_sweep.py and tests/test_tune.py.)

A terminal's Ctrl-C sends SIGINT to the whole process group: the launching process, the
joblib workers' fork server and the workers. Each test starts its command in a process group of
its own and signals the group, as a terminal does.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from annlab import tracking

REPO = Path(__file__).resolve().parents[1]
TINY = ["train.epochs=8", "plot.frames=2", "plot.grid_size=12", "plot.dpi=30",
        "data.n_samples=120", "model.activation=tanh,relu", "model.hidden_nodes=3",
        "train.learning_rate=0.1,0.5"]
INTERRUPTED = (130, -signal.SIGINT)  # exit(130), or ended by SIGINT as Python does


def _python(code: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=120, start_new_session=True, **kw)


def _interrupted_after(seconds: float, *args: str) -> tuple[int, str]:
    """``python -m pipelines.run <args>``, its process group sent SIGINT after ``seconds``:
    (return code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.run", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        time.sleep(seconds)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, stderr


def test_a_ctrl_c_while_configs_are_composed_is_raised_where_recording_starts():
    # Inside Hydra's and OmegaConf's composition a KeyboardInterrupt can come out as a bogus
    # config error; until interruptible() a Ctrl-C is only noted.
    out = _python("""
        import os, signal
        from pipelines import defer_interrupts, interruptible
        defer_interrupts()
        os.kill(os.getpid(), signal.SIGINT)
        print("went on", flush=True)
        interruptible()
        print("not reached", flush=True)
    """)
    assert out.returncode in INTERRUPTED
    assert out.stdout.split() == ["went", "on"]
    assert out.stderr == "interrupted (Ctrl-C)\n"  # a line, not a traceback


def test_without_a_ctrl_c_interruptible_hands_back_the_default_handler():
    out = _python("""
        import os, signal
        from pipelines import defer_interrupts, interruptible
        defer_interrupts()
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        interruptible()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
        except KeyboardInterrupt:
            print("raised at once")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "raised at once"


def test_the_fork_server_leaves_quietly_when_a_ctrl_c_reaches_its_import():
    # The same Ctrl-C reaches the launching process, which reports it.
    out = _python("""
        import builtins, os, signal
        real = builtins.__import__
        def imported(name, *args, **kw):
            if name == "annlab.pipeline":
                os.kill(os.getpid(), signal.SIGINT)
            return real(name, *args, **kw)
        builtins.__import__ = imported
        import annlab.preload
        print("imported")
    """)
    assert (out.returncode, out.stdout, out.stderr) == (128 + signal.SIGINT, "", "")


def test_a_ctrl_c_while_the_fork_server_starts_is_delivered_by_its_preload():
    # The server starts with SIGINT blocked: a Ctrl-C during Python's start and
    # multiprocessing's imports waits, and the preload delivers it where it can leave quietly.
    out = _python("""
        import os, signal
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        os.kill(os.getpid(), signal.SIGINT)
        import annlab.preload
        print("imported")
    """)
    assert (out.returncode, out.stdout, out.stderr) == (128 + signal.SIGINT, "", "")


def test_the_fork_servers_forks_get_the_default_ctrl_c_handler_back():
    out = _python("""
        import signal
        import annlab.preload
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    """)
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("seconds", [0.5, 1.5, 2.5])
def test_ctrl_c_while_a_sweep_starts_is_one_line_and_leaves_nothing_running(tmp_path, seconds):
    # On this project's 2-core machine: Python importing the entry point (0.5 s), the fork
    # server importing the pipeline (1.5 s), Hydra and the sweeper composing, the store opening
    # (2.5 s); the first jobs start after ~4 s.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.connect(uri)
    code, stderr = _interrupted_after(
        seconds, "sweep=default", *TINY, "train.epochs=200000", "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2", f"tracking.uri={uri}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert code in INTERRUPTED, stderr
    assert "Traceback" not in stderr and "rror" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last == "interrupted (Ctrl-C)" or last.startswith("rerun the same command"), stderr
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("annlab")
    runs = [] if experiment is None else client.search_runs([experiment.experiment_id])
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]


@pytest.mark.slow
@pytest.mark.parametrize("seconds", [0.8, 2.0])
def test_ctrl_c_while_a_run_starts_is_one_line(tmp_path, seconds):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, stderr = _interrupted_after(seconds, "train.epochs=200000", f"tracking.uri={uri}",
                                      f"hydra.run.dir={tmp_path / 'run'}")
    assert code in INTERRUPTED
    assert stderr.strip().splitlines() == ["interrupted (Ctrl-C)"], stderr

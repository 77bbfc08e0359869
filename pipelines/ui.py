"""`make ui`: the MLflow UI over annlab's store, opened on the experiment's training runs.

    python -m pipelines.ui [--port 5000] [--experiment annlab]

Starts `mlflow ui` on 127.0.0.1 only, waits until it answers, and prints the link that opens
the experiment's runs in MLflow's model-training view (the UI otherwise lands on its GenAI
pages). When MLFLOW_TRACKING_URI names a tracking server, prints that server's link instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from omegaconf import OmegaConf

from annlab import tracking
from annlab.paths import CONF_DIR, default_paths
from pipelines import fail


def runs_link(base: str, experiment_id: str) -> str:
    """The experiment's runs table in model-training mode (what MLflow 3.17's UI honours)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with code {proc.returncode}")
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                return
        except requests.RequestException:
            time.sleep(0.3)
    raise RuntimeError(f"mlflow ui did not answer at {url} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make ui", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--experiment",
                        default=OmegaConf.load(CONF_DIR / "tracking" / "mlflow.yaml").experiment)
    args = parser.parse_args(argv)
    uri = tracking.resolve_uri(None, default_paths().store)
    try:  # annlab creates a new store itself (whole or not at all), before the UI opens it
        experiment = tracking.open(uri, args.experiment)
    except tracking.TrackingError as err:
        fail(f"error: {err}", err, code=2)
    if tracking.is_server(uri):
        print(f"the store is a tracking server; open {runs_link(uri, experiment.id)}")
        return 0
    base = f"http://127.0.0.1:{args.port}"
    log = Path(default_paths().outputs) / f"mlflow-ui-{args.port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host",
             "127.0.0.1", "--port", str(args.port), "--workers", "1"],
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with tracking.interrupts():  # SIGTERM too: the UI's processes must stop with us
            wait_until_up(base, proc, timeout=90)
            print(f"MLflow UI: {runs_link(base, experiment.id)}\n"
                  f"  (experiment {args.experiment!r}; Ctrl-C stops it; its log is {log})\n"
                  "  Click 'Model training' once at the top left: the UI then keeps to the "
                  "training views for every page", flush=True)
            proc.wait()
            return proc.returncode
    except RuntimeError as err:
        fail(f"error: {err} (port {args.port} in use? try `make ui UI_PORT=5001`; its log: "
             f"{log})", err, code=1)
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


if __name__ == "__main__":
    sys.exit(main())

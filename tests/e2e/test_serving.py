"""From a tracked run to a served model: MLflow's own scoring server (`make serve`) answers as
the estimator does, refuses bad requests with 400s, and stops with its process group."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from annlab import names, tracking
from annlab.model_io import load_weights
from annlab.pipeline import build_data, run_experiment
from tests.servers import descendants, free_port

REPO = Path(__file__).resolve().parents[2]


def serve(uri: str, *args: str):
    """`python -m pipelines.serve ...` in its own process group, once it prints its curl line:
    (process, base URL, that line, the output so far)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.serve", "--port", str(port),
                             *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    seen: list[str] = []
    threading.Thread(target=lambda: seen.extend(proc.stdout), daemon=True).start()
    deadline = time.monotonic() + 180
    while not any("curl" in line for line in seen) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    (curl,) = [line for line in seen if "curl" in line]
    return proc, f"http://127.0.0.1:{port}", curl.strip()


def stop(proc) -> tuple[int, str]:
    group = descendants([proc.pid])
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert not descendants(group), "the scoring server outlived `make serve`"
    return proc.returncode, stderr


def post(base, payload, content="application/json"):
    body = payload if isinstance(payload, str) else json.dumps(payload)
    return requests.post(f"{base}/invocations", data=body, timeout=30,
                         headers={"Content-Type": content})


@pytest.fixture
def champion(fast_spec, store_uri, tmp_path):
    """A fast run, registered: (its spec, result, registration)."""
    spec = fast_spec()
    result = run_experiment(spec, [], tmp_path)
    return spec, result, tracking.register(tracking.connect(store_uri), result.run_id)


def test_the_champion_served_answers_as_the_estimator_and_refuses_bad_requests(
        champion, store_uri, tmp_path):
    spec, result, registered = champion
    assert registered.champion == registered.version
    run = tracking.Run(tracking.connect(store_uri), result.run_id)
    estimator = load_weights(run.download_model_file(names.WEIGHTS_FILE, tmp_path / "w"))
    splits = build_data(spec)
    X = splits.X_test  # raw features: the served model standardises them as in training
    assert splits.standardize

    def predicted(rows):
        return estimator.predict(splits.inputs(rows)).tolist()

    proc, base, curl = serve(store_uri, "--model", registered.name)
    try:
        assert curl.startswith(f"curl -s {base}/invocations")
        shown = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=60)
        assert "predictions" in json.loads(shown.stdout)  # the printed line works as it is
        rows = {"dataframe_split": {"columns": ["x1", "x2"], "data": X.tolist()}}
        answer = post(base, rows)
        assert answer.status_code == 200
        assert answer.json()["predictions"] == predicted(X)
        proba = post(base, {**rows, "params": {"predict_method": "predict_proba"}}).json()
        np.testing.assert_allclose([[p["p_0"], p["p_1"]] for p in proba["predictions"]],
                                   estimator.predict_proba(splits.inputs(X)), rtol=1e-12)
        csv = "x1,x2\n" + "\n".join(f"{a},{b}" for a, b in X[:3])
        assert post(base, csv, "text/csv").json()["predictions"] == predicted(X[:3])
        for bad in ({"dataframe_split": {"columns": ["x1"], "data": [[0.5]]}},  # a column short
                    {"dataframe_split": {"columns": ["x1", "x2"], "data": [["a", 0.5]]}},
                    {"inputs": [1.0, 2.0, 3.0]},  # a shape with no columns
                    {**rows, "params": {"predict_method": "nope"}}):
            refused = post(base, bad)
            assert refused.status_code == 400, (bad, refused.text)
            assert refused.json()["message"]
    finally:
        code, stderr = stop(proc)
    assert code == 0 and "Traceback" not in stderr, stderr


def test_a_run_is_served_by_its_id_and_a_missing_champion_is_one_line(champion, store_uri):
    _, result, _ = champion
    proc, base, _ = serve(store_uri, "--run-id", result.run_id)
    try:
        assert post(base, {"dataframe_split": {"columns": ["x1", "x2"],
                                               "data": [[-1.0, 0.5]]}}).status_code == 200
    finally:
        stop(proc)
    out = subprocess.run([sys.executable, "-m", "pipelines.serve", "--model", "nope"],
                         cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "MLFLOW_TRACKING_URI": store_uri})
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"error: no model 'nope' with a 'champion' in {store_uri}: a sweep or a study "
        "registers its best run, `make register RUN_ID=...` any run"]

"""From a tracked run to a served model: MLflow's own scoring server (`make serve`) answers as
the estimator does, refuses bad requests with 400s, and stops with its process group."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
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


@pytest.fixture(scope="module")
def trained(compose_cfg, fast_overrides, store_uri, tmp_path_factory):
    """A fast run in an experiment of its own, registered: (its spec, result, registration)."""
    from annlab.spec import resolve

    spec = resolve(compose_cfg([*fast_overrides, f"tracking.uri={store_uri}",
                                f"tracking.experiment=test-{uuid.uuid4().hex[:8]}"]))
    result = run_experiment(spec, [], tmp_path_factory.mktemp("serving"))
    return spec, result, tracking.register(tracking.connect(store_uri), result.run_id)


@pytest.fixture(scope="module")
def served(trained, store_uri):
    """The champion behind `make serve`, one server for this module's requests: (its base URL,
    the curl line printed). Stopped at the end, by its process group, with no traceback."""
    proc, base, curl = serve(store_uri, "--model", trained[2].name)
    yield base, curl
    code, stderr = stop(proc)
    assert code == 0 and "Traceback" not in stderr, stderr


@pytest.fixture(scope="module")
def predicted(trained, store_uri, tmp_path_factory):
    """predicted(rows, proba=False) -> the estimator's own classes (or probabilities) for
    raw feature rows."""
    spec, result, _ = trained
    run = tracking.Run(tracking.connect(store_uri), result.run_id)
    estimator = load_weights(run.download_model_file(names.WEIGHTS_FILE,
                                                     tmp_path_factory.mktemp("weights")))
    splits = build_data(spec)  # raw features: the served model standardises them as in training
    assert splits.standardize
    return lambda rows, proba=False: (estimator.predict_proba if proba else estimator.predict)(
        splits.inputs(np.asarray(rows, dtype=np.float64))).tolist()


def test_the_champion_served_answers_as_the_estimator(trained, served, predicted):
    spec, _, registered = trained
    base, curl = served
    assert registered.champion == registered.version
    X = build_data(spec).X_test
    assert curl.startswith(f"curl -s {base}/invocations")
    shown = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=60)
    assert "predictions" in json.loads(shown.stdout)  # the printed line works as it is
    rows = {"dataframe_split": {"columns": ["x1", "x2"], "data": X.tolist()}}
    answer = post(base, rows)
    assert answer.status_code == 200
    assert answer.json()["predictions"] == predicted(X)
    proba = post(base, {**rows, "params": {"predict_method": "predict_proba"}}).json()
    np.testing.assert_allclose([[p["p_0"], p["p_1"]] for p in proba["predictions"]],
                               predicted(X, proba=True), rtol=1e-12)
    csv = "x1,x2\n" + "\n".join(f"{a},{b}" for a, b in X[:3])
    assert post(base, csv, "text/csv").json()["predictions"] == predicted(X[:3])


MAX = float(np.finfo(np.float64).max)
JSON, CSV = "application/json", "text/csv"


def split(rows, columns=("x1", "x2"), **extra) -> str:
    """A dataframe_split body; NaN and infinities as Python's json writes them."""
    return json.dumps({"dataframe_split": {"columns": list(columns), "data": rows}, **extra})


def records(*rows) -> str:
    return json.dumps({"dataframe_records": list(rows)})


def finite_only(column, row, value) -> str:
    return f"{column} in row {row} is {value}: the model scores finite numbers only"


# Refused by the model: one line, exactly this.
REFUSED = [
    pytest.param(split([[0.1, 0.2], [float("nan"), 0.5]]), JSON,
                 finite_only("x1", 1, "missing (NaN or null)"), id="NaN"),
    pytest.param(records({"x1": 0.1, "x2": None}), JSON,
                 finite_only("x2", 0, "missing (NaN or null)"), id="null"),
    pytest.param(split([[0.1, float("inf")]]), JSON, finite_only("x2", 0, "inf"), id="Infinity"),
    pytest.param(split([[float("-inf"), 0.2], [float("nan"), 0.1]]), JSON,
                 finite_only("x1", 0, "-inf") + " (and 1 more like it)", id="-Infinity"),
    pytest.param('{"dataframe_split": {"columns": ["x1", "x2"], "data": [[0.5, 1e309]]}}', JSON,
                 finite_only("x2", 0, "inf"), id="1e309"),
    pytest.param(split([[-MAX, 0.5]]), JSON,
                 f"x1 in row 0 is {-MAX!r}: too large for the model (standardised as in "
                 "training, it overflows float64)", id="-1.8e308"),
    pytest.param(split([]), JSON, "the request has no rows: the model scores rows of x1, x2",
                 id="no rows"),
    pytest.param("x1,x2\n", CSV, "the request has no rows: the model scores rows of x1, x2",
                 id="CSV no rows"),
    pytest.param("x1,x2\n0.1,0.2\n0.3,\n", CSV, finite_only("x2", 1, "missing (NaN or null)"),
                 id="CSV empty cell"),
    pytest.param(split([[0.1, 0.2]], params={"predict_method": "nope"}), JSON,
                 "predict_method='nope'; allowed: predict | predict_proba",
                 id="unknown predict_method"),
]

# Refused by MLflow before the model sees them (its signature and parsers): MLflow's message,
# which names the column (or the JSON fields it takes).
REFUSED_BY_MLFLOW = [
    pytest.param(split([[0.5]], ["x1"]), JSON, "Model is missing inputs ['x2']",
                 id="a column short"),
    pytest.param(records({"x1": 0.5}), JSON, "Model is missing inputs ['x2']",
                 id="records a column short"),
    pytest.param(json.dumps({"inputs": [1.0, 2.0, 3.0]}), JSON,
                 "Model is missing inputs ['x1', 'x2']", id="rows without columns"),
    pytest.param(split([["a", 0.5]]), JSON,
                 "Failed to convert column x1 to type 'float64'", id="a string"),
    pytest.param(split([[0.5, {"a": 1}]]), JSON,
                 "Failed to convert column x2 to type 'float64'", id="an object"),
    pytest.param(split([[[1, 2], 0.5]]), JSON,
                 "Failed to convert column x1 to type 'float64'", id="a list"),
    pytest.param(split([[10 ** 400, 0.5]]), JSON,
                 "Failed to convert column x1 to type 'float64'", id="an int beyond float"),
    pytest.param(split([[0.5]]), JSON, "2 columns passed, passed data had 1 columns",
                 id="a row short"),
    pytest.param(json.dumps({"rows": [[0.1, 0.2]]}), JSON, "dataframe_split",
                 id="an unknown JSON field"),
    pytest.param(json.dumps([[0.1, 0.2]]), JSON, "Received a list", id="a JSON list"),
    pytest.param("x1 x2", JSON, "valid JSON", id="not JSON"),
    pytest.param("x1,x2\na,0.5\n", CSV, "could not convert string to float: 'a'",
                 id="CSV a string", marks=pytest.mark.xfail(
                     strict=True, reason="MLflow's CSV parser answers with its stack_trace "
                     "(scoring_server.parse_csv_input), before the model is called")),
]


def refusal(base: str, body: str, content: str) -> str:
    """The message of the 400 ``body`` gets, once its JSON is checked to carry no stack trace."""
    refused = post(base, body, content)
    assert refused.status_code == 400, refused.text
    assert "stack_trace" not in refused.json() and "Traceback" not in refused.text, refused.text
    return refused.json()["message"]


@pytest.mark.parametrize("body, content, message", REFUSED)
def test_a_request_the_model_cannot_score_is_a_400_in_one_line_naming_column_row_and_value(
        served, body, content, message):
    assert refusal(served[0], body, content) == message


@pytest.mark.parametrize("body, content, message", REFUSED_BY_MLFLOW)
def test_a_request_mlflow_refuses_first_is_a_400_naming_the_column_without_a_stack_trace(
        served, body, content, message):
    assert message in refusal(served[0], body, content)


def test_extra_columns_and_huge_values_the_network_can_take_are_scored(served, predicted):
    """An extra column is ignored (MLflow's signature check drops it); 1e308, standardised,
    stays finite and tanh saturates: the estimator's own answer."""
    base, _ = served
    rows = [[0.1, 0.2], [-1.0, 0.5]]
    answer = post(base, split([[*r, "anything"] for r in rows], ["x1", "x2", "x3"]))
    assert answer.status_code == 200 and answer.json()["predictions"] == predicted(rows)
    huge = [[1e308, 0.5], [0.5, 0.2]]
    assert post(base, split(huge)).json()["predictions"] == predicted(huge)


def test_a_run_is_served_by_its_id_and_a_missing_champion_is_one_line(trained, store_uri):
    _, result, _ = trained
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


@pytest.mark.parametrize("port, message", [
    (None, "SERVE_PORT={port} on 127.0.0.1 is not available (Address already in use); "
           "choose another, e.g. SERVE_PORT={next}"),
    (99999, "SERVE_PORT=99999 is not a port number; allowed: 1-65535"),
    (0, "SERVE_PORT=0 is not a port number; allowed: 1-65535"),
], ids=["busy", "99999", "0"])
def test_a_busy_or_impossible_port_is_one_line_before_anything_starts(store_uri, port, message):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = port if port is not None else busy.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "pipelines.serve", "--port", str(port)],
                             cwd=REPO, capture_output=True, text=True, timeout=60,
                             env={**os.environ, "MLFLOW_TRACKING_URI": store_uri})
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.splitlines() == [f"error: {message.format(port=port, next=port + 1)}"]

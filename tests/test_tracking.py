"""The MLflow module: one-time store set-up, runs that always end, a dead server said fast."""

import socket
import time

import pytest
from mlflow.tracking import MlflowClient

from annlab import tracking


def test_prepare_creates_the_experiment_once_with_its_kind(store_uri, experiment):
    first = tracking.prepare(store_uri, experiment)
    assert tracking.prepare(store_uri, experiment) == first
    exp = MlflowClient(store_uri).get_experiment(first)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.artifact_location.endswith("/mlartifacts")


@pytest.mark.parametrize("raised, status", [(RuntimeError("boom"), "FAILED"),
                                            (KeyboardInterrupt(), "KILLED")])
def test_a_run_that_raises_ends_with_a_status_and_reason(store_uri, experiment, raised, status):
    exp_id = tracking.prepare(store_uri, experiment)
    with pytest.raises(type(raised)), tracking.tracked_run(store_uri, exp_id, "r", {}) as run:
        run.log_metrics({"x": 1.0})
        raise raised
    got = MlflowClient(store_uri).get_run(run.run_id)
    assert got.info.status == status
    assert got.data.tags[tracking.FAILURE_TAG] in ("boom", "interrupted (Ctrl-C)")
    assert got.data.metrics["x"] == 1.0  # what was recorded stays


def test_history_is_logged_whole_in_batches(store_uri, experiment):
    import pandas as pd

    exp_id = tracking.prepare(store_uri, experiment)
    history = pd.DataFrame({"a": range(1500), "b": range(1500)}, index=range(1, 1501))
    with tracking.tracked_run(store_uri, exp_id, "r", {}) as run:
        run.log_history(history)
    points = MlflowClient(store_uri).get_metric_history(run.run_id, "b")
    assert sorted((p.step, p.value) for p in points) == [(i + 1, float(i)) for i in range(1500)]


def test_unreachable_server_is_reported_within_seconds():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    start = time.monotonic()
    with pytest.raises(tracking.TrackingError, match="unreachable"):
        tracking.prepare(f"http://127.0.0.1:{port}", "x")
    assert time.monotonic() - start < 10


def test_uri_precedence(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/env.db")
    assert tracking.resolve_uri("sqlite:////tmp/cfg.db") == "sqlite:////tmp/cfg.db"
    assert tracking.resolve_uri(None) == "sqlite:////tmp/env.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.resolve_uri(None) == f"sqlite:///{tracking.DEFAULT_STORE}"

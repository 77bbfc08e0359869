"""The saved model: weights without pickles, and the served model taking raw features."""

import functools
import json

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from annlab import model_io, training
from annlab.pipeline import build_data, build_model


def test_the_saved_model_takes_raw_features_and_standardises_them(resolved, tmp_path):
    spec = resolved(["data=iris", "train.epochs=50"])
    raw = build_data(spec)
    splits, model = raw.scaled(), build_model(spec)
    training.train(model, splits, [])
    path = model_io.save_weights(model, tmp_path / "w.npz", raw.scaler)
    served = model_io._load_pyfunc(str(path))
    table = model_io.features(raw.X_test)
    assert list(table.columns) == ["x1", "x2", "x3", "x4"]
    np.testing.assert_array_equal(served.predict(table), model.predict(splits.X_test))
    np.testing.assert_array_equal(
        served.predict(table, {"predict_method": "predict_proba"}).to_numpy(),
        model.predict_proba(splits.X_test))


def test_weights_load_back_bit_for_bit_without_a_scaler(resolved, tmp_path):
    spec = resolved(["train.epochs=20", "model.hidden_nodes=[4,3]"])
    splits, model = build_data(spec).scaled(), build_model(spec)
    training.train(model, splits, [])
    path = model_io.save_weights(model, tmp_path / "n.npz")
    assert model_io.load_scaling(path) is None
    loaded = model_io.load_weights(path)
    for a, b in zip(loaded.coefs_ + loaded.intercepts_, model.coefs_ + model.intercepts_):
        np.testing.assert_array_equal(a, b)
    assert (loaded.activation, loaded.n_iter_, list(loaded.classes_)) == ("tanh", 20, [0, 1])
    np.testing.assert_array_equal(loaded.predict_proba(splits.X_test),
                                  model.predict_proba(splits.X_test))
    with np.load(path, allow_pickle=False) as f:  # nothing in it needs unpickling
        assert all(f[k].dtype != object for k in f.files)


MAX = float(np.finfo(np.float64).max)


@pytest.fixture(scope="module")
def served(resolved):
    """served(activation) -> a small moons network as the pyfunc flavour loads it, its inputs
    standardised with a scale of 0.5 (so the largest floats overflow there), and the network."""
    @functools.cache
    def _make(activation="tanh"):
        spec = resolved(["train.epochs=20", "data.n_samples=200",
                         f"model.activation={activation}"])
        model = build_model(spec)
        training.train(model, build_data(spec).scaled(), [])
        return model_io.PyfuncModel(model, (np.zeros(2), np.full(2, 0.5))), model
    return _make


def refusal(served_model, model_input, params=None) -> str:
    """The one line ``predict`` refuses ``model_input`` with, as MLflow's 400 (no stack trace)."""
    with pytest.raises(MlflowException) as caught:
        served_model.predict(model_input, params)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert caught.value.get_http_status_code() == 400
    # MLflow's scoring server writes the request's whole table before the message; the JSON
    # body it sends keeps the one line.
    caught.value.message = f"Failed to predict data '{model_input}'. \nError: {caught.value}"
    body = json.loads(caught.value.serialize_as_json())
    assert "stack_trace" not in body and "\n" not in body["message"], body
    return body["message"]


def frame(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


@pytest.mark.parametrize("model_input, message", [
    (frame(x1=[0.1, np.nan], x2=[0.2, 0.3]),
     "x1 in row 1 is missing (NaN or null): the model scores finite numbers only"),
    (frame(x1=[0.1, 0.2], x2=[0.3, None]),
     "x2 in row 1 is missing (NaN or null): the model scores finite numbers only"),
    (frame(x1=pd.array([0.1, pd.NA], dtype="Float64"), x2=[0.2, 0.3]),
     "x1 in row 1 is missing (NaN or null): the model scores finite numbers only"),
    (frame(x1=[np.inf, 0.1, -np.inf], x2=[0.2, np.nan, 0.3]),
     "x1 in row 0 is inf: the model scores finite numbers only (and 2 more like it)"),
    (frame(x1=[0.1, 0.2, 0.3], x2=[0.4, 0.5, -np.inf]),
     "x2 in row 2 is -inf: the model scores finite numbers only"),
    (frame(x1=[0.1], x2=[-MAX]),
     f"x2 in row 0 is {-MAX!r}: too large for the model (standardised as in training, it "
     "overflows float64)"),
    (frame(x1=[], x2=[]), "the request has no rows: the model scores rows of x1, x2"),
    (frame(x1=[0.5]), "column x2 missing: the model takes the columns x1, x2 (got x1)"),
    (frame(), "column x1, x2 missing: the model takes the columns x1, x2 (got none)"),
    (frame(x1=[0.1, "a"], x2=[0.2, 0.3]), "x1 in row 1 is 'a': not a number"),
    (frame(x1=[0.1, 0.2], x2=[0.2, {"a": 1}]), "x2 in row 1 is {'a': 1}: not a number"),
    (frame(x1=[[1.0, 2.0]], x2=[0.5]), "x1 in row 0 is [1.0, 2.0]: not a number"),
    (frame(x1=["x" * 100], x2=[0.5]), f"x1 in row 0 is '{'x' * 36}...: not a number"),
    (pd.DataFrame([[0.1, 0.2, 0.3]], columns=["x1", "x1", "x2"]),
     "column x1 given more than once"),
    (np.array([1.0, 2.0, 3.0]),
     "the model takes a table of the columns x1, x2; got ndarray of shape (3,)"),
    ([[1.0, 2.0], [3.0]], "the model takes a table of the columns x1, x2; got list of shape (2,)"),
    ([[1.0, 2.0, 3.0]],
     "the model takes a table of the columns x1, x2; got list of shape (1, 3)"),
], ids=["NaN", "None", "pd.NA", "inf and more", "-inf", "overflow", "no rows", "a column short",
        "no columns", "a string", "a dict", "a list", "a long string", "a column twice",
        "1-d array", "ragged rows", "too wide"])
def test_a_request_the_model_cannot_score_is_refused_naming_column_row_and_value(
        served, model_input, message):
    served_model, _ = served()
    assert refusal(served_model, model_input) == message


def test_an_unknown_predict_method_is_refused_naming_the_allowed_ones(served):
    served_model, _ = served()
    assert refusal(served_model, frame(x1=[0.1], x2=[0.2]), {"predict_method": "nope"}) == (
        "predict_method='nope'; allowed: predict | predict_proba")


def test_huge_finite_values_are_scored_where_the_network_stays_finite(served):
    """tanh saturates: the largest floats get the network's limit; ReLU's output overflows
    and is refused, naming the row's largest input."""
    tanh, network = served("tanh")
    huge = frame(x1=[MAX / 4, 0.1], x2=[0.2, -MAX / 4])
    X = huge.to_numpy() / 0.5
    np.testing.assert_array_equal(tanh.predict(huge), network.predict(X))
    np.testing.assert_array_equal(
        tanh.predict(huge, {"predict_method": "predict_proba"}).to_numpy(),
        network.predict_proba(X))
    assert np.isfinite(network.predict_proba(X)).all()
    relu, network = served("relu")
    huge = frame(x1=[0.1, 0.2], x2=[0.3, MAX / 2])  # standardised: MAX, still finite
    with np.errstate(all="ignore"):
        assert not np.isfinite(network.predict_proba(huge.to_numpy() / 0.5)[1]).all()
    assert refusal(relu, huge) == (f"x2 in row 1 is {MAX / 2!r}: too large for the model (the "
                                   "network's output overflows float64)")


def test_valid_requests_are_scored_as_before_whatever_their_form(served):
    """Extra columns are ignored (as MLflow's signature check ignores them), columns are taken
    by name in any order, numbers given as strings or ints convert as MLflow converts them."""
    served_model, network = served()
    X = np.array([[0.1, 0.2], [-1.0, 0.5], [2.0, -0.3]])
    expected = network.predict(X / 0.5)
    for model_input in (X, X.tolist(), frame(x1=X[:, 0], x2=X[:, 1]),
                        frame(x2=X[:, 1], extra=["a", "b", "c"], x1=X[:, 0]),
                        frame(x1=[str(v) for v in X[:, 0]], x2=X[:, 1].astype(object))):
        np.testing.assert_array_equal(served_model.predict(model_input), expected)

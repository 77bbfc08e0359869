"""The saved model: weights without pickles, and the served model taking raw features."""

import numpy as np

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

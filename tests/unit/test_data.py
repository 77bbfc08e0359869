"""The data stage: exact, stratified, seeded splits of every dataset, a scaler that sees only
the training split, and a hash that tracks their content."""

import re

import numpy as np
import pytest

from annlab import training
from annlab.config import ConfigError, dataset_shape, validate
from annlab.data import Splits, derive_seed, make_splits
from annlab.paths import CONF_DIR
from annlab.pipeline import build_data, build_model
from annlab.rules import DATASETS


def moons(n_samples=1000, noise=0.2, train=0.6, val=0.2, standardize=False) -> dict:
    return {"name": "moons", "n_samples": n_samples, "noise": noise, "train_fraction": train,
            "val_fraction": val, "standardize": standardize}


def test_split_sizes_and_stratification():
    s = make_splits(moons(), seed=0)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (600, 200, 200)
    for y in (s.y_train, s.y_val, s.y_test):
        assert np.bincount(y)[0] == len(y) // 2
    rows = np.concatenate([s.X_train, s.X_val, s.X_test])
    assert len(np.unique(rows, axis=0)) == 1000  # disjoint


def test_same_seed_same_bits_other_seed_other_data():
    a, b, c = (make_splits(moons(300, 0.1, 0.5, 0.25), seed) for seed in (3, 3, 4))
    assert a.digest() == b.digest() != c.digest()
    assert all(np.array_equal(x, y) for x, y in zip(a.arrays().values(), b.arrays().values()))


def test_streams_get_independent_seeds():
    assert derive_seed(0, "data") != derive_seed(0, "model")
    assert derive_seed(0, "data") == derive_seed(0, "data") != derive_seed(1, "data")


@pytest.mark.parametrize("standardize", [False, True])
def test_save_and_load_round_trip(tmp_path, standardize):
    s = make_splits(moons(100, 0.3, standardize=standardize), seed=1)
    s.save(tmp_path / "s.npz")
    assert Splits.load(tmp_path / "s.npz").digest() == s.digest()


def test_the_scaler_is_fitted_on_the_training_split_only():
    s = make_splits(moons(standardize=True), seed=0)
    np.testing.assert_allclose(s.scaler.mean_, s.X_train.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.scaler.scale_, s.X_train.std(axis=0), rtol=1e-12)
    # Other validation and test rows: the same scaler, to the bit.
    other = Splits(s.X_train, s.y_train, s.X_val * 100 + 7, s.y_val, s.X_test - 50, s.y_test,
                   standardize=True)
    assert np.array_equal(other.scaler.mean_, s.scaler.mean_)
    assert np.array_equal(other.scaler.scale_, s.scaler.scale_)
    seen = s.scaled()
    np.testing.assert_allclose(seen.X_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(seen.X_train.std(axis=0), 1, rtol=1e-12)
    assert abs(seen.X_val.mean()) > 1e-6  # the validation rows are transformed, not refitted
    np.testing.assert_array_equal(seen.X_test, (s.X_test - s.scaler.mean_) / s.scaler.scale_)


def test_the_data_hash_covers_the_scaler():
    raw, scaled = (make_splits(moons(standardize=flag), seed=0) for flag in (False, True))
    assert raw.digest() != scaled.digest()
    assert raw.scaled() is raw and raw.inputs(raw.X_val) is raw.X_val


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_dataset_config_composes_and_has_the_shape_it_states(compose_cfg, name):
    cfg = compose_cfg([f"data={name}"])
    validate(cfg)
    shape = dataset_shape(cfg.data)
    s = build_data(cfg)
    X = np.concatenate([s.X_train, s.X_val, s.X_test])
    y = np.concatenate([s.y_train, s.y_val, s.y_test])
    assert X.shape == (shape["n_samples"], shape["n_features"])
    assert sorted(np.unique(y)) == list(range(shape["n_classes"]))
    for part in (s.y_train, s.y_val, s.y_test):  # stratified: every class in every split
        assert len(np.unique(part)) == shape["n_classes"]
    assert s.standardize and build_data(cfg).digest() == s.digest()


@pytest.mark.parametrize("overrides, key, allowed", [
    (["data=iris", "data.noise=0.1"], "data.noise", "null: data.name=iris (load_iris) takes "
                                                    "no generator settings"),
    (["data=moons", "data.factor=0.5"], "data.factor", "takes data.n_samples, data.noise"),
    (["data=circles", "data.factor=1.5"], "data.factor", "strictly between 0 and 1"),
    (["data=blobs", "data.n_classes=9"], "data.n_classes", "an integer from 2 to 6"),
    (["data=blobs", "data.cluster_std=0"], "data.cluster_std", "a number > 0"),
    (["data=classification", "data.n_informative=2", "data.n_classes=3"],
     "data.n_informative", "2 * n_classes <= 2 ** n_informative"),
    (["data=classification", "data.n_informative=9"], "data.n_informative + data.n_redundant",
     "at most data.n_features=10"),
    (["data.name=mnist"], "data.name", "moons | circles | blobs"),
    (["data=iris", "data.train_fraction=0.96", "data.val_fraction=0.02",
      "data.test_fraction=0.02"], "data.n_samples", "at least 2 per class"),
])
def test_generator_settings_are_checked_like_every_key(compose_cfg, overrides, key, allowed):
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg(overrides))
    assert info.value.key == key and allowed in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", [d for d in DATASETS if d != "moons"])
def test_each_datasets_experiment_reaches_the_test_accuracy_it_states(compose_cfg, name):
    text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
    stated = float(re.search(r"test accuracy\s+#\s+is ([\d.]+)", text)[1])
    cfg = compose_cfg([f"experiment={name}"])
    validate(cfg)
    assert cfg.data.name == name
    splits, model = build_data(cfg).scaled(), build_model(cfg)
    training.train(model, splits, [])
    assert training.evaluate(model, splits)["test_accuracy"] >= stated - 5e-4


def test_the_saved_model_takes_raw_features_and_standardises_them(compose_cfg, tmp_path):
    from annlab import model_io

    cfg = compose_cfg(["data=iris", "train.epochs=50"])
    raw = build_data(cfg)
    splits, model = raw.scaled(), build_model(cfg)
    training.train(model, splits, [])
    path = model_io.save_weights(model, tmp_path / "w.npz", raw.scaler)
    served = model_io._load_pyfunc(str(path))
    table = model_io.features(raw.X_test)
    assert list(table.columns) == ["x1", "x2", "x3", "x4"]
    np.testing.assert_array_equal(served.predict(table), model.predict(splits.X_test))
    np.testing.assert_array_equal(
        served.predict(table, {"predict_method": "predict_proba"}).to_numpy(),
        model.predict_proba(splits.X_test))
    assert model_io.load_scaling(model_io.save_weights(model, tmp_path / "n.npz")) is None

"""The data stage: exact, stratified, seeded splits of every dataset, a scaler that sees only
the training split, and a hash that tracks their content."""

import re

import numpy as np
import pytest

from annlab import training
from annlab.data import Splits, derive_seed, make_splits
from annlab.paths import CONF_DIR
from annlab.pipeline import build_data, build_model
from annlab.rules import DATASETS


@pytest.fixture(scope="module")
def moons(resolved):
    """moons(n_samples, noise, train, val, standardize) -> the data spec of those settings."""
    def _moons(n_samples=1000, noise=0.2, train=0.6, val=0.2, standardize=False):
        return resolved([f"data.n_samples={n_samples}", f"data.noise={noise}",
                         f"data.train_fraction={train}", f"data.val_fraction={val}",
                         f"data.test_fraction={round(1 - train - val, 10)}",
                         f"data.standardize={standardize}"]).data
    return _moons


@pytest.mark.parametrize("name, labels", [
    ("iris", ["setosa", "versicolor", "virginica"]), ("wine", ["class_0", "class_1", "class_2"]),
    ("breast_cancer", ["benign", "malignant"]), ("moons", [0, 1])])
def test_labels_are_the_datasets_own_names_of_its_classes(resolved, name, labels):
    y = build_data(resolved([f"data={name}"])).y_train
    assert sorted(np.unique(y).tolist()) == labels


def test_configs_recorded_before_class_names_keep_their_numbers(resolved):
    assert sorted(np.unique(build_data(resolved(["data=iris", "data.label_names=null"])).y_train)
                  ) == [0, 1, 2]


def test_split_sizes_and_stratification(moons):
    s = make_splits(moons(), seed=0)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (600, 200, 200)
    for y in (s.y_train, s.y_val, s.y_test):
        assert np.bincount(y)[0] == len(y) // 2
    rows = np.concatenate([s.X_train, s.X_val, s.X_test])
    assert len(np.unique(rows, axis=0)) == 1000  # disjoint


def test_same_seed_same_bits_other_seed_other_data(moons):
    a, b, c = (make_splits(moons(300, 0.1, 0.5, 0.25), seed) for seed in (3, 3, 4))
    assert a.digest() == b.digest() != c.digest()
    assert all(np.array_equal(x, y) for x, y in zip(a.arrays().values(), b.arrays().values()))


def test_streams_get_independent_seeds():
    assert derive_seed(0, "data") != derive_seed(0, "model")
    assert derive_seed(0, "data") == derive_seed(0, "data") != derive_seed(1, "data")


@pytest.mark.parametrize("standardize", [False, True])
def test_save_and_load_round_trip(moons, tmp_path, standardize):
    s = make_splits(moons(100, 0.3, standardize=standardize), seed=1)
    s.save(tmp_path / "s.npz")
    assert Splits.load(tmp_path / "s.npz").digest() == s.digest()


def test_the_scaler_is_fitted_on_the_training_split_only(moons):
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


def test_the_data_hash_covers_the_scaler(moons):
    raw, scaled = (make_splits(moons(standardize=flag), seed=0) for flag in (False, True))
    assert raw.digest() != scaled.digest()
    assert raw.scaled() is raw and raw.inputs(raw.X_val) is raw.X_val


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_dataset_has_the_shape_it_states_and_every_class_in_every_split(resolved, name):
    spec = resolved([f"data={name}"])
    s = build_data(spec)
    X = np.concatenate([s.X_train, s.X_val, s.X_test])
    y = np.concatenate([s.y_train, s.y_val, s.y_test])
    shape = spec.data.shape
    assert X.shape == (shape.n_samples, shape.n_features)
    assert len(np.unique(y)) == shape.n_classes
    for part in (s.y_train, s.y_val, s.y_test):  # stratified: every class in every split
        assert len(np.unique(part)) == shape.n_classes
    assert s.standardize and build_data(spec).digest() == s.digest()


@pytest.mark.parametrize("name", [d for d in DATASETS if d != "moons"])
def test_each_datasets_experiment_reaches_the_test_accuracy_it_states(resolved, name):
    text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
    stated = float(re.search(r"test accuracy\s+#\s+is ([\d.]+)", text)[1])
    spec = resolved([f"experiment={name}"])
    assert spec.data.name == name
    splits, model = build_data(spec).scaled(), build_model(spec)
    training.train(model, splits, [])
    assert training.evaluate(model, splits)["test_accuracy"] >= stated - 5e-4


@pytest.mark.parametrize("overrides, key", [
    (["data=iris", "data.train_fraction=0.96", "data.val_fraction=0.02",
      "data.test_fraction=0.02"], "data.*_fraction"),  # iris takes no data.n_samples
    (["data.n_samples=20", "data.train_fraction=0.8", "data.val_fraction=0.1",
      "data.test_fraction=0.1"], "data.n_samples"),
])
def test_too_few_samples_for_a_split_names_a_key_the_dataset_takes(resolved, overrides, key):
    from annlab.config import ConfigError

    with pytest.raises(ConfigError, match="at least 2 per class") as info:
        resolved(overrides)
    assert info.value.key == key

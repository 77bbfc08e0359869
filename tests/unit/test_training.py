"""The train and evaluate stages: snapshots where asked, an early stop, whole epochs only, and
scores that count."""

import numpy as np
import pytest

from annlab import training
from annlab.data import make_splits
from annlab.network import NeuralNetClassifier


@pytest.fixture(scope="module")
def splits(resolved):
    return make_splits(resolved(["data.n_samples=200"]).data, seed=0).scaled()


def test_frame_epochs_spread_from_the_untrained_network_to_the_last():
    assert list(training.frame_epochs(1000, 5)) == [0, 250, 500, 750, 1000]
    assert list(training.frame_epochs(3, 10)) == [0, 1, 2, 3]


def test_spread_keeps_the_first_and_the_last():
    assert training.spread([1, 2, 3, 4, 5, 6, 7], 3) == [1, 4, 7]
    assert training.spread([5, 9], 10) == [5, 9] and training.spread([1, 2], 0) == []


def test_snapshots_are_taken_at_the_epochs_asked_with_copies_of_the_weights(splits):
    model = NeuralNetClassifier(hidden_nodes=4, epochs=30, random_state=0)
    snapshots = training.train(model, splits, [0, 10, 30])
    assert [s.epoch for s in snapshots] == [0, 10, 30]
    assert not np.array_equal(snapshots[0].coefs[0], snapshots[-1].coefs[0])
    np.testing.assert_array_equal(snapshots[-1].coefs[0], model.coefs_[0])
    assert snapshots[-1].coefs[0] is not model.coefs_[0]
    assert snapshots[-1].train_misclassification == model.history_["train_misclassification"][-1]


def test_the_epoch_0_snapshot_is_the_untrained_network_and_its_score(splits):
    model = NeuralNetClassifier(hidden_nodes=4, epochs=5, random_state=0)
    (start, _) = training.train(model, splits, [0, 5])
    untrained = NeuralNetClassifier(hidden_nodes=4, epochs=5, random_state=0)
    untrained._initialise(splits.X_train.shape[1], np.unique(splits.y_train))
    np.testing.assert_array_equal(start.coefs[0], untrained.coefs_[0])
    assert start.train_misclassification == np.mean(
        untrained.predict(splits.X_train) != splits.y_train)


def test_a_stop_ends_training_and_the_last_epoch_gets_a_snapshot(splits):
    model = NeuralNetClassifier(hidden_nodes=4, epochs=30, random_state=0)
    snapshots = training.train(model, splits, [1, 30], stop=lambda m: m.n_iter_ >= 12)
    assert model.n_iter_ == 12 and [s.epoch for s in snapshots] == [1, 12]
    never = NeuralNetClassifier(hidden_nodes=4, epochs=30, random_state=0)
    training.train(never, splits, [], stop=lambda m: True)  # asked after the first epoch only
    assert never.n_iter_ == 1
    history = training.history_frame(model)
    assert list(history.index) == list(range(1, 13)) and history.index.name == "epoch"
    assert set(history.columns) == {"train_loss", "train_misclassification", "val_loss",
                                    "val_misclassification"}


def test_the_history_keeps_whole_epochs_only():
    model = NeuralNetClassifier()
    model.history_ = {"train_loss": [0.9, 0.8, 0.7], "val_loss": [1.0, 0.9]}  # cut mid-epoch
    assert list(training.history_frame(model).index) == [1, 2]


def test_scores_count_the_right_answers_of_every_split(splits):
    model = NeuralNetClassifier(hidden_nodes=4, epochs=50, random_state=0)
    training.train(model, splits, [])
    scores = training.evaluate(model, splits)
    assert list(scores) == list(training.FINAL_METRICS)
    right = np.count_nonzero(model.predict(splits.X_test) == splits.y_test)
    assert scores["test_accuracy"] == right / len(splits.y_test)
    assert scores["test_accuracy"] + scores["test_misclassification"] == 1

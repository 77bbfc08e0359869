"""The numpy network: exact gradients, scikit-learn equivalence, estimator contract."""

import copy
import warnings

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from annlab.network import (
    ACTIVATIONS,
    DivergenceError,
    NeuralNetClassifier,
    forward,
    gradients,
    loss,
)


def _problem(n_classes, activation, hidden=(5,), n=30, n_features=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    y = rng.integers(0, n_classes, size=n)
    model = NeuralNetClassifier(hidden_nodes=hidden, activation=activation, reg_lambda=0.3,
                                random_state=seed)
    model._initialise(n_features, np.arange(n_classes))
    return X, y, np.eye(n_classes)[y], model


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("hidden", [(5,), (4, 3)])
def test_gradients_match_central_finite_differences(activation, n_classes, hidden):
    X, y, Y, m = _problem(n_classes, activation, hidden)
    params = m.coefs_ + m.intercepts_

    def objective():
        return loss(forward(X, m.coefs_, m.intercepts_, activation)[1], Y, m.coefs_, 0.3)

    acts, logp = forward(X, m.coefs_, m.intercepts_, activation)
    grad_W, grad_b = gradients(acts, logp, Y, m.coefs_, activation, 0.3)
    analytic = np.concatenate([g.ravel() for g in grad_W + grad_b])
    numeric = []
    eps = 1e-6
    for p in params:
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up = objective()
            p[i] = old - eps
            down = objective()
            p[i] = old
            numeric.append((up - down) / (2 * eps))
    numeric = np.array(numeric)
    rel = np.linalg.norm(analytic - numeric) / np.linalg.norm(analytic + numeric)
    assert rel <= 1e-6


@pytest.mark.parametrize("activation, sk_name",
                         [("tanh", "tanh"), ("sigmoid", "logistic"), ("relu", "relu")])
def test_one_full_batch_epoch_equals_sklearn_sgd_step(activation, sk_name):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(90, 4))
    y = np.repeat([0, 1, 2], 30)
    ours = NeuralNetClassifier(hidden_nodes=6, activation=activation, learning_rate=0.3,
                               reg_lambda=0.7, random_state=3)
    ours._initialise(4, np.arange(3))
    start = ([W.copy() for W in ours.coefs_], [b.copy() for b in ours.intercepts_])
    ours.partial_fit(X, y)

    sk = MLPClassifier(hidden_layer_sizes=(6,), activation=sk_name, solver="sgd", momentum=0.0,
                       nesterovs_momentum=False, alpha=0.7, learning_rate_init=0.3,
                       batch_size=len(X), shuffle=False, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.partial_fit(X, y, classes=[0, 1, 2])  # initialises its state (and takes a step)
        sk.coefs_ = [W.copy() for W in start[0]]
        sk.intercepts_ = [b.copy() for b in start[1]]
        sk.partial_fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@parametrize_with_checks([NeuralNetClassifier(epochs=200), NeuralNetClassifier(
    hidden_nodes=(6, 4), activation="relu", batch_size=16, epochs=100)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_fit_equals_repeated_partial_fit_bitwise():
    X, y, _, _ = _problem(2, "tanh", n=50)
    fitted = NeuralNetClassifier(epochs=25, random_state=7).fit(X, y)
    stepped = NeuralNetClassifier(epochs=25, random_state=7)
    for _ in range(25):
        stepped.partial_fit(X, y)
    assert stepped.n_iter_ == fitted.n_iter_ == 25
    for a, b in zip(fitted.coefs_ + fitted.intercepts_, stepped.coefs_ + stepped.intercepts_):
        assert np.array_equal(a, b)
    assert fitted.loss_curve_ == stepped.loss_curve_


def test_history_is_the_loss_of_each_epochs_weights():
    X, y, Y, _ = _problem(3, "sigmoid", n=60)
    m = NeuralNetClassifier(activation="sigmoid", reg_lambda=0.2, epochs=12, random_state=0)
    m.fit(X, y, eval_set=(X[:20], y[:20]))
    assert all(len(v) == 12 for v in m.history_.values())
    logp = forward(X, m.coefs_, m.intercepts_, "sigmoid")[1]
    assert m.history_["train_loss"][-1] == pytest.approx(loss(logp, Y, m.coefs_, 0.2), rel=1e-12)
    assert m.history_["train_misclassification"][-1] == pytest.approx(1 - m.score(X, y))
    assert m.history_["val_misclassification"][-1] == pytest.approx(1 - m.score(X[:20], y[:20]))


def test_mini_batches_are_seeded_and_differ_from_full_batch():
    X, y, _, _ = _problem(2, "relu", n=64)
    runs = [NeuralNetClassifier(activation="relu", batch_size=8, epochs=5, random_state=s)
            .fit(X, y).coefs_[0] for s in (1, 1, 2)]
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])
    full = NeuralNetClassifier(activation="relu", epochs=5, random_state=1).fit(X, y)
    assert not np.array_equal(full.coefs_[0], runs[0])


def test_divergence_stops_with_the_epoch():
    X, y, _, _ = _problem(2, "relu", n=40)
    m = NeuralNetClassifier(activation="relu", learning_rate=1e6, epochs=500, random_state=0)
    with pytest.raises(DivergenceError, match=r"diverged at epoch \d+") as info:
        m.fit(X * 1e3, y)
    assert 1 <= info.value.epoch < 500
    assert len(m.history_["train_loss"]) == info.value.epoch - 1
    assert np.all(np.isfinite(m.history_["train_loss"]))


def test_softmax_is_stable_for_huge_logits():
    m = NeuralNetClassifier(activation="relu", epochs=1, random_state=0)
    m.fit([[0.0, 1.0], [1.0, 0.0]], [0, 1])
    m.coefs_[-1] *= 1e6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        proba = m.predict_proba(np.array([[1e5, -1e5], [-1e5, 1e5]]))
    assert np.all(np.isfinite(proba)) and np.allclose(proba.sum(axis=1), 1.0)


@pytest.mark.parametrize("param, value", [("activation", "softmax"), ("hidden_nodes", 0),
                                          ("learning_rate", 0.0), ("epochs", 0)])
def test_bad_parameters_name_themselves(param, value):
    with pytest.raises(ValueError, match=param):
        NeuralNetClassifier(**{param: value}).fit([[0.0], [1.0]], [0, 1])


def test_mini_batches_follow_a_fresh_permutation_of_the_seeded_generator_each_epoch():
    X, y, Y, _ = _problem(2, "tanh", n=40)
    model = NeuralNetClassifier(batch_size=8, epochs=3, learning_rate=0.4, reg_lambda=0.3,
                                random_state=5)
    model._initialise(X.shape[1], np.arange(2))
    coefs = [W.copy() for W in model.coefs_]
    intercepts = [b.copy() for b in model.intercepts_]
    rng = copy.deepcopy(model._rng)  # the generator as training finds it
    for _ in range(3):  # the reference: plain mini-batch SGD over rng.permutation(n)
        order = rng.permutation(len(X))
        for start in range(0, len(X), 8):
            rows = order[start:start + 8]
            acts, logp = forward(X[rows], coefs, intercepts, "tanh")
            grad_W, grad_b = gradients(acts, logp, Y[rows], coefs, "tanh", 0.3)
            for W, b, gW, gb in zip(coefs, intercepts, grad_W, grad_b):
                W -= 0.4 * gW
                b -= 0.4 * gb
    for _ in range(3):
        model.partial_fit(X, y)
    for a, b in zip(model.coefs_ + model.intercepts_, coefs + intercepts):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("activation, sk_name",
                         [("tanh", "tanh"), ("sigmoid", "logistic"), ("relu", "relu")])
def test_initialisation_is_glorot_uniform_with_mlpclassifiers_bounds(activation, sk_name):
    fan_in, fan_out = 300, 200
    ours = NeuralNetClassifier(hidden_nodes=fan_out, activation=activation, random_state=0)
    ours._initialise(fan_in, np.arange(2))
    sk = MLPClassifier(activation=sk_name)
    sk._random_state = np.random.RandomState(0)
    sk_W, _ = sk._init_coef(fan_in, fan_out, np.float64)
    W, b = ours.coefs_[0], ours.intercepts_[0]
    bound = np.abs(sk_W).max()
    # Same uniform range as MLPClassifier (to within the sampling of 60,000 draws) ...
    assert np.abs(W).max() == pytest.approx(bound, rel=2e-3)
    assert np.abs(b).max() <= bound * 1.002
    # ... and uniform: a quarter of the draws in each quarter of the range.
    counts = np.histogram(W, bins=4, range=(-bound, bound))[0] / W.size
    np.testing.assert_allclose(counts, 0.25, atol=0.01)

"""A multilayer perceptron written from scratch in numpy, as a scikit-learn estimator.

Loss = mean cross-entropy + reg_lambda / (2 n) * (sum of squared weights); biases are not
regularised. This is the scaling of scikit-learn's MLPClassifier ``alpha``, so a learning rate
means the same thing whatever the data size. With a softmax output and cross-entropy the error
at the output pre-activation z is simply ``P - Y``: the softmax Jacobian and the log cancel, so
no "softmax derivative" appears anywhere. Hidden layers back-propagate with each activation's
own derivative, written in terms of its output a = f(z).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from annlab.activations import ACTIVATIONS, DERIVATIVES
from annlab.errors import AnnlabError
from annlab.rules import ESTIMATOR_RULES, hidden_sizes

HISTORY_KEYS = ("train_loss", "train_misclassification", "val_loss", "val_misclassification")


class _Labelled(NamedTuple):
    inputs: np.ndarray  # the rows with a trailing column of ones, column-major
    labels: np.ndarray  # each row's class, as an index into classes_
    targets: np.ndarray  # one-hot, column-major


class DivergenceError(AnnlabError, FloatingPointError):
    """Training produced a non-finite loss or weights; ``epoch`` is the first bad epoch."""

    PREFIX = "diverged at epoch"

    def __init__(self, epoch: int, loss: float):
        super().__init__(f"{self.PREFIX} {epoch}: training loss is {loss}")
        self.epoch = epoch


def log_softmax(z):
    """Row-wise log-softmax, in place, with the max shift (log-sum-exp): no exp overflows."""
    z -= np.maximum.reduce(z, axis=-1, keepdims=True)
    lse = np.add.reduce(np.exp(z), axis=-1, keepdims=True)
    z -= np.log(lse, out=lse)
    return z


# Layout: every (n_samples, width) array below is column-major, i.e. the transpose of a
# C-ordered (width, n_samples) array, computed as (L^T a^T)^T. Per-sample softmax reductions
# then run along contiguous memory: the small-width broadcasts and reductions of the row-major
# layout cost more than the matrix products themselves. The bias trick: a layer is one matrix
# L = [W; b] of shape (n_in + 1, n_out), and every layer input ends with a column of ones, so
# a @ L is a @ W + b in one product, and one product gives both gradients.
def _ones_last(batch_shape, n, width, dtype):
    """A column-major (..., n, width + 1) array whose last column is ones (the bias's input)."""
    a = np.empty((*batch_shape, width + 1, n), dtype)
    a[..., -1, :] = 1.0
    return a.mT


def _with_ones(X):
    """The first layer's input: X with a column of ones appended, column-major."""
    X1 = _ones_last((), *X.shape, X.dtype)
    X1[:, :-1] = X
    return X1


def _affine(a, L, out=None):
    """``a @ L`` (column-major result), written into ``out`` when given."""
    return np.matmul(L.mT, a.mT, out=None if out is None else out.mT).mT


def _forward(X1, layers, activation, out=None):
    """:func:`forward` for inputs with their column of ones and layers [W; b]. ``out``: a
    previous result for the same X1, whose arrays are reused (overwritten)."""
    f = ACTIVATIONS[activation]
    acts = [X1]
    for i, L in enumerate(layers[:-1]):
        a = out[0][i + 1] if out else _ones_last(L.shape[:-2], X1.shape[-2], L.shape[-1], L.dtype)
        f(_affine(acts[-1], L, a[..., :-1]))
        acts.append(a)
    return acts, log_softmax(_affine(acts[-1], layers[-1], out[1] if out else None))


def forward(X, coefs, intercepts, activation):
    """Return the layer inputs ``[X, a_1, ..., a_L]``, each with a trailing column of ones, and
    the output log-probabilities.

    Also evaluates a stack of networks at once: weights of shape (F, n_in, n_out) and biases of
    shape (F, n_out) give outputs of shape (F, n, K). Exp may overflow (in tanh and sigmoid, to
    their exact limits): callers choose the floating-point error state.
    """
    layers = [np.concatenate((W, b[..., None, :]), axis=-2) for W, b in zip(coefs, intercepts)]
    return _forward(_with_ones(X), layers, activation)


def loss(logp, Y, coefs, reg_lambda):
    """Mean cross-entropy (Y one-hot) plus the L2 penalty reg_lambda / (2 n) * sum(W**2)."""
    return _loss(logp, Y, _penalty(coefs, reg_lambda))


def _penalty(coefs, reg_lambda):
    """reg_lambda / 2 * sum(W**2), :func:`loss`'s L2 term before the division by n: once an
    epoch, for its training and validation losses."""
    return reg_lambda / 2 * (sum(np.vdot(W, W) for W in coefs) if reg_lambda else 0.0)


def _loss(logp, Y, penalty):
    # .T views of the column-major arrays are contiguous: vdot then needs no copies.
    return (penalty - np.vdot(Y.T, logp.T)) / len(Y)


def _misclassified(logp, labels):
    """Rows whose largest log-probability (the first, on ties) is not their label's. Two
    classes take one column comparison: argmax along the rows of a column-major array copies
    it and loops row by row, slower than the loss (ties and all-NaN rows: class 0 either way)."""
    predicted = logp[:, 1] > logp[:, 0] if logp.shape[1] == 2 else logp.argmax(1)
    return np.count_nonzero(predicted != labels)


def gradients(acts, logp, Y, coefs, activation, reg_lambda):
    """Gradients of :func:`loss` w.r.t. every weight matrix and bias vector (Y one-hot), from
    :func:`forward`'s ``acts`` and ``logp`` (which they consume: both are overwritten)."""
    grads = _gradients(acts, logp, Y, coefs, activation, reg_lambda)
    return [G[:-1] for G in grads], [G[-1] for G in grads]


def _gradients(acts, logp, Y, coefs, activation, reg_lambda, scale=1.0, out=None):
    """:func:`gradients` times ``scale``, one (n_in + 1, n_out) matrix [dW; db] per layer, into
    ``out`` when given. With the ones columns of ``acts``, one product gives both."""
    n = len(Y)
    derivative = DERIVATIVES[activation]
    delta = np.exp(logp, out=logp)  # dLoss/dz at the output layer, (P - Y) / n, times scale
    delta -= Y
    delta *= scale / n
    grads = out or [None] * len(coefs)
    for i in range(len(coefs) - 1, -1, -1):
        grads[i] = np.matmul(acts[i].T, delta, out=grads[i])
        if reg_lambda:
            grads[i][:-1] += (scale * reg_lambda / n) * coefs[i]
        if i:  # back through layer i's weights and the activation that produced acts[i]
            delta = (coefs[i] @ delta.T).T
            delta *= derivative(acts[i][:, :-1])
    return grads


class NeuralNetClassifier(ClassifierMixin, BaseEstimator):
    """Fully connected network: hidden layers of one activation, softmax output.

    Parameters
    ----------
    hidden_nodes : int or tuple of int
        Size of the one hidden layer, or sizes of several.
    activation : {"tanh", "sigmoid", "relu"}
    learning_rate : float
        Gradient-descent step size (gradients are means over the batch).
    reg_lambda : float
        L2 strength, scaled like MLPClassifier's ``alpha``.
    epochs : int
        Passes over the training data made by :meth:`fit`.
    batch_size : int or None
        None means full-batch gradient descent; otherwise shuffled mini-batches.
    random_state : int, numpy Generator or None
        Seed of the one ``numpy.random.Generator`` used for initialisation and shuffling.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted; outputs and one-hot targets follow this order.
    coefs_ : list of ndarray
        ``coefs_[i]`` is the weight matrix from layer i to layer i + 1, shape (n_in, n_out).
    intercepts_ : list of ndarray
        ``intercepts_[i]`` is the bias vector of layer i + 1, shape (n_out,).
    n_features_in_ : int
        Features seen by :meth:`fit`.
    n_iter_ : int
        Epochs trained so far (:meth:`fit` and :meth:`partial_fit` together).
    history_ : dict of list of float
        Per-epoch ``train_loss`` and ``train_misclassification``, and with an ``eval_set``
        ``val_loss`` and ``val_misclassification``; one value per epoch trained.
    loss_curve_ : list of float
        The training loss per epoch (``history_["train_loss"]``), as scikit-learn's MLP.
    """

    def __init__(
        self,
        hidden_nodes=10,
        activation="tanh",
        learning_rate=0.5,
        reg_lambda=0.0,
        epochs=1000,
        batch_size=None,
        random_state=None,
    ):
        self.hidden_nodes = hidden_nodes
        self.activation = activation
        self.learning_rate = learning_rate
        self.reg_lambda = reg_lambda
        self.epochs = epochs
        self.batch_size = batch_size
        self.random_state = random_state

    def fit(self, X, y, *, eval_set=None, callback=None):
        """Train from a fresh initialisation for ``epochs`` epochs.

        ``eval_set=(X_val, y_val)`` adds validation loss and misclassification to
        ``history_`` at every epoch; ``callback(model)`` runs once with the initial weights
        (``n_iter_`` 0) and after every epoch, and training stops early (a tuning study pruning
        it, say) when it returns True.
        """
        X, y = validate_data(self, X, y, dtype=np.float64, reset=True)
        check_classification_targets(y)
        self._initialise(X.shape[1], np.unique(y))
        if callback is not None and callback(self):
            return self
        return self._train(X, y, self.epochs, eval_set, callback)

    def partial_fit(self, X, y, classes=None, *, eval_set=None, callback=None):
        """Train for exactly one epoch; the first call initialises (``classes`` as in sklearn)."""
        first = not hasattr(self, "coefs_")
        X, y = validate_data(self, X, y, dtype=np.float64, reset=first)
        check_classification_targets(y)
        if first:
            self._initialise(X.shape[1], np.unique(y) if classes is None else np.asarray(classes))
        return self._train(X, y, 1, eval_set, callback)

    def predict_proba(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        with np.errstate(over="ignore"):
            logp = forward(X, self.coefs_, self.intercepts_, self.activation)[1]
        return np.exp(logp, out=logp)

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]

    # -- internals ---------------------------------------------------------------------------

    def _check_params(self) -> tuple[int, ...]:
        """The hidden layer sizes, once every parameter obeys its rule in annlab.rules."""
        for name, rule in ESTIMATOR_RULES.items():
            if not rule.ok(getattr(self, name)):
                raise ValueError(rule.message(name, getattr(self, name)))
        return tuple(int(h) for h in hidden_sizes(self.hidden_nodes))

    def _initialise(self, n_features: int, classes: np.ndarray):
        """Glorot-uniform weights and biases (as MLPClassifier) from the seeded Generator."""
        sizes = self._check_params()
        if len(classes) < 2:
            raise ValueError(f"needs at least 2 classes to train; got 1 class: {classes}")
        self.classes_ = classes
        self._rng = np.random.default_rng(self.random_state)
        layers = (n_features, *sizes, len(classes))
        factor = 2.0 if self.activation == "sigmoid" else 6.0
        self.coefs_, self.intercepts_ = [], []
        for fan_in, fan_out in zip(layers[:-1], layers[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            self.coefs_.append(self._rng.uniform(-bound, bound, (fan_in, fan_out)))
            self.intercepts_.append(self._rng.uniform(-bound, bound, fan_out))
        self.n_iter_ = 0
        self.history_ = {key: [] for key in HISTORY_KEYS}
        self.loss_curve_ = self.history_["train_loss"]

    def _encode(self, y):
        """Class labels -> indices into ``classes_``, refusing labels never declared."""
        idx = np.searchsorted(self.classes_, y)
        idx[idx == len(self.classes_)] = 0
        if not np.array_equal(self.classes_[idx], y):
            unknown = np.setdiff1d(y, self.classes_)
            raise ValueError(f"y has labels {unknown} not in classes_ {self.classes_}")
        return idx

    def _labelled(self, X, y) -> _Labelled:
        """A split as training reads it: inputs with their column of ones, label indices,
        one-hot targets (column-major, like the log-probabilities)."""
        labels = self._encode(np.asarray(y))
        return _Labelled(_with_ones(X), labels,
                         np.asfortranarray(np.eye(len(self.classes_))[labels]))

    def _train(self, X, y, n_epochs, eval_set, callback):
        train = self._labelled(X, y)
        val = None if eval_set is None else self._labelled(
            validate_data(self, eval_set[0], dtype=np.float64, reset=False), eval_set[1])
        # One matrix [W; b] per layer; coefs_ and intercepts_ become views of them.
        layers = [np.vstack((W, b)) for W, b in zip(self.coefs_, self.intercepts_)]
        self.coefs_, self.intercepts_ = [L[:-1] for L in layers], [L[-1] for L in layers]
        grads = [np.empty_like(L) for L in layers]
        full_batch = self.batch_size is None or self.batch_size >= len(train.labels)
        passes = _forward(train.inputs, layers, self.activation)  # (acts, logp), reused
        val_passes = None
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for _ in range(n_epochs):
                if full_batch:
                    self._step(*passes, train.targets, layers, grads)
                else:
                    self._minibatches(train, layers, grads)
                # The post-update pass gives this epoch's metrics and the next epoch's gradient.
                passes = _forward(train.inputs, layers, self.activation, out=passes)
                self.n_iter_ += 1
                penalty = _penalty(self.coefs_, self.reg_lambda)
                self._record("train", passes[1], train, penalty)
                if val is not None:
                    val_passes = _forward(val.inputs, layers, self.activation, out=val_passes)
                    self._record("val", val_passes[1], val, penalty)
                if callback is not None and callback(self):
                    break
        return self

    def _minibatches(self, train: _Labelled, layers, grads) -> None:
        """One epoch of shuffled mini-batches, each an update."""
        order = self._rng.permutation(len(train.labels))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            self._step(*_forward(train.inputs[rows], layers, self.activation),
                       train.targets[rows], layers, grads)

    def _record(self, split: str, logp, data: _Labelled, penalty) -> None:
        """The epoch's loss and misclassification on ``split``; a non-finite training loss is
        a divergence."""
        value = _loss(logp, data.targets, penalty)
        if split == "train" and not math.isfinite(value):
            raise DivergenceError(self.n_iter_, value)
        self.history_[f"{split}_loss"].append(float(value))
        wrong = _misclassified(logp, data.labels)
        self.history_[f"{split}_misclassification"].append(wrong / len(data.labels))

    def _step(self, acts, logp, Y, layers, grads):
        """One gradient-descent update, in place."""
        _gradients(acts, logp, Y, self.coefs_, self.activation, self.reg_lambda,
                   self.learning_rate, out=grads)
        for L, G in zip(layers, grads):
            L -= G

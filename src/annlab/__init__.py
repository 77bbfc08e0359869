"""annlab: a from-scratch numpy neural network inside a tracked, reproducible pipeline."""

from annlab.network import DivergenceError, NeuralNetClassifier

__all__ = ["DivergenceError", "NeuralNetClassifier"]

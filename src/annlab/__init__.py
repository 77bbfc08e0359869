"""annlab: a from-scratch numpy neural network inside a tracked, reproducible pipeline."""

__all__ = ["DivergenceError", "NeuralNetClassifier"]


def __getattr__(name: str):
    # Lazy, so that `import annlab.config` (a sweep's launching process) skips scikit-learn.
    if name in __all__:
        from annlab import network

        return getattr(network, name)
    raise AttributeError(f"module 'annlab' has no attribute {name!r}")

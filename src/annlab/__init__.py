"""annlab: a from-scratch numpy neural network inside a tracked, reproducible pipeline."""

import os

# annlab sends nothing beyond the stores it is pointed at: MLflow's usage telemetry and Ray's
# usage stats (both on by default, both reporting to the internet) are off unless the user
# says otherwise. Set here, before any of them is imported.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

__all__ = ["DivergenceError", "NeuralNetClassifier"]


def __getattr__(name: str):
    # Lazy, so that `import annlab.config` (a sweep's launching process) skips scikit-learn.
    if name in __all__:
        from annlab import network

        return getattr(network, name)
    raise AttributeError(f"module 'annlab' has no attribute {name!r}")

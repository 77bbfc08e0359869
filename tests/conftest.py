"""Fixtures for every test: real configs composed through Hydra's compose API, and throw-away
MLflow stores. tests/unit/ needs nothing else; tests/e2e/conftest.py adds the servers."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import pipelines  # noqa: F401  (registers the config schema)

CONF = Path(__file__).resolve().parents[1] / "conf"
# Small but real: every stage runs, in well under a second of training.
FAST = ["train.epochs=60", "plot.frames=5", "plot.grid_size=40", "plot.dpi=40",
        "data.n_samples=200"]


@pytest.fixture(scope="session")
def compose_cfg():
    """compose_cfg(overrides) -> the composed DictConfig, as `make run ARGS=...` would see it."""
    def _compose(overrides=()):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    return _compose


@pytest.fixture(scope="session")
def resolved(compose_cfg):
    """resolved(overrides) -> the run spec of the composed config (annlab.spec.resolve)."""
    from annlab.spec import resolve

    def _resolve(overrides=(), baseline=None):
        return resolve(compose_cfg(overrides), baseline)
    return _resolve


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory) -> str:
    """One sqlite store per test process; tests keep apart by experiment name. Created by
    annlab up front: tests poll it with raw MLflow clients while their subprocesses run, and a
    raw client creating a store builds its schema in place, racing anyone else."""
    from annlab import tracking

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    tracking.connect(uri)
    return uri


@pytest.fixture(autouse=True, scope="session")
def _no_default_store(store_uri):
    """Whatever a test leaves to MLflow's defaults lands in the test store, not the repo."""
    import os

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = store_uri
    yield
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture
def experiment() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def fast_overrides() -> list[str]:
    return list(FAST)


@pytest.fixture
def fast_cfg(compose_cfg, store_uri, experiment):
    """fast_cfg(*overrides): a quick config tracked in this process's test store."""
    def _make(*overrides):
        return compose_cfg([*FAST, f"tracking.uri={store_uri}",
                            f"tracking.experiment={experiment}", *overrides])
    return _make


@pytest.fixture
def fast_spec(fast_cfg):
    """fast_spec(*overrides): :func:`fast_cfg`'s config, resolved."""
    from annlab.spec import resolve

    return lambda *overrides: resolve(fast_cfg(*overrides))


@pytest.fixture
def global_tracking_uri():
    """global_tracking_uri(uri): a context in which MLflow's global tracking URI (what
    ``runs:/`` URIs resolve through) is ``uri``. Afterwards no global URI is left set, so MLflow
    reads MLFLOW_TRACKING_URI again, as it was: a global left set would outrank it for every
    later test in this process."""
    import contextlib
    import os

    import mlflow

    @contextlib.contextmanager
    def _use(uri: str):
        previous = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(None)  # unsets the global and the variable
            if previous is not None:
                os.environ["MLFLOW_TRACKING_URI"] = previous
    return _use

"""annlab's Hydra adapter composes every job as its launcher will, quicker than Hydra's own
loader (the private call it relies on is pinned here)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf, open_dict

import pipelines  # noqa: F401  (the schema)
from hydra_plugins.annlab_sweeper._compose import compose_jobs, expand

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture
def loader_and_master():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        master = compose(config_name="config", overrides=["sweep=default", "train.epochs=300"],
                         return_hydra_config=True)
        yield GlobalHydra.instance().config_loader(), master


def _full(loader, master, point):
    cfg = loader.load_sweep_config(master, list(point))
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _outcome(compose_one, *args):
    """The config composed, or the error composing it raised."""
    try:
        return compose_one(*args)
    except Exception as err:  # Hydra raises more than its ConfigCompositionException
        return f"{type(err).__name__}: {err}"


def test_every_job_config_equals_hydras_own_composition(loader_and_master, monkeypatch):
    loader, master = loader_and_master
    grid, _ = expand([f"{k}={v}" for k, v in master.hydra.sweeper.params.items()])
    grid = [[*p, "train.epochs=300"] for p in grid]
    composed = []
    with monkeypatch.context() as m:  # count Hydra's full compositions
        m.setattr(loader, "load_sweep_config", lambda master, overrides: composed.append(
            overrides) or type(loader).load_sweep_config(loader, master, overrides))
        fast_grid = list(compose_jobs(loader, master, grid))
    assert composed == [[]]  # the base, once: the grid's 27 points only set values
    for point, fast in zip(grid, fast_grid):
        assert OmegaConf.to_yaml(fast) == OmegaConf.to_yaml(_full(loader, master, point))
    for point in [
        [],                                                   # the baseline
        ["seed=3", "data.noise=0.3", "plot.fps=5.5"],         # values of several types
        ["experiment=figure2", "train.epochs=20"],            # a config group
        ["train.epochs=20", "experiment=figure2"],            # ... after a value
        ["train=gd", "model.hidden_nodes=[4,3]"],             # a group and a list value
        ["+tune.study=x"],                                    # an add (refused by both)
        ["+train.momentum=0.9"],                              # an add to a typed node
        ["~data.noise"],                                      # a delete
        ["train.learning_rate=${train.reg_lambda}"],          # an interpolation
    ]:
        full = _outcome(_full, loader, master, point)
        fast = _outcome(lambda *a: list(compose_jobs(*a)), loader, master, [["seed=1"], point])
        fast = fast if isinstance(fast, str) else fast[1]
        if isinstance(full, str):
            assert fast == full, point
            continue
        assert OmegaConf.to_yaml(fast) == OmegaConf.to_yaml(full), point
        assert OmegaConf.to_container(fast, resolve=True) == \
            OmegaConf.to_container(full, resolve=True), point
        assert OmegaConf.is_struct(fast) and OmegaConf.is_struct(full), point


def test_the_groups_a_grid_sets_are_composed_once_for_each_choice(loader_and_master,
                                                                 monkeypatch):
    # As `make sweep` hands the grid over: every point also carries the command line's own
    # overrides (the sweep overlay, a config group, and values).
    loader, master = loader_and_master
    line = ["sweep=default", "tracking.uri='sqlite:////tmp/x.db'"]
    grid = [[f"model.hidden_nodes={h}", *line, *extra] for extra in ([], ["experiment=figure2"])
            for h in (2, 5)]
    composed = []
    with monkeypatch.context() as m:
        m.setattr(loader, "load_sweep_config", lambda master, overrides: composed.append(
            overrides) or type(loader).load_sweep_config(loader, master, overrides))
        fast_grid = list(compose_jobs(loader, master, grid))
    assert composed == [["sweep=default"], ["sweep=default", "experiment=figure2"]]
    for point, fast in zip(grid, fast_grid):
        assert OmegaConf.to_yaml(fast) == OmegaConf.to_yaml(_full(loader, master, point))


@pytest.mark.parametrize("point", [["model.activaton=tanh"], ["train.epochs=many"]])
def test_a_bad_override_fails_as_hydra_fails_it(loader_and_master, point):
    loader, master = loader_and_master
    with pytest.raises(ConfigCompositionException) as full:
        _full(loader, master, point)
    with pytest.raises(ConfigCompositionException) as fast:
        list(compose_jobs(loader, master, [["seed=1"], point]))
    assert str(fast.value) == str(full.value)


@pytest.mark.parametrize("arguments, refusal", [
    (["a=range(1,100000000)", "b=1,2"], r"over 20,002 points \(10,001\+ a x 2 b\)"),
    (["a=range(0,101)", "b=range(0,100)"], r"10,100 points \(101 a x 100 b\)"),
])
def test_a_grid_beyond_its_limit_is_refused_before_its_points_are_made(arguments, refusal):
    from annlab.errors import InvalidGrid

    with pytest.raises(InvalidGrid, match=f"the grid has {refusal}; allowed: at most 10,000"):
        expand(arguments, 10_000)
    points, swept = expand(["a=range(0,100)", "b=range(0,100)"], 10_000)  # at the limit
    assert len(points) == 10_000 and list(swept) == ["a", "b"]

"""The config tree composes, refuses bad values with one clear line, and hashes stably."""

import re

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from annlab.config import ConfigError, config_hash, flatten, run_name, validate
from annlab.network import NeuralNetClassifier
from annlab.rules import RULES


def test_default_config_composes_and_validates(compose_cfg):
    cfg = compose_cfg()
    validate(cfg)
    assert cfg.model.activation == "tanh" and cfg.tracking.experiment == "annlab"
    assert run_name(cfg) == "tanh-h10-lr0.5"


def test_figure2_experiment_is_the_posts_setup(compose_cfg):
    cfg = compose_cfg(["experiment=figure2"])
    validate(cfg)
    assert (cfg.model.activation, cfg.model.hidden_nodes, cfg.train.epochs) == ("sigmoid", 10, 1000)
    assert cfg.train.batch_size is None


@pytest.mark.parametrize("override, key", [
    ("model.activation=softmax", "model.activation"),
    ("model.hidden_nodes=0", "model.hidden_nodes"),
    ("model.hidden_nodes=[10,0]", "model.hidden_nodes"),
    ("train.learning_rate=0", "train.learning_rate"),
    ("train.learning_rate=-0.1", "train.learning_rate"),
    ("train.epochs=0", "train.epochs"),
    ("train.reg_lambda=-1", "train.reg_lambda"),
    ("train.batch_size=0", "train.batch_size"),
    ("data.noise=-0.1", "data.noise"),
    ("data.train_fraction=0.7", "data.*_fraction"),
    ("data.val_fraction=0", "data.val_fraction"),
    ("data.n_samples=6", "data.n_samples"),
    ("seed=-1", "seed"),
    ("plot.frames=0", "plot.frames"),
])
def test_semantic_errors_name_key_value_and_what_is_allowed(compose_cfg, override, key):
    cfg = compose_cfg([override])
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert info.value.key == key
    assert key in message and "allowed:" in message and "\n" not in message
    assert override.split("=", 1)[1].strip("[]").split(",")[-1] in message


@pytest.mark.parametrize("override", ["train.epochs=abc", "model.typo=1"])
def test_type_and_key_errors_are_refused_while_composing(compose_cfg, override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_cfg([override])


def test_flattened_params_use_dotted_keys(compose_cfg):
    flat = flatten(compose_cfg(["model.hidden_nodes=[4,3]"]))
    assert flat["model.activation"] == "tanh" and flat["model.hidden_nodes"] == "[4, 3]"
    for key in ("train.learning_rate", "train.reg_lambda", "train.epochs", "data.n_samples",
                "data.noise", "seed"):
        assert key in flat
    # Where a run is tracked and where files go are not parameters.
    assert {k.split(".")[0] for k in flat} == {"seed", "data", "model", "train", "plot"}


def test_config_hash_follows_results_not_where_they_are_tracked(compose_cfg):
    base = config_hash(compose_cfg())
    assert base == config_hash(compose_cfg(["tracking.experiment=elsewhere"]))
    assert base == config_hash(compose_cfg(["paths.outputs=/elsewhere"]))
    assert base != config_hash(compose_cfg(["seed=1"]))
    assert base != config_hash(compose_cfg(["train.learning_rate=0.25"]))


BAD = {"model.activation": "softmax", "model.hidden_nodes": 0, "train.learning_rate": -1.0,
       "train.reg_lambda": -0.5, "train.epochs": 0, "train.batch_size": 0}


@pytest.mark.parametrize("rule", [r for r in RULES if r.param], ids=lambda r: r.key)
def test_the_config_and_the_estimator_obey_one_table_of_rules(compose_cfg, rule):
    value = BAD[rule.key]
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg([f"{rule.key}={value}"]))
    assert info.value.key == rule.key and rule.allowed in str(info.value)
    with pytest.raises(ValueError, match=f"{rule.param}=.*allowed: {re.escape(rule.allowed)}"):
        NeuralNetClassifier(**{rule.param: value}).fit([[0.0], [1.0]], [0, 1])


@pytest.mark.parametrize("override, key", [("+train.learning_rat=5", "train.learning_rat"),
                                           ("+foo=1", "foo")])
def test_keys_added_with_plus_that_the_schema_lacks_are_refused(compose_cfg, override, key):
    with pytest.raises(ConfigError, match="misspelt") as info:
        validate(compose_cfg([override]))
    assert info.value.key == key


@pytest.mark.parametrize("overrides, key", [
    (["plot.grid_size=100000"], "plot.grid_size"),
    (["plot.frames=5000"], "plot.frames"),
    (["train.epochs=10000000"], "train.epochs"),
    (["data.n_samples=100000000"], "data.n_samples"),
    (["model.hidden_nodes=[20000]"], "model.hidden_nodes"),
    (["plot.grid_size=1000", "plot.frames=1000", "train.epochs=1000"],
     "plot.frames x plot.grid_size"),
    (["data.n_samples=1000000", "model.hidden_nodes=[5000,5000]"],
     "data.n_samples x model.hidden_nodes"),
])
def test_values_that_cannot_fit_in_memory_are_refused_naming_keys_and_limit(
        compose_cfg, overrides, key, monkeypatch):
    monkeypatch.setattr("annlab.config.memory_budget", lambda: 8 * 2**30)  # any machine
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg(overrides))
    assert info.value.key == key
    assert re.search(r"to [\d,]+\b|the limit is 8.0 GiB", str(info.value))


def test_sweep_tables_and_figures_follow_the_grids_own_order():
    import pandas as pd

    from annlab.sweep_report import grid_order, value_order

    assert value_order(["relu", "tanh", "sigmoid", "tanh"], ["tanh", "sigmoid", "relu"]) == \
        ["tanh", "sigmoid", "relu"]
    assert value_order(["10", "2", "5"]) == ["2", "5", "10"]  # numbers as numbers
    table = pd.DataFrame({"model.activation": ["relu", "tanh", "tanh"],
                          "model.hidden_nodes": ["2", "10", "2"],
                          "train.learning_rate": ["0.5", "0.5", "0.5"]})
    ordered = grid_order(table, {"model.activation": ["tanh", "relu"]})
    assert list(zip(ordered["model.activation"], ordered["model.hidden_nodes"])) == [
        ("tanh", "2"), ("tanh", "10"), ("relu", "2")]

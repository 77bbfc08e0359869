"""A composed config resolved once into a typed run spec: every check names the key, the value and
what is allowed; the params, hash and name are derived from it alone."""

import dataclasses
import re

import pytest

from annlab.config import ConfigError
from annlab.network import NeuralNetClassifier
from annlab.rules import RULES
from annlab.spec import replaced, run_name


def _refusal(resolved, overrides) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        resolved(overrides)
    assert "\n" not in str(info.value) and "allowed:" in str(info.value)
    return info.value


def test_the_default_config_resolves_into_typed_sections(resolved):
    spec = resolved()
    assert (spec.model.activation, spec.model.hidden_nodes) == ("tanh", (10,))
    assert (spec.train.learning_rate, spec.train.epochs, spec.train.batch_size) == (0.5, 1000,
                                                                                    None)
    assert (spec.data.name, spec.data.function, spec.data.settings) == (
        "moons", "make_moons", {"n_samples": 1000, "noise": 0.2})
    assert dataclasses.astuple(spec.data.shape) == (1000, 2, 2)
    assert spec.data.split_sizes() == (600, 200, 200)
    assert spec.name == "tanh-h10-lr0.5" and len(spec.hash) == 16
    assert spec.tune is None and not spec.trial


def test_a_spec_is_frozen(resolved):
    spec = resolved()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.train.epochs = 5
    with pytest.raises(TypeError):
        spec.data.settings["noise"] = 0.5


def test_several_hidden_layers_are_a_tuple_of_sizes(resolved):
    spec = resolved(["model.hidden_nodes=[4,3]"])
    assert spec.model.hidden_nodes == (4, 3) and spec.name == "tanh-h4x3-lr0.5"


def test_the_tracking_uri_is_the_configs_then_the_environments_then_the_store(
        resolved, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/env.db")
    assert resolved(["tracking.uri=sqlite:////tmp/cfg.db"]).tracking.uri == \
        "sqlite:////tmp/cfg.db"
    assert resolved().tracking.uri == "sqlite:////tmp/env.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    spec = resolved()
    assert spec.tracking.uri == spec.paths["store"] == f"sqlite:///{spec.paths['outputs']}" \
        "/mlflow.db"


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
    ("tracking.experiment=''", "tracking.experiment"),
    ("tracking.experiment='lab/a:b'", "tracking.experiment"),
    ("tracking.experiment='lab:b'", "tracking.experiment"),
    ("tracking.experiment='lab/b'", "tracking.experiment"),
    ("tracking.experiment=' lab'", "tracking.experiment"),
    ("tracking.experiment='..'", "tracking.experiment"),
    ("train.batch_size=601", "train.batch_size"),
    ("plot.image_steps=31", "plot.image_steps"),
])
def test_a_bad_value_names_its_key_its_value_and_what_is_allowed(resolved, override, key):
    err = _refusal(resolved, [override])
    assert err.key == key and key in str(err)
    assert override.split("=", 1)[1].strip("[]'").split(",")[-1] in str(err)


BAD = {"model.activation": "softmax", "model.hidden_nodes": 0, "train.learning_rate": -1.0,
       "train.reg_lambda": -0.5, "train.epochs": 0, "train.batch_size": 0}


@pytest.mark.parametrize("rule", [r for r in RULES if r.param], ids=lambda r: r.key)
def test_the_config_and_the_estimator_obey_one_table_of_rules(resolved, rule):
    err = _refusal(resolved, [f"{rule.key}={BAD[rule.key]}"])
    assert err.key == rule.key and rule.allowed in str(err)
    with pytest.raises(ValueError, match=f"{rule.param}=.*allowed: {re.escape(rule.allowed)}"):
        NeuralNetClassifier(**{rule.param: BAD[rule.key]}).fit([[0.0], [1.0]], [0, 1])


@pytest.mark.parametrize("override, key", [("+train.learning_rat=5", "train.learning_rat"),
                                           ("+foo=1", "foo")])
def test_keys_added_with_plus_that_the_schema_lacks_are_refused(resolved, override, key):
    err = _refusal(resolved, [override])
    assert err.key == key and "misspelt" in str(err)


@pytest.mark.parametrize("overrides, key, allowed", [
    (["data=iris", "data.noise=0.1"], "data.noise", "null: data.name=iris (load_iris) takes "
                                                    "data.label_names"),
    (["data=moons", "data.path=x.csv"], "data.path", "takes data.n_samples, data.noise"),
    (["data=moons", "data.factor=0.5"], "data.factor", "takes data.n_samples, data.noise"),
    (["data=circles", "data.factor=1.5"], "data.factor", "strictly between 0 and 1"),
    (["data=blobs", "data.n_classes=9"], "data.n_classes", "an integer from 2 to 6"),
    (["data=blobs", "data.cluster_std=0"], "data.cluster_std", "a number > 0"),
    (["data=classification", "data.n_informative=2", "data.n_classes=3"],
     "data.n_informative", "2 * n_classes <= 2 ** n_informative"),
    (["data=classification", "data.n_informative=9"], "data.n_informative + data.n_redundant",
     "at most data.n_features=10"),
    (["data.name=mnist"], "data.name", "moons | circles | blobs"),
])
def test_a_datasets_settings_are_checked_like_every_key(resolved, overrides, key, allowed):
    err = _refusal(resolved, overrides)
    assert err.key == key and allowed in str(err)


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
        resolved, overrides, key, monkeypatch):
    monkeypatch.setattr("annlab.spec.memory_budget", lambda: 8 * 2**30)  # any machine
    err = _refusal(resolved, overrides)
    assert err.key == key
    assert re.search(r"to [\d,]+\b|the limit is 8.0 GiB", str(err))


def test_params_are_the_experiment_settings_under_dotted_keys(resolved):
    params = resolved(["model.hidden_nodes=[4,3]"]).params
    assert params["model.activation"] == "tanh" and params["model.hidden_nodes"] == "[4, 3]"
    assert {"train.learning_rate", "train.reg_lambda", "train.epochs", "data.n_samples",
            "data.noise", "seed"} <= set(params)
    # Where a run is tracked and where its files go are not parameters.
    assert {k.split(".")[0] for k in params} == {"seed", "data", "model", "train", "plot"}
    # Nor the settings its dataset does not take.
    assert "data.factor" not in params and "data.factor" in resolved(["data=circles"]).params


def test_the_config_hash_follows_results_not_where_they_are_tracked(resolved):
    base = resolved().hash
    assert base == resolved(["tracking.experiment=elsewhere"]).hash
    assert base == resolved(["paths.outputs=/elsewhere"]).hash
    assert base != resolved(["seed=1"]).hash
    assert base != resolved(["train.learning_rate=0.25"]).hash


def test_a_run_is_named_by_its_network_its_dataset_and_what_differs_from_the_default(resolved):
    default = resolved()
    assert resolved(["train.epochs=500", "seed=3"], default).name == "tanh-h10-lr0.5-e500-s3"
    assert resolved(["experiment=figure2"], default).name == "sigmoid-h10-lr4-noise0.15"
    assert resolved(["data=circles"], default).name == "circles-tanh-h10-lr0.5"
    # Another dataset's own settings are not variations of the default's.
    assert resolved(["data=iris", "train.epochs=50"], default).name == "iris-tanh-h10-lr0.5-e50"
    assert resolved(["tracking.run_name=mine", "seed=2"], default).name == "mine"


def test_replaced_sets_dotted_keys_of_a_copy(resolved):
    config = resolved().config
    changed = replaced(config, {"train.learning_rate": 0.282, "seed": 4})
    assert (changed["train"]["learning_rate"], changed["seed"]) == (0.282, 4)
    assert config["train"]["learning_rate"] == 0.5 and config["seed"] == 0
    assert run_name(changed, config) == "tanh-h10-lr0.282-s4"


# -- a study's settings and space --------------------------------------------------------------

@pytest.mark.parametrize("override, key", [
    ("tune.n_trials=0", "tune.n_trials"),
    ("tune.sampler=grid", "tune.sampler"),
    ("tune.pruner.name=hyperband", "tune.pruner.name"),
    ("tune.report_every=0", "tune.report_every"),
    ("tune.space.train.learning_rate.low=20", "tune.space.train.learning_rate.low/high"),
    ("tune.space.model.hidden_nodes.high=2", "tune.space.model.hidden_nodes.low/high"),
    ("tune.space.train.reg_lambda.low=0", "tune.space.train.reg_lambda.low"),
    ("tune.space.model.activation.choices=[]", "tune.space.model.activation.choices"),
    ("tune.space.model.activation.type=grid", "tune.space.model.activation.type"),
])
def test_a_bad_search_setting_names_its_key_and_what_is_allowed(resolved, override, key):
    assert _refusal(resolved, ["tune=default", override]).key == key


@pytest.mark.parametrize("override, key", [
    ("+tune.space.train.learing_rate={type:float,low:0.1,high:1}",
     "tune.space.train.learing_rate"),
    ("+tune.space.seed={type:int,low:-1,high:3}", "tune.space.seed"),
    ("tune.space.model.activation.choices=[tanh,softmax]", "tune.space.model.activation"),
    ("tune.space.model.hidden_nodes.low=0", "tune.space.model.hidden_nodes"),
    ("+tune.space.data.n_samples={type:int,low:100,high:20000000}", "tune.space.data.n_samples"),
])
def test_a_space_the_config_cannot_take_is_refused(resolved, override, key):
    assert _refusal(resolved, ["tune=default", override]).key == key


def test_conf_tune_default_is_a_valid_study(resolved):
    tune = resolved(["tune=default"]).tune
    assert tune.study == "moons" and tune.space["model.activation"]["type"] == "categorical"
    assert set(tune.space) >= {"model.activation", "model.hidden_nodes",
                               "train.learning_rate"}
    assert "train.reg_lambda" in tune.space and tune.n_trials == 10
    assert tune.trial is None and tune.pruner.name == "threshold"

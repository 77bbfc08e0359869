"""The config schema: every file of conf/ composes, and a wrong type or an unknown key is refused
while Hydra composes (values that are well typed but not allowed: tests/unit/test_spec.py)."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from annlab.paths import CONF_DIR


@pytest.mark.parametrize("group", ["data", "experiment"])
def test_every_choice_of_a_group_composes_and_resolves(resolved, group):
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        if path.stem == "file":  # the user's own: it names its file (tests/unit/test_tables.py)
            continue
        spec = resolved([f"{group}={path.stem}"])
        if group == "data":
            assert spec.data.name == path.stem


def test_figure2_experiment_is_the_posts_setup(resolved):
    spec = resolved(["experiment=figure2"])
    assert (spec.model.activation, spec.model.hidden_nodes, spec.train.epochs) == ("sigmoid",
                                                                                  (10,), 1000)
    assert spec.train.batch_size is None and not spec.data.standardize


@pytest.mark.parametrize("override", ["train.epochs=abc", "model.typo=1", "data.noise=[1]"])
def test_type_and_key_errors_are_refused_while_composing(compose_cfg, override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_cfg([override])

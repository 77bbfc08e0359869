"""A study's summary: a row per trial run, the epochs each trained, and figures that open and
say how many trials each rests on."""

import optuna
import pytest
from optuna.trial import TrialState
from PIL import Image

from annlab import study_report


@pytest.fixture
def study():
    """Four trials: two complete, one pruned at epoch 50, one asked past the budget."""
    s = optuna.create_study(direction="minimize", study_name="s",
                            sampler=optuna.samplers.RandomSampler(seed=0))
    for k in range(4):
        trial = s.ask()
        trial.suggest_categorical("model.activation", ["tanh", "relu"])
        trial.suggest_float("train.learning_rate", 0.01, 10, log=True)
        for epoch in (25, 50):
            trial.report(0.3 - 0.05 * k + epoch / 1000, epoch)
        if k == 2:
            s.tell(trial, state=TrialState.PRUNED)
        elif k == 3:
            trial.set_user_attr(study_report.SURPLUS_ATTR, True)
            s.tell(trial, state=TrialState.FAIL)
        else:
            s.tell(trial, 0.1 - 0.05 * k)
    return s


def test_a_row_per_trial_run_surplus_ones_left_out(study):
    table = study_report.trials_table(study, {0: "run-0", 2: "run-2"})
    assert list(table["trial"]) == [0, 1, 2]
    assert list(table["state"]) == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert table["pruned_at"].tolist()[2] == 50 and table["pruned_at"].isna().tolist()[:2] == [
        True, True]
    assert table["run_id"].tolist()[0] == "run-0" and table["run_id"].isna()[1]


def test_a_pruned_trial_counts_the_epochs_it_trained_and_shows_its_last_report(study):
    complete, _, pruned, _ = study.trials
    assert study_report.epochs_trained(complete, 1000) == 1000
    assert study_report.epochs_trained(pruned, 1000) == 50
    assert study_report.last_value(pruned) == pytest.approx(0.25)
    assert study_report.last_value(complete) == 0.1


def test_the_figures_open(study, tmp_path):
    paths = study_report.figures(study, ["model.activation", "train.learning_rate"], 1000,
                                 tmp_path)
    assert {p.name for p in paths} == {"best_so_far.png", "parallel_coordinate.png",
                                       "intermediate_values.png", "optimization_history.png",
                                       "param_importances.png"}
    for path in paths:
        with Image.open(path) as image:
            assert image.width >= 600 and "Software" not in image.info


def test_a_study_whose_trials_never_reported_draws_no_empty_curves_and_says_nothing(tmp_path,
                                                                                  capfd):
    """Trials shorter than tune.report_every: no curve to draw, and no warning of Optuna's."""
    s = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0))
    for k in range(3):
        trial = s.ask()
        trial.suggest_float("train.learning_rate", 0.01, 10, log=True)
        s.tell(trial, 0.1 * k)
    capfd.readouterr()
    paths = study_report.figures(s, ["train.learning_rate"], 60, tmp_path)
    assert "intermediate_values.png" not in {p.name for p in paths}
    assert {"best_so_far.png", "optimization_history.png"} <= {p.name for p in paths}
    assert capfd.readouterr().err == ""


def test_a_study_whose_trials_were_all_pruned_draws_no_empty_history_and_says_nothing(
        tmp_path, capfd):
    s = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        trial = s.ask()
        trial.suggest_float("train.learning_rate", 0.01, 10, log=True)
        trial.report(0.5, 10)
        s.tell(trial, state=TrialState.PRUNED)
    capfd.readouterr()
    paths = study_report.figures(s, ["train.learning_rate"], 60, tmp_path)
    assert "optimization_history.png" not in {p.name for p in paths}
    assert {"best_so_far.png", "intermediate_values.png"} <= {p.name for p in paths}
    assert capfd.readouterr().err == ""


def test_drawing_the_figures_leaves_the_processs_style_as_it_was(study, tmp_path):
    """Optuna's plots set the ggplot style for the whole process; a run drawn later in it
    would change (make reproduce of it would say so)."""
    import matplotlib

    before = dict(matplotlib.rcParams)
    study_report.figures(study, ["model.activation", "train.learning_rate"], 1000, tmp_path)
    assert dict(matplotlib.rcParams) == before


def test_each_figure_says_how_many_trials_it_rests_on(study):
    named = study_report.titles(study)
    assert named["best_so_far"] == "Study s (3 trials: 2 complete, 1 pruned)"
    assert "3 trials: 2 complete, 1 pruned" in named["parallel_coordinate"]
    assert "3 trials: 2 complete, 1 pruned" in named["intermediate_values"]
    assert "the 2 complete trials (of 3 trials" in named["optimization_history"]
    assert named["param_importances"] == ("Study s: importances (fANOVA), 3 trials: 2 "
                                          "complete, 1 pruned (each at its last report)")
    assert study_report.rests_on(study.trials[:1]) == "1 trial: 1 complete, 0 pruned"


def test_the_importance_figure_counts_pruned_trials_at_their_last_report(study):
    scored = study_report.importance_study(study)
    assert [t.value for t in scored.trials] == [0.1, 0.05, pytest.approx(0.25)]
    assert [t.params for t in scored.trials] == [t.params for t in study.trials[:3]]
    assert all(t.state == TrialState.COMPLETE for t in scored.trials)
    kind = optuna.distributions.CategoricalDistribution(["tanh", "relu"])
    for choices, values in ((["tanh", "tanh"], (0.1, 0.2)), (["tanh", "relu"], (0.1, 0.1))):
        flat = optuna.create_study(direction="minimize")  # nothing to tell apart
        flat.add_trials([optuna.trial.create_trial(
            params={"model.activation": c}, distributions={"model.activation": kind}, value=v)
            for c, v in zip(choices, values)])
        assert study_report.importance_study(flat) is None


def test_the_importance_figure_is_drawn_the_same_every_time(study, tmp_path):
    """fANOVA's forest is seeded: the summary's figures rebuild to the same bytes."""
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        out.mkdir()
        study_report.figures(study, ["model.activation", "train.learning_rate"], 1000, out)
    assert (first / "param_importances.png").read_bytes() == \
        (second / "param_importances.png").read_bytes()


@pytest.mark.parametrize("p, text", [
    ({"type": "categorical", "choices": ["tanh", "relu"]}, "tanh | relu"),
    ({"type": "int", "low": 2, "high": 16}, "int 2..16"),
    ({"type": "float", "low": 0.01, "high": 10.0, "log": True}, "float 0.01..10 (log)"),
])
def test_a_searched_key_is_described_in_a_few_words(p, text):
    assert study_report.describe_param(p) == text


def test_the_printed_table_rounds_to_what_validation_resolves(study):
    table = study_report.trials_table(study, {})
    table.loc[0, "value"] = 0.030000000000000027  # 1 - 0.97, as floats have it
    text = study_report.printed(table, ["model.activation", "train.learning_rate"], 200)
    assert "0.030 " in text and "0.030000" not in text and "<NA>" not in text
    assert text.splitlines()[0].split() == ["trial", "state", "value", "pruned_at",
                                            "model.activation", "train.learning_rate"]

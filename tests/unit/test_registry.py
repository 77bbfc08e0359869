"""The model registry: each run's model a version, the champion alias moved only by a better
validation misclassification (a tie keeps it)."""

import pytest
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.tracking import MlflowClient

from annlab import names, tracking


def _run_with_a_model(store_uri, experiment_id, name, val):
    """A run as annlab leaves one: its final val_misclassification and a logged model."""
    client = MlflowClient(store_uri)
    run_id = client.create_run(experiment_id, run_name=name).info.run_id
    client.log_metric(run_id, "val_misclassification", val)
    model = client.create_logged_model(experiment_id, names.MODEL_NAME, source_run_id=run_id)
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    client.set_terminated(run_id)
    return run_id


def test_the_champion_moves_only_to_a_better_model_and_each_run_is_one_version(
        store_uri, experiment):
    exp = tracking.open(store_uri, experiment)
    store, client = exp.store, MlflowClient(store_uri)
    runs = {n: _run_with_a_model(store_uri, exp.id, n, v)
            for n, v in [("a", 0.10), ("worse", 0.20), ("tie", 0.10), ("better", 0.05)]}
    seen = [tracking.register(store, runs[n]) for n in ("a", "worse", "tie", "better")]
    assert [(r.version, r.champion) for r in seen] == [("1", "1"), ("2", "1"), ("3", "1"),
                                                       ("4", "4")]
    assert seen[0].name == f"{experiment}-model"  # no dataset recorded on these runs
    assert "not the champion (version 1 is, with 0.1" in seen[1].line()
    again = tracking.register(store, runs["worse"])  # registered already: the same version
    assert (again.version, again.champion) == ("2", "4")
    champion = client.get_model_version_by_alias(seen[0].name, "champion")
    assert champion.run_id == runs["better"]
    version = client.get_model_version(seen[0].name, "4")
    assert f"make reproduce RUN_ID={runs['better']}" in version.description
    assert len(client.search_model_versions(f"name = '{seen[0].name}'")) == 4


def _dead_writer() -> dict[str, str]:
    from annlab.tracking.liveness import ProcessId

    me = ProcessId.current()
    return {names.PROCESS: str(ProcessId(me.host, me.boot, 2**22 + 1, "0"))}  # no such pid


@pytest.mark.parametrize("given, refusal", [
    ("live", r"is still RUNNING \(its process is alive and writing it\); register it once"),
    ("dead", r"ended KILLED; its process \(pid 4194305 .*\) ended without closing the run.* "
             "before its model was logged: nothing to register"),
    ("failed", "ended FAILED; diverged at epoch 3 before its model was logged"),
    ("verdict", "is make reproduce's verdict on run abc: register that run"),
    ("parent", "is a sweep's parent with no best run yet"),
    ("foreign", "was not made by annlab"),
])
def test_a_run_that_has_no_model_to_register_is_said_in_one_line(store_uri, experiment,
                                                                 given, refusal):
    from annlab.tracking.liveness import writer_tags

    exp = tracking.open(store_uri, experiment)
    client = MlflowClient(store_uri)
    trained = {names.CONFIG_HASH: "c0ffee"}
    tags = {"live": {**trained, **writer_tags()}, "dead": {**trained, **_dead_writer()},
            "failed": {**trained, names.FAILURE: "diverged at epoch 3"},
            "verdict": {**trained, names.REPRODUCES: "abc"},
            "parent": {names.SWEEP: "grid"}, "foreign": {}}[given]
    run_id = client.create_run(exp.id, run_name="r", tags=tags).info.run_id
    if given == "failed":
        client.set_terminated(run_id, "FAILED")
    with pytest.raises(tracking.TrackingError, match=refusal) as info:
        tracking.register_given(exp.store, run_id)
    assert "\n" not in str(info.value)
    expected = {"live": "RUNNING", "dead": "KILLED", "failed": "FAILED"}.get(given, "RUNNING")
    assert client.get_run(run_id).info.status == expected  # a dead writer's run is closed


def test_a_parent_registers_its_best_run_of_each_dataset(store_uri, experiment):
    exp = tracking.open(store_uri, experiment)
    client = MlflowClient(store_uri)
    best = {d: _run_with_a_model(store_uri, exp.id, d, v)
            for d, v in [("moons", 0.02), ("circles", 0.01)]}
    for run_id in best.values():
        client.set_tag(run_id, names.CONFIG_HASH, "c0ffee")
    parent = client.create_run(exp.id, run_name="sweep", tags={
        names.SWEEP: "grid", f"{names.BEST_RUN}.moons": best["moons"],
        f"{names.BEST_RUN}.circles": best["circles"]}).info.run_id
    registered = tracking.register_given(exp.store, parent)
    assert sorted(r.run_id for r in registered) == sorted(best.values())
    with pytest.raises(tracking.TrackingError, match="no model 'nope' with a 'champion'"):
        tracking.model_uri(exp.store, "nope")


def test_each_registered_version_is_named_on_its_logged_model(store_uri, experiment):
    import json

    exp = tracking.open(store_uri, experiment)
    run_id = _run_with_a_model(store_uri, exp.id, "r", 0.1)
    first = tracking.register(exp.store, run_id)
    tracking.register(exp.store, run_id)  # again: the same version, named once
    client = MlflowClient(store_uri)
    model_id = client.get_run(run_id).outputs.model_outputs[0].model_id
    linked = json.loads(client.get_logged_model(model_id).tags["mlflow.modelVersions"])
    assert linked == [{"name": first.name, "version": int(first.version)}]

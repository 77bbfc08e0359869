"""The model registry: each run's model a version, the champion alias moved only by a better
validation misclassification (a tie keeps it)."""

import json

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


# Registrations at the same moment (two workers ending one study, two sweeps of a dataset):
# each race is played out in order, the other process's writes landing between this one's
# read and its write; then real threads.

def test_a_registered_model_made_meanwhile_is_used(store_uri, experiment, monkeypatch):
    exp = tracking.open(store_uri, experiment)
    ours, theirs = (_run_with_a_model(store_uri, exp.id, n, 0.1) for n in ("ours", "theirs"))
    tracking.register(exp.store, theirs)
    monkeypatch.setattr(MlflowClient, "search_registered_models", lambda *a, **k: [])
    registered = tracking.register(exp.store, ours)  # its create finds theirs
    assert (registered.version, registered.champion) == ("2", "1")


def test_a_registered_model_that_cannot_be_made_is_one_line(store_uri, experiment,
                                                            monkeypatch):
    from mlflow.exceptions import MlflowException

    exp = tracking.open(store_uri, experiment)
    run_id = _run_with_a_model(store_uri, exp.id, "r", 0.1)

    def refused(self, name, *a, **k):
        raise MlflowException(f"name {name!r} is not allowed", "INVALID_PARAMETER_VALUE")

    monkeypatch.setattr(MlflowClient, "create_registered_model", refused)
    with pytest.raises(tracking.TrackingError, match=r"cannot register run r .* not allowed"):
        tracking.register(exp.store, run_id)


@pytest.mark.parametrize("theirs_first", [True, False], ids=["theirs first", "ours first"])
def test_a_run_registered_twice_at_once_keeps_one_version(store_uri, experiment, monkeypatch,
                                                          theirs_first):
    exp = tracking.open(store_uri, experiment)
    run_id = _run_with_a_model(store_uri, exp.id, "r", 0.1)
    real = MlflowClient.create_model_version

    def both(self, name, *a, model_id, **k):  # the other registration makes one meanwhile
        first, second = (real(self, name, *a, model_id=model_id, **k) for _ in range(2))
        # as a tracking server does, the logged model names each version as it is made
        self.set_logged_model_tags(model_id, {names.MODEL_VERSIONS: json.dumps(
            [{"name": name, "version": 1}, {"name": name, "version": 2}])})
        return second if theirs_first else first

    monkeypatch.setattr(MlflowClient, "create_model_version", both)
    registered = tracking.register(exp.store, run_id)
    monkeypatch.undo()
    client = MlflowClient(store_uri)
    versions = client.search_model_versions(f"name = '{registered.name}'")
    model_id = client.get_run(run_id).outputs.model_outputs[0].model_id
    linked = json.loads(client.get_logged_model(model_id).tags[names.MODEL_VERSIONS])
    assert registered.version == "1" == registered.champion
    if theirs_first:  # ours came second: deleted, and no longer named on the model
        assert [str(v.version) for v in versions] == ["1"]
        assert linked == [{"name": registered.name, "version": 1}]
    else:  # ours is kept; theirs, made second, is theirs to delete when they look
        assert sorted(str(v.version) for v in versions) == ["1", "2"]
        assert len(linked) == 2


def test_the_champion_ends_on_the_best_when_another_registration_moves_it_meanwhile(
        store_uri, experiment, monkeypatch):
    exp = tracking.open(store_uri, experiment)
    ours = _run_with_a_model(store_uri, exp.id, "ours", 0.10)
    better = _run_with_a_model(store_uri, exp.id, "better", 0.05)
    real, moves = MlflowClient.set_registered_model_alias, []

    def late(self, name, alias, version):  # the better run is registered and crowned first
        if not moves:
            moves.append("theirs")
            monkeypatch.setattr(MlflowClient, "set_registered_model_alias", real)
            tracking.register(exp.store, better)
            monkeypatch.setattr(MlflowClient, "set_registered_model_alias", late)
        moves.append(version)
        return real(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", late)
    registered = tracking.register(exp.store, ours)
    champion = MlflowClient(store_uri).get_model_version_by_alias(registered.name, "champion")
    assert champion.run_id == better and registered.champion == str(champion.version) == "2"
    assert [str(m) for m in moves] == ["theirs", "1", "2"]  # ours landed last, then was put right


def test_registrations_in_threads_at_once_leave_one_version_each_and_the_best_champion(
        store_uri, experiment):
    from concurrent.futures import ThreadPoolExecutor

    exp = tracking.open(store_uri, experiment)
    scores = [0.30, 0.10, 0.20, 0.05, 0.25, 0.15]
    runs = [_run_with_a_model(store_uri, exp.id, f"r{i}", v) for i, v in enumerate(scores)]
    twice = runs + runs[:2]  # two runs registered twice, all at once
    with ThreadPoolExecutor(len(twice)) as pool:
        done = list(pool.map(lambda r: tracking.register(exp.store, r), twice))
    client = MlflowClient(store_uri)
    versions = client.search_model_versions(f"name = '{done[0].name}'")
    assert sorted(v.run_id for v in versions) == sorted(runs)
    assert client.get_model_version_by_alias(done[0].name, "champion").run_id == runs[3]


def test_a_champion_moved_by_hand_to_a_worse_version_is_put_back_on_the_best(store_uri,
                                                                            experiment):
    """The alias names the best version, not a choice: to serve another, serve its run
    (`make serve RUN_ID=...`)."""
    exp = tracking.open(store_uri, experiment)
    best, worse, later = (_run_with_a_model(store_uri, exp.id, n, v)
                          for n, v in [("best", 0.05), ("worse", 0.10), ("later", 0.20)])
    name = tracking.register(exp.store, best).name
    tracking.register(exp.store, worse)
    client = MlflowClient(store_uri)
    client.set_registered_model_alias(name, "champion", "2")
    registered = tracking.register(exp.store, later)
    assert (registered.version, registered.champion, registered.champion_score) == ("3", "1",
                                                                                  0.05)

"""What a sweep and a study share: a parent that resumes, and an early stop that closes every run
it leaves open and says how to go on."""

import pytest
from mlflow.tracking import MlflowClient

from annlab import multirun, names, tracking
from annlab.errors import Stopped, Unfinished
from annlab.tracking import liveness


def _launching(exp, **kw):
    key = {names.SWEEP: "s", names.SWEEP_GRID: "g"}
    return multirun.launching(exp, lambda: exp.parent_run(key, "sweep-s", "tests"), "sweep-s",
                              "sweep", "finished configs are not run again", **kw)


def test_a_sweep_stopped_early_closes_what_it_left_running_and_says_how_to_resume(
        store_uri, experiment):
    exp = tracking.open(store_uri, experiment)
    client = MlflowClient(store_uri)
    with pytest.raises(Stopped) as info, _launching(exp) as (parent, resumed):
        job = client.create_run(exp.id, run_name="job", tags={names.PARENT_RUN: parent.run_id,
                                                              **liveness.writer_tags()})
        raise KeyboardInterrupt  # as a Ctrl-C arrives while the jobs run
    assert not resumed
    lines = str(info.value).splitlines()
    assert lines[0] == "interrupted (Ctrl-C): closed as KILLED:"
    assert f"  job ({job.info.run_id})" in lines
    assert lines[-2] == f"  sweep-s ({parent.run_id}), the sweep's parent"
    assert lines[-1] == "rerun the same command to resume: finished configs are not run again"
    for run_id in (parent.run_id, job.info.run_id):
        assert client.get_run(run_id).info.status == "KILLED"
    with _launching(exp) as (again, resumed):  # the same key resumes the same parent
        assert (again.run_id, resumed) == (parent.run_id, True)
        assert client.get_run(parent.run_id).info.status == "RUNNING"
        assert names.FAILURE not in client.get_run(parent.run_id).data.tags
    again.end("FINISHED")


def test_a_study_whose_other_workers_run_trials_keeps_its_parent_open(store_uri, experiment):
    exp = tracking.open(store_uri, experiment)
    with pytest.raises(Stopped) as info, _launching(exp, keep_parent=lambda: True) as (p, _):
        raise KeyboardInterrupt
    assert "stays open: other workers run trials" in str(info.value)
    run = MlflowClient(store_uri).get_run(p.run_id)
    assert run.info.status == "RUNNING" and run.data.tags[names.PROCESS] == "shared"


def test_a_fault_annlab_names_goes_out_as_it_is(store_uri, experiment):
    exp = tracking.open(store_uri, experiment)
    with pytest.raises(Unfinished, match="1 of 2"), _launching(exp):
        raise Unfinished("1 of 2 configs did not finish: x")


def test_each_job_is_told_its_parent_store_and_name_in_its_overrides(store_uri,
                                                                          experiment):
    exp = tracking.open(store_uri, experiment)
    parent, _ = exp.parent_run({names.SWEEP: "o"}, "sweep-o", "tests")
    uri = "sqlite:////tmp/it's here.db"
    assert multirun.job_overrides(["seed=1"], parent, uri, "tanh-h2") == [
        "seed=1", f"tracking.parent_run_id={parent.run_id}",
        "tracking.uri='sqlite:////tmp/it\\'s here.db'", "tracking.run_name='tanh-h2'"]
    parent.end("FINISHED")


def test_progress_lines_align_and_say_where_a_trial_was_pruned():
    lines = [multirun.progress(3, 120, "circles-tanh-h2-lr0.05", "finished",
                               {"val_accuracy": 0.97}, 1.234, width=24),
             multirun.progress(12, 120, "tanh-h10-lr0.5", "FAILED  diverged", None, 0.5,
                               width=24)]
    assert lines[0] == "[  3/120] circles-tanh-h2-lr0.05    finished      val accuracy 0.970" \
        "     1.2 s"
    assert lines[0].index("finished") == lines[1].index("FAILED")
    record = tracking.Record("r", "pruned@50-trial-1-tanh-h3-lr0.1", "FINISHED", "1", 0, {}, {},
                             {names.PRUNED_AT: "50"}, {}, ())
    assert multirun._state(record) == ("trial-1-tanh-h3-lr0.1", "pruned at 50")


def test_the_progress_poll_asks_only_for_children_that_ended(store_uri, experiment,
                                                              capsys, monkeypatch):
    monkeypatch.setattr(multirun, "POLL_SECONDS", 0.05)
    exp = tracking.open(store_uri, experiment)
    parent, _ = exp.parent_run({names.SWEEP: "p"}, "sweep-p", "tests")
    asked = []
    search = exp.search
    monkeypatch.setattr(exp, "search", lambda q: asked.append(q) or search(q))
    client = MlflowClient(store_uri)
    with multirun.reporting(exp, parent, 2, 0):
        for name in ("a", "b"):
            run = client.create_run(exp.id, run_name=name,
                                    tags={names.PARENT_RUN: parent.run_id})
            client.set_terminated(run.info.run_id)
        import time
        time.sleep(0.5)
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in out] == ["a", "b"]
    assert all("attributes.end_time >=" in q for q in asked) and len(asked) < 20
    parent.end("FINISHED")


@pytest.mark.parametrize("n_jobs, refused", [(0, True), (1.5, True), (-1, False), (2, False),
                                             (None, False)])
def test_the_joblib_launchers_worker_count_is_checked_before_anything_runs(n_jobs, refused):
    from omegaconf import OmegaConf

    from annlab.config import ConfigError
    from hydra_plugins.annlab_sweeper import _workers

    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    config = OmegaConf.create({"hydra": {"launcher": {"_target_": joblib, "n_jobs": n_jobs}}})
    if refused:
        with pytest.raises(ConfigError, match=rf"hydra.launcher.n_jobs={n_jobs}; allowed: a "
                                              "number of worker processes"):
            _workers.check(config)
    else:
        _workers.check(config)
    basic = OmegaConf.create({"hydra": {"launcher": {"_target_": "BasicLauncher"}}})
    _workers.check(basic)  # no workers to count

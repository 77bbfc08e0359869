"""MLflow's model registry: a run's logged model as a version of the registered model
``<experiment>-<dataset>`` (``annlab-moons``), and the alias ``champion`` on the version with
the lowest final validation misclassification.

A version is registered once per run. Each registration puts the alias on the best version
when that beats the champion (a tie keeps the champion; a champion moved by hand to a worse
version is put back), also when several processes register at once. Against a tracking
server the registry is the server's.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException

from annlab import names
from annlab.names import Status
from annlab.tracking.runs import Run
from annlab.tracking.store import Store, TrackingError, duplicate_row, first_line

CHAMPION = "champion"
OBJECTIVE = "val_misclassification"  # what a champion is chosen by, lowest first


@dataclass(frozen=True)
class Registered:
    name: str
    run_id: str
    version: str
    score: float | None  # the version's validation misclassification
    champion: str  # the champion's version, after this registration
    champion_score: float | None

    def line(self) -> str:
        """``registered annlab-moons version 3 (validation misclassification 0.015): ...``"""
        moved = self.champion == self.version
        return (f"registered {self.name} version {self.version} (validation misclassification "
                f"{self.score:.3f}): {'the' if moved else 'not the'} champion"
                + ("" if moved else f" (version {self.champion} is, with "
                   f"{self.champion_score:g}; a tie keeps it)")
                + "; serve it with `make serve "
                + (f"MODEL={self.name}`" if moved else f"RUN_ID={self.run_id}`"))


def model_name(experiment: str, dataset: str) -> str:
    """The registered model a run's model goes to: ``annlab-moons`` for ``make_moons``,
    ``annlab-iris`` for ``load_iris``."""
    return f"{experiment}-{dataset.removeprefix('make_').removeprefix('load_')}"


def register_given(store: Store, run_id: str) -> list[Registered]:
    """`make register`: a trained run's model; a sweep's or a study's parent: its best run's
    (each dataset's, for a grid over datasets). Anything else is one line saying what the run
    is."""
    record = Run(store, run_id).settled()
    what = f"run {record.run_name} ({run_id})"
    if record.kind == "verdict":
        raise TrackingError(f"{what} is make reproduce's verdict on run "
                            f"{record.tags[names.REPRODUCES]}: register that run")
    if record.kind in ("sweep", "study"):
        best = [v for k, v in sorted(record.tags.items())
                if k == names.BEST_RUN or k.startswith(f"{names.BEST_RUN}.")]
        if not best:
            raise TrackingError(f"{what} is a {record.kind}'s parent with no best run yet "
                                f"(status {record.status}); rerun the {record.kind} to finish it")
        return [register(store, best_id) for best_id in best]
    if record.kind == "other":
        raise TrackingError(f"{what} was not made by annlab (it has no {names.CONFIG_HASH} "
                            "tag); nothing to register")
    return [register(store, run_id, record)]


def register(store: Store, run_id: str, record=None) -> Registered:
    """Register the run's logged model (again: the version it has) and move the champion
    alias to it if it beats the champion."""
    client = store.client
    record = record or Run(store, run_id).record()
    what = f"run {record.run_name} ({run_id})"
    if record.status == Status.RUNNING:
        raise TrackingError(f"{what} is still RUNNING (its process is alive and writing it); "
                            "register it once it has ended")
    if not record.model_ids:
        ended = f"; {record.failure}" if record.failure else ""
        raise TrackingError(f"{what} ended {record.status}{ended} before its model was "
                            "logged: nothing to register")
    try:
        name = model_name(client.get_experiment(record.experiment_id).name,
                          record.dataset_name or "model")
        score = record.metrics.get(OBJECTIVE)
        _registered_model(client, name)
        model = client.get_logged_model(record.model_ids[0])
        version, dropped = _version(client, name, run_id, lambda: (
            client.create_model_version(
                # The source named by its location: a models:/ source is looked up in the
                # global tracking store, which need not be this one.
                name, source=model.artifact_location, run_id=run_id, model_id=model.model_id,
                tags={names.CONFIG_HASH: record.config_hash, names.VERSION_SCORE: str(score)},
                description=(f"The model of {what}: validation misclassification {score:g}. "
                             "Reproduce and compare everything: "
                             f"`make reproduce RUN_ID={run_id}`"))))
        _link(client, model.model_id, name, version.version, dropped)
        champion = _crown(client, name, version)
        return Registered(name, run_id, str(version.version), score, str(champion.version),
                          _score(champion))
    except MlflowException as err:
        raise TrackingError(f"cannot register {what} in {store.uri}: {first_line(err)}"
                            ) from err


def _registered_model(client, name: str) -> None:
    """The registered model ``name``, created if new (by whichever of two registrations at
    the same moment gets there first)."""
    if client.search_registered_models(f"name = '{name}'"):
        return
    try:
        client.create_registered_model(name, description=(
            f"annlab's models of `{name}`; the alias `{CHAMPION}` is on the version with the "
            "lowest final validation misclassification."))
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def _version(client, name: str, run_id: str, create):
    """The run's one version of ``name``, made by ``create`` if it has none, and the number of
    a version made here and deleted again (or None): two registrations of a run at the same
    moment (two workers ending one study) can both make one, and the later sees both and
    deletes its own, keeping the lower (versions are numbered in the order they are made)."""
    query = f"name = '{name}' and run_id = '{run_id}'"
    if found := client.search_model_versions(query):
        return min(found, key=lambda v: int(v.version)), None
    made = create()
    kept = min(client.search_model_versions(query), key=lambda v: int(v.version))
    if str(kept.version) == str(made.version):
        return kept, None
    client.delete_model_version(name, made.version)
    return kept, made.version


def _crown(client, name: str, version):
    """Put the champion alias on the best version (lowest score, then the earliest) when that
    beats the champion, or on the best (else ``version``) when there is no champion yet;
    returns the champion. Chosen from every version and checked again after each move, so
    that registrations at the same moment leave the best one, in whatever order their reads
    and writes interleave."""
    for _ in range(5):
        champion = _champion(client, name)
        scored = [v for v in client.search_model_versions(f"name = '{name}'")
                  if _score(v) is not None]
        best = min(scored, key=lambda v: (_score(v), int(v.version)), default=None)
        if champion is None:
            target = best or version
        elif best is not None and _score(champion) is not None and \
                _score(best) < _score(champion):
            target = best
        else:
            return champion
        try:
            client.set_registered_model_alias(name, CHAMPION, target.version)
        except MlflowException as err:  # set at the same moment by another: look again
            if not duplicate_row(err):
                raise
    return _champion(client, name) or target  # still moving: another registration's turn


def _link(client, model_id: str, name: str, version, dropped=None) -> None:
    """The logged model names its registered version, as MLflow's own registration does (the
    UI's "Registered models" of a run's models reads this tag); a tracking server writes it
    itself, a store opened directly does not. ``dropped``: a version of it that was deleted,
    no longer named."""
    before = json.loads(client.get_logged_model(model_id).tags.get(names.MODEL_VERSIONS) or "[]")

    def naming(entry, number) -> bool:  # whether a tag entry names this version
        return entry.get("name") == name and str(entry.get("version")) == str(number)

    linked = [v for v in before if not naming(v, dropped)]
    if not any(naming(v, version) for v in linked):
        linked.append({"name": name, "version": int(version)})
    if linked != before:
        client.set_logged_model_tags(model_id, {names.MODEL_VERSIONS: json.dumps(linked)})


def _champion(client, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:  # no champion yet
        return None


def _score(version) -> float | None:
    value = version.tags.get(names.VERSION_SCORE)
    return None if value in (None, "None") else float(value)


def model_uri(store: Store, name: str, run_id: str | None = None) -> tuple[str, str]:
    """What `make serve` serves, and the run whose model it is: the run's logged model, else
    the champion of ``name``; refused in one line when there is none."""
    if run_id:
        record = Run(store, run_id).record()
        if not record.model_ids:
            raise TrackingError(f"run {record.run_name} ({run_id}) has no logged model")
        return f"runs:/{run_id}/{names.MODEL_NAME}", run_id
    if (champion := _champion(store.client, name)) is None:
        raise TrackingError(f"no model {name!r} with a {CHAMPION!r} in {store.uri}: a sweep or "
                            "a study registers its best run, `make register RUN_ID=...` any run")
    return f"models:/{name}@{CHAMPION}", champion.run_id


def serving_example(store: Store, run_id: str) -> str:
    """A JSON body the run's model answers, as its scoring server takes it: the rows saved in
    its MLmodel's metadata (or MLflow's own serving example, for models saved before)."""
    from mlflow.models import Model

    with tempfile.TemporaryDirectory() as tmp:
        run = Run(store, run_id)
        model = Model.load(run.download_model_file("MLmodel", Path(tmp)))
        example = (model.metadata or {}).get(names.SERVING_EXAMPLE)
        if example is not None:
            return json.dumps(example, separators=(", ", ": "))
        path = run.download_model_file("serving_input_example.json", Path(tmp))
        return " ".join(path.read_text().split())

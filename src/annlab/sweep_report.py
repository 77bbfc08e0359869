"""A sweep's summary on its parent run: the table of its children and, per dataset, the figures
that compare them (:func:`write`).

Runs of different datasets are never ranked together: a grid over datasets gets a table, figures
(under ``figures/<dataset>/``), a best run and a registered model per dataset. Tables and
figures list configs in the grid's own order (activation, then hidden nodes and learning rate as
numbers: h2, h5, h10), never as text.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from annlab import multirun, names, plots, tracking
from annlab.errors import Unfinished
from annlab.names import Status
from annlab.tracking import Record

AXES = ("model.activation", "model.hidden_nodes", "train.learning_rate")  # the heatmaps' axes
DATASET = "dataset"  # the column naming each config's dataset (its data.name, or its file)
SCORES = ("val_misclassification", "val_accuracy", "train_accuracy", "test_accuracy")
TAIL = ("status", "run_name", "failure", "run_id", "config_hash")


def order_key(value: str):
    """A param's text as something that sorts numerically: "10" > "5", "[10, 5]" as a list."""
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        return (1, str(value))
    if isinstance(parsed, list):
        return (0, tuple(parsed))
    return (0, (parsed,)) if isinstance(parsed, int | float) else (1, str(value))


def summary_table(runs: list[Record], grid: Mapping[str, tuple[str, str]], keys: list[str]
                  ) -> pd.DataFrame:
    """One row per config of the grid (config hash -> (run name, dataset)): its FINISHED child
    if any, else its latest attempt, else a MISSING row; children of other grids are left out.

    Columns: the dataset and the swept ``keys`` first, then the scores, then status, names and
    ids. Rows: best validation score first.
    """
    keys = [k for k in dict.fromkeys([*AXES, *keys]) if k != "data"]
    rows = []
    for chash, (name, dataset) in grid.items():
        attempts = sorted((r for r in runs if r.config_hash == chash),
                          key=lambda r: (r.status == Status.FINISHED, r.start_time))
        if not attempts:
            rows.append({DATASET: dataset, "run_name": name, "status": "MISSING",
                         "config_hash": chash})
            continue
        r = attempts[-1]
        rows.append({DATASET: dataset, **{k: r.params.get(k) for k in keys},
                     **{k: r.metrics.get(k) for k in SCORES},
                     "status": r.status, "run_name": r.run_name, "failure": r.failure,
                     "run_id": r.run_id, "config_hash": chash})
    table = pd.DataFrame(rows).reindex(columns=[DATASET, *keys, *SCORES, *TAIL])
    table["_order"] = [tuple(order_key(v) for v in row) for row in table[keys].values]
    table = table.sort_values(["val_misclassification", "_order"], na_position="last")
    return table.drop(columns="_order").reset_index(drop=True)


def digits(n_val: int) -> int:
    """The fewest decimals that keep every fraction k/n_val apart (10^-d < 1/n_val)."""
    return int(math.floor(math.log10(max(n_val, 1)))) + 1


def write_csv(table: pd.DataFrame, path: Path, n_val: int) -> Path:
    """The table as CSV, scores rounded to what ``n_val`` validation samples resolve."""
    table.round({score: digits(n_val) for score in SCORES}).to_csv(path, index=False)
    return path


def value_order(values, given: list[str] | None = None) -> list:
    """``values`` in the order the grid gave them (``given``: a swept key's values as on the
    command line or in conf/sweep/), else as numbers: h2, h5, h10."""
    rank = {order_key(v): i for i, v in enumerate(given or [])}
    return sorted(dict.fromkeys(values), key=lambda v: (rank.get(order_key(v), len(rank)),
                                                        order_key(v)))


def grid_order(table: pd.DataFrame, swept: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """The table's rows in the grid's order (activation, hidden nodes, learning rate)."""
    swept, keys = swept or {}, [k for k in AXES if k in table]
    ranks = {key: {v: i for i, v in enumerate(value_order(table[key], swept.get(key)))}
             for key in keys}
    order = sorted(range(len(table)), key=lambda i: tuple(
        ranks[key][table[key].iloc[i]] for key in keys))
    return table.iloc[order]


def heatmap_panels(table: pd.DataFrame, swept: dict[str, list[str]]) -> dict[str, pd.DataFrame]:
    """One dataset's configs as a table of hidden nodes by learning rate per activation, each
    cell the best final validation misclassification over any other swept key (NaN: failed or
    missing)."""
    ran = table.dropna(subset=list(AXES))
    hidden, rates = (value_order(ran[key], swept.get(key)) for key in AXES[1:])
    return {act: ran[ran[AXES[0]] == act].pivot_table(
                index=AXES[1], columns=AXES[2], values=SCORES[0], aggfunc="min",
                dropna=False).reindex(index=hidden, columns=rates)
            for act in value_order(ran[AXES[0]], swept.get(AXES[0]))}


def curve_panels(finished: pd.DataFrame, curves: Mapping[str, pd.Series]
                 ) -> dict[str, dict[str, pd.Series]]:
    """One dataset's validation curves per activation, each labelled by what sets it apart in
    its panel (``h2 lr0.05``)."""
    shared = set.intersection(*(set(n.split("-")) for n in finished["run_name"])) if len(
        finished) else set()
    panels: dict[str, dict[str, pd.Series]] = {}
    for act, name in zip(finished[AXES[0]], finished["run_name"]):
        label = " ".join(p for p in name.split("-") if p not in shared and p != act)
        panels.setdefault(act, {})[label or name] = curves[name]
    return panels


def describe(name: str, grid: dict[str, list[str]], table: pd.DataFrame,
             experiment_id: str = "0") -> str:
    """The sweep parent's description (markdown): its grid, each dataset's best config (a link
    to its run), how to resume."""
    size = len(table)
    lines = [f"Sweep `{name}`: {size} configurations, every combination of", "",
             "| key | values |", "| --- | --- |"]
    lines += [f"| `{key}` | {', '.join(values)} |" for key, values in grid.items()]
    lines.append("")
    finished = table[table["status"] == Status.FINISHED]
    several = table[DATASET].nunique() > 1
    for dataset, part in finished.groupby(DATASET, sort=False):
        best = part.iloc[0]
        link = f"#/experiments/{experiment_id}/runs/{best['run_id']}"
        lines.append(f"Best{f' on {dataset}' if several else ''}: "
                     f"**[{best['run_name']}]({link})**, "
                     f"validation misclassification "
                     f"{best['val_misclassification']:g} (test accuracy "
                     f"{best['test_accuracy']:g}); reproduce it with "
                     f"`make reproduce RUN_ID={best['run_id']}`.")
    lines.append(f"{len(finished)} of {size} finished. `sweep_summary.csv` has every "
                 "configuration; the figures compare them, a set per dataset. Rerunning the "
                 "same `make sweep` runs only what is missing.")
    return "\n".join(lines)


def write(experiment: tracking.Experiment, parent: tracking.Run, parent_name: str,
          grid: Mapping[str, tuple[str, str]], swept: dict[str, list[str]], n_val: int,
          out: Path, results: dict[str, dict]) -> None:
    """The children's table and each dataset's figures onto the parent, which ends FINISHED if
    every config finished, else FAILED naming those that did not (raised as
    :class:`Unfinished` once all is written); each dataset's best model is registered. The
    curves and final boundaries come from the jobs' ``results``, else (configs done by an
    earlier attempt) from the store."""
    experiment.close_stale_children(parent.run_id, "its job ended without closing the run")
    table = summary_table(experiment.children(parent.run_id), grid, list(swept))
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / names.SWEEP_SUMMARY_FILE, n_val)
    parent.log_params({key: ",".join(values) for key, values in swept.items()})
    parent.log_artifact(out / names.SWEEP_SUMMARY_FILE)
    datasets = list(dict.fromkeys(label for _, label in grid.values()))
    bests = {}
    for dataset in datasets:
        part = table[table[DATASET] == dataset]
        where = names.FIGURES_DIR if len(datasets) == 1 else f"{names.FIGURES_DIR}/{dataset}"
        for path in _figures(experiment.store, part, dataset, swept, results, out / dataset):
            parent.log_artifact(path, where)
        finished = part[part["status"] == Status.FINISHED]
        if len(finished):
            bests[dataset] = finished.iloc[0]
    multirun.log_best(parent, {d: (b["val_misclassification"], b["run_id"], b["run_name"])
                               for d, b in bests.items()})
    parent.set_note(describe(parent_name, swept, table, experiment.id))
    failed = table[table["status"] != Status.FINISHED]
    reason = (f"{len(failed)} of {len(table)} configs did not finish: "
              + ", ".join(failed["run_name"])) if len(failed) else None
    parent.end(Status.FAILED if reason else Status.FINISHED, reason)
    for dataset in datasets:
        print(_printed(table[table[DATASET] == dataset], dataset if len(datasets) > 1 else None,
                       n_val))
    print(f"\nsweep parent run {parent_name} ({parent.run_id}): summary in its figures/ and "
          f"{names.SWEEP_SUMMARY_FILE}; browse with `make ui`", flush=True)
    for best in bests.values():
        print(tracking.register(experiment.store, best["run_id"]).line(), flush=True)
    if reason:
        raise Unfinished(reason)


def _figures(store: tracking.Store, part: pd.DataFrame, dataset: str,
             swept: dict[str, list[str]], results: dict[str, dict], out: Path) -> list[Path]:
    """One dataset's heatmaps, validation curves and final boundaries."""
    out.mkdir(parents=True, exist_ok=True)
    files = {key: out / name for key, name in names.SWEEP_FIGURE_FILES.items()}
    others = [k for k in swept if k not in (*AXES, "data") and part[k].nunique() > 1]
    best_over = f" (best over {', '.join(others)})" if others else ""
    paths = [plots.plot_heatmaps(heatmap_panels(part, swept),
                                 f"{dataset}: final validation misclassification{best_over}",
                                 files["heatmaps"])]
    finished = grid_order(part[part["status"] == Status.FINISHED], swept)
    curves = {r.run_name: _val_curve(tracking.Run(store, r.run_id), results.get(r.run_id))
              for r in finished.itertuples()}
    paths.append(plots.plot_curves(curve_panels(finished, curves),
                                   f"{dataset}: validation curves of every configuration",
                                   files["curves"]))
    tiled, title = finished, None
    if len(finished) > MAX_BOUNDARIES:  # a sheet of every one would be a 30,000-pixel strip
        best = finished["val_misclassification"].to_numpy().argsort(kind="stable")
        tiled = finished.iloc[sorted(best[:MAX_BOUNDARIES])]  # in the grid's order
        title = (f"{dataset}: final boundaries of the {MAX_BOUNDARIES} best of "
                 f"{len(finished)} configurations (validation misclassification)")
    with tempfile.TemporaryDirectory() as tmp:
        finals = {r.run_name: _final_boundary(tracking.Run(store, r.run_id),
                                              results.get(r.run_id), Path(tmp) / r.run_id)
                  for r in tiled.itertuples()}
        if finals:
            paths.append(plots.tile_images(finals, files["boundaries"], title=title))
    return paths


MAX_BOUNDARIES = 50  # final boundaries on a dataset's sheet: its best, beyond this many


PRINTED_ROWS = 10  # of each dataset's configs, the best


def _printed(table: pd.DataFrame, dataset: str | None, n_val: int) -> str:
    """One dataset's best configs, scores to the digits validation resolves; those that did
    not finish are always shown."""
    finished = table["status"] == Status.FINISHED
    shown = pd.concat([table[finished].head(PRINTED_ROWS), table[~finished]])
    shown = shown[["run_name", "status", "val_misclassification", "val_accuracy",
                   "test_accuracy"]].rename(columns={"run_name": "run", "val_misclassification":
                                                     "val misclass.", "val_accuracy": "val acc.",
                                                     "test_accuracy": "test acc."})
    places = digits(n_val)
    text = shown.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.{places}f}")
    more = int(finished.sum()) - PRINTED_ROWS
    rest = f"\n... and {more} more finished, in {names.SWEEP_SUMMARY_FILE}" if more > 0 else ""
    return (f"\n{dataset}:\n" if dataset else "\n") + text + rest


def _val_curve(run: tracking.Run, result: dict | None) -> pd.Series:
    if result and result.get("val_curve"):
        curve = result["val_curve"]
        return pd.Series(curve, index=range(1, len(curve) + 1))
    return run.metric_history("val_misclassification")


def _final_boundary(run: tracking.Run, result: dict | None, dst: Path) -> Path:
    if result and result.get("boundary_final"):
        dst.mkdir(parents=True)
        path = dst / names.FIGURE_FILES["boundary_final"]
        path.write_bytes(result["boundary_final"])
        return path
    return run.download(f"{names.FIGURES_DIR}/{names.FIGURE_FILES['boundary_final']}", dst)

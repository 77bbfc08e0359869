"""A sweep's summary on its parent run: the table of its children and the figures that compare
them (:func:`write`).

Tables and figures list configs in the grid's own order (activation, then hidden nodes and
learning rate as numbers: h2, h5, h10), never as text.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from annlab import multirun, names, tracking
from annlab.errors import Unfinished
from annlab.names import Status
from annlab.tracking import Record

AXES = ("model.activation", "model.hidden_nodes", "train.learning_rate")  # the heatmaps' axes
DATASET = "data.name"  # a grid over datasets (data=moons,circles) gets a panel per dataset too
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


def summary_table(runs: list[Record], grid: dict[str, str], keys: list[str]) -> pd.DataFrame:
    """One row per config of the grid (config hash -> run name): its FINISHED child if any,
    else its latest attempt, else a MISSING row; children of other grids are left out.

    Columns: the swept ``keys`` first, then the scores, then status, names and ids. Rows:
    best validation score first.
    """
    keys = list(dict.fromkeys([DATASET, *AXES, *keys]))
    rows = []
    for chash, name in grid.items():
        attempts = sorted((r for r in runs if r.config_hash == chash),
                          key=lambda r: (r.status == Status.FINISHED, r.start_time))
        if not attempts:
            rows.append({"run_name": name, "status": "MISSING", "config_hash": chash})
            continue
        r = attempts[-1]
        rows.append({**{k: r.params.get(k) for k in keys},
                     **{k: r.metrics.get(k) for k in SCORES},
                     "status": r.status, "run_name": r.run_name, "failure": r.failure,
                     "run_id": r.run_id, "config_hash": chash})
    table = pd.DataFrame(rows).reindex(columns=[*keys, *SCORES, *TAIL])
    table["_order"] = [tuple(order_key(v) for v in row) for row in table[keys].values]
    table = table.sort_values(["val_misclassification", "_order"], na_position="last")
    return table.drop(columns="_order").reset_index(drop=True)


def write_csv(table: pd.DataFrame, path: Path, n_val: int) -> Path:
    """The table as CSV, scores rounded to what ``n_val`` validation samples resolve: the
    fewest decimals that keep every fraction k/n_val apart (10^-d < 1/n_val)."""
    digits = int(math.floor(math.log10(max(n_val, 1)))) + 1
    table.round({score: digits for score in SCORES}).to_csv(path, index=False)
    return path


def value_order(values, given: list[str] | None = None) -> list:
    """``values`` in the order the grid gave them (``given``: a swept key's values as on the
    command line or in conf/sweep/), else as numbers: h2, h5, h10."""
    rank = {order_key(v): i for i, v in enumerate(given or [])}
    return sorted(dict.fromkeys(values), key=lambda v: (rank.get(order_key(v), len(rank)),
                                                        order_key(v)))


def _given(swept: dict[str, list[str]], key: str) -> list[str] | None:
    """A key's values as the grid gave them; datasets are swept as the group ``data``."""
    return swept.get(key) or (swept.get("data") if key == DATASET else None)


def grid_order(table: pd.DataFrame, swept: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """The table's rows in the grid's order (dataset, activation, hidden nodes, learning
    rate)."""
    swept, keys = swept or {}, [k for k in (DATASET, *AXES) if k in table]
    ranks = {key: {v: i for i, v in enumerate(value_order(table[key], _given(swept, key)))}
             for key in keys}
    order = sorted(range(len(table)), key=lambda i: tuple(
        ranks[key][table[key].iloc[i]] for key in keys))
    return table.iloc[order]


def panels(table: pd.DataFrame) -> list[str]:
    """Each row's panel in the figures: its activation, after its dataset when the grid has
    several (``circles tanh``)."""
    acts = table[AXES[0]].astype(str)
    if DATASET in table and table[DATASET].nunique() > 1:
        return list(table[DATASET].astype(str) + " " + acts)
    return list(acts)


def plot_heatmaps(table: pd.DataFrame, path: Path, swept: dict[str, list[str]]) -> Path:
    """Final validation misclassification, hidden nodes x learning rate, one panel per
    activation (the best over any other swept key), in the grid's order; failed or missing
    configs are marked. Sized by the grid, every label inside the image."""
    from matplotlib.figure import Figure

    from annlab.plots import PNG_METADATA

    ran = grid_order(table.dropna(subset=list(AXES)), swept)
    hidden, rates = (value_order(ran[key], swept.get(key)) for key in AXES[1:])
    ran = ran.assign(_panel=panels(ran))
    acts = list(dict.fromkeys(ran["_panel"]))  # panels, in the grid's order
    others = [k for k in table.columns[:list(table.columns).index(SCORES[0])]
              if k not in (*AXES, DATASET) and table[k].nunique() > 1]
    panel_w, panel_h = 1.2 + 0.75 * max(len(rates), 2), 1.3 + 0.45 * max(len(hidden), 2)
    fig = Figure(figsize=(panel_w * max(len(acts), 1) + 1.3, panel_h + 0.4), dpi=90,
                 layout="constrained")
    axes = fig.subplots(1, max(len(acts), 1), squeeze=False)[0]
    if not acts:  # no config has params to place (none ran)
        axes[0].set_axis_off()
        axes[0].text(0.5, 0.5, "no configuration ran", ha="center", va="center")
    for ax, act in zip(axes, acts):
        cells = np.full((len(hidden), len(rates)), np.nan)
        for (h, lr), group in ran[ran["_panel"] == act].groupby(
                ["model.hidden_nodes", "train.learning_rate"]):
            cells[hidden.index(h), rates.index(lr)] = group["val_misclassification"].min()
        image = ax.imshow(cells, cmap="viridis_r", vmin=0, vmax=0.5, origin="lower",
                          aspect="auto")
        for (i, j), value in np.ndenumerate(cells):
            ax.text(j, i, "failed" if np.isnan(value) else f"{value:.3f}", ha="center",
                    va="center", color="white" if np.isnan(value) or value > 0.25 else "black",
                    fontsize=8)
        ax.set(title=act, xlabel="learning rate", ylabel="hidden nodes",
               xticks=range(len(rates)), xticklabels=rates, yticks=range(len(hidden)),
               yticklabels=hidden)
    if acts:
        label = "final validation misclassification"
        if others:
            label += f"\n(best over {', '.join(others)})"
        fig.colorbar(image, ax=list(axes), label=label, shrink=0.9)
    fig.savefig(path, metadata=PNG_METADATA)
    return path


def plot_curves(curves: dict[str, pd.Series], panel_of: dict[str, str], path: Path) -> Path:
    """Every child's validation misclassification per epoch, one panel per activation
    (``panel_of``: run name -> its panel), each panel's lines named below it."""
    from matplotlib.figure import Figure

    from annlab.plots import PNG_METADATA

    names_by_panel: dict[str, list[str]] = {}
    for name in curves:
        names_by_panel.setdefault(panel_of[name], []).append(name)
    shared = set.intersection(*(set(name.split("-")) for name in curves)) if curves else set()
    n = max(len(names_by_panel), 1)
    fig = Figure(figsize=(4.2 * n + 0.6, 5.6), dpi=90, layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    for ax, (panel, run_names) in zip(axes, names_by_panel.items()):
        for name in run_names:  # labelled by what sets it apart in its panel: h2 lr0.05
            label = " ".join(p for p in name.split("-")
                             if p not in shared and p not in panel.split())
            ax.plot(curves[name].index, curves[name].values, lw=1.2, label=label or name)
        ax.set(xlabel="epoch", title=panel, ylim=(0, None))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3,
                  frameon=False)
    axes[0].set_ylabel("validation misclassification")
    if not curves:
        axes[0].text(0.5, 0.5, "no configuration finished", ha="center", va="center")
    fig.suptitle("Validation curves of every configuration")
    fig.savefig(path, metadata=PNG_METADATA)
    return path


def tile_images(images: dict[str, Path], path: Path, tile_width: int = 400) -> Path:
    """The children's final decision boundaries side by side (in the given order), each
    under a band with its run's name, large enough to read at the UI's preview size."""
    font = ImageFont.load_default(size=22)
    band = 34
    tiles = []
    for name, file in images.items():
        img = Image.open(file).convert("RGB")
        img = img.resize((tile_width, round(img.height * tile_width / img.width)),
                         Image.Resampling.LANCZOS)
        tile = Image.new("RGB", (tile_width, img.height + band), "white")
        tile.paste(img, (0, band))
        ImageDraw.Draw(tile).text((8, 5), name, fill="black", font=font)
        tiles.append(tile)
    columns = max(1, min(5, math.ceil(math.sqrt(len(tiles)))))  # 4 -> 2x2, 9 -> 3x3
    rows = -(-len(tiles) // columns)
    height = max((t.height for t in tiles), default=1)
    sheet = Image.new("RGB", (columns * tile_width, max(rows, 1) * height), "white")
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % columns) * tile_width, (k // columns) * height))
    sheet.save(path, optimize=False)
    return path


def describe(name: str, grid: dict[str, list[str]], table: pd.DataFrame) -> str:
    """The sweep parent's description (markdown): its grid, its best config, how to resume."""
    size = len(table)
    lines = [f"Sweep `{name}`: {size} configurations, every combination of", "",
             "| key | values |", "| --- | --- |"]
    lines += [f"| `{key}` | {', '.join(values)} |" for key, values in grid.items()]
    finished = table[table["status"] == Status.FINISHED]
    lines.append("")
    if len(finished):
        best = finished.iloc[0]
        lines.append(f"Best: **{best['run_name']}**, validation misclassification "
                     f"{best['val_misclassification']:g} (test accuracy "
                     f"{best['test_accuracy']:g}); reproduce it with "
                     f"`make reproduce RUN_ID={best['run_id']}`.")
    lines.append(f"{len(finished)} of {size} finished. `sweep_summary.csv` has every "
                 "configuration; the figures compare them. Rerunning the same `make sweep` "
                 "runs only what is missing.")
    return "\n".join(lines)


def write(experiment: tracking.Experiment, parent: tracking.Run, parent_name: str,
          grid: dict[str, str], swept: dict[str, list[str]], n_val: int, out: Path,
          results: dict[str, dict]) -> None:
    """The children's table and figures onto the parent, which ends FINISHED if every config
    finished, else FAILED naming those that did not (raised as :class:`Unfinished` once all is
    written). The curves and final boundaries come from the jobs' ``results``, else (configs
    done by an earlier attempt) from the store."""
    experiment.close_stale_children(parent.run_id, "its job ended without closing the run")
    table = summary_table(experiment.children(parent.run_id), grid, list(swept))
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / names.SWEEP_SUMMARY_FILE, n_val)
    parent.log_params({key: ",".join(values) for key, values in swept.items()})
    parent.log_artifact(out / names.SWEEP_SUMMARY_FILE)
    finished = table[table["status"] == Status.FINISHED]
    in_order = grid_order(finished, swept)
    store = experiment.store
    figures = [plot_heatmaps(table, out / names.SWEEP_FIGURE_FILES["heatmaps"], swept)]
    curves = {r.run_name: _val_curve(tracking.Run(store, r.run_id), results.get(r.run_id))
              for r in in_order.itertuples()}
    figures.append(plot_curves(curves, dict(zip(in_order["run_name"], panels(in_order))),
                               out / names.SWEEP_FIGURE_FILES["curves"]))
    with tempfile.TemporaryDirectory() as tmp:
        finals = {r.run_name: _final_boundary(tracking.Run(store, r.run_id),
                                              results.get(r.run_id), Path(tmp) / r.run_id)
                  for r in in_order.itertuples()}
        if finals:
            figures.append(tile_images(finals, out / names.SWEEP_FIGURE_FILES["boundaries"]))
    for path in figures:
        parent.log_artifact(path, names.FIGURES_DIR)
    if len(finished):
        best = finished.iloc[0]
        multirun.log_best(parent, best["val_misclassification"], best["run_id"], best["run_name"])
    parent.set_note(describe(parent_name, swept, table))
    failed = table[table["status"] != Status.FINISHED]
    reason = (f"{len(failed)} of {len(table)} configs did not finish: "
              + ", ".join(failed["run_name"])) if len(failed) else None
    parent.end(Status.FAILED if reason else Status.FINISHED, reason)
    shown = table[["run_name", "status", "train_accuracy", "val_accuracy", "test_accuracy"]]
    print("\n" + shown.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    print(f"\nsweep parent run {parent_name} ({parent.run_id}): summary in its figures/ and "
          f"{names.SWEEP_SUMMARY_FILE}; browse with `make ui`", flush=True)
    if len(finished):
        print(tracking.register(store, best["run_id"]).line(), flush=True)
    if reason:
        raise Unfinished(reason)


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

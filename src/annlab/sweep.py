"""What a sweep adds to its runs: the table of its children and the figures that compare them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from annlab.names import Status

if TYPE_CHECKING:
    from annlab.tracking import Record

COLUMNS = ["run_name", "status", "model.activation", "model.hidden_nodes",
           "train.learning_rate", "train_accuracy", "val_accuracy", "test_accuracy",
           "val_misclassification", "failure", "run_id", "config_hash"]


def summary_table(runs: list[Record], grid: dict[str, str]) -> pd.DataFrame:
    """One row per config of the grid (config hash -> run name): its FINISHED child if any,
    else its latest attempt, else a MISSING row. Children of other grids are left out."""
    rows = []
    for chash, name in grid.items():
        attempts = [r for r in runs if r.config_hash == chash]
        attempts.sort(key=lambda r: (r.status == Status.FINISHED, r.start_time))
        if not attempts:
            rows.append({"run_name": name, "status": "MISSING", "config_hash": chash})
            continue
        r = attempts[-1]
        rows.append({
            "run_name": r.run_name, "status": r.status, "run_id": r.run_id,
            "config_hash": chash, **{k: r.params.get(k) for k in COLUMNS if "." in k},
            **{k: r.metrics.get(k) for k in ("train_accuracy", "val_accuracy", "test_accuracy",
                                              "val_misclassification")},
            "failure": r.failure,
        })
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    return table.sort_values(["val_misclassification", "run_name"], na_position="last",
                             ignore_index=True)


def plot_heatmaps(table: pd.DataFrame, path: Path) -> Path:
    """Final validation misclassification, hidden nodes x learning rate, one panel per
    activation; failed or missing configs are left blank and marked."""
    from matplotlib.figure import Figure

    from annlab.plots import PNG_METADATA

    acts = sorted(table["model.activation"].dropna().unique())
    hidden = sorted(table["model.hidden_nodes"].dropna().unique(), key=_numeric)
    rates = sorted(table["train.learning_rate"].dropna().unique(), key=float)
    fig = Figure(figsize=(4.2 * max(len(acts), 1), 3.6), dpi=90)
    axes = fig.subplots(1, max(len(acts), 1), squeeze=False)[0]
    if not acts:  # no config has params to place (none ran)
        axes[0].set_axis_off()
        axes[0].text(0.5, 0.5, "no configuration ran", ha="center", va="center")
    for ax, act in zip(axes, acts):
        sub = table[table["model.activation"] == act]
        grid = np.full((len(hidden), len(rates)), np.nan)
        for _, row in sub.iterrows():
            grid[hidden.index(row["model.hidden_nodes"]),
                 rates.index(row["train.learning_rate"])] = row["val_misclassification"]
        image = ax.imshow(grid, cmap="viridis_r", vmin=0, vmax=0.5, origin="lower")
        for (i, j), value in np.ndenumerate(grid):
            ax.text(j, i, "failed" if np.isnan(value) else f"{value:.3f}", ha="center",
                    va="center", color="white" if np.isnan(value) or value > 0.25 else "black",
                    fontsize=8)
        ax.set(title=act, xlabel="learning rate", ylabel="hidden nodes",
               xticks=range(len(rates)), xticklabels=rates, yticks=range(len(hidden)),
               yticklabels=hidden)
    if acts:
        fig.colorbar(image, ax=list(axes), label="final validation misclassification")
    fig.savefig(path, metadata=PNG_METADATA)
    return path


def _numeric(text: str):
    return [int(t) for t in str(text).strip("[]").split(",")]


def plot_curves(curves: dict[str, pd.Series], path: Path) -> Path:
    """Every child's validation misclassification per epoch, overlaid."""
    from matplotlib.figure import Figure

    from annlab.plots import PNG_METADATA

    fig = Figure(figsize=(7.5, 4.8), dpi=90)
    ax = fig.add_subplot()
    for name, curve in sorted(curves.items()):
        ax.plot(curve.index, curve.values, lw=1, label=name)
    ax.set(xlabel="epoch", ylabel="validation misclassification", ylim=(0, None),
           title="Validation curves of every configuration")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=6, ncol=2, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_METADATA)
    return path


def tile_images(images: dict[str, Path], path: Path, columns: int = 3,
                tile_width: int = 320) -> Path:
    """The children's final decision boundaries side by side, each labelled with its run."""
    names = sorted(images)
    tiles = []
    for name in names:
        img = Image.open(images[name]).convert("RGB")
        img = img.resize((tile_width, round(img.height * tile_width / img.width)),
                         Image.Resampling.LANCZOS)
        ImageDraw.Draw(img).text((6, 4), name, fill="black")
        tiles.append(img)
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    height = max((t.height for t in tiles), default=1)
    sheet = Image.new("RGB", (columns * tile_width, max(rows, 1) * height), "white")
    for k, tile in enumerate(tiles):
        sheet.paste(tile, ((k % columns) * tile_width, (k // columns) * height))
    sheet.save(path, optimize=False)
    return path

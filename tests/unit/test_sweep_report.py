"""A sweep's summary: one row per config of the grid, in the grid's own order, per dataset."""

import math

import numpy as np
import pandas as pd
import pytest

from annlab import sweep_report
from annlab.names import Status
from annlab.tracking import Record


def _record(name, chash, status, val=None, start=0, **params):
    params = {"model.activation": "tanh", "model.hidden_nodes": "2",
              "train.learning_rate": "0.5", **params}
    metrics = {} if val is None else {"val_misclassification": val, "val_accuracy": 1 - val,
                                      "train_accuracy": 1.0, "test_accuracy": 0.9}
    return Record(f"id-{name}-{start}", name, Status(status), "1", start, params, metrics,
                  {"annlab.config_hash": chash}, {}, ())


def test_a_row_per_config_its_finished_attempt_first_and_missing_ones_said():
    runs = [_record("a", "h1", "FAILED", start=1), _record("a", "h1", "FINISHED", 0.1, start=0),
            _record("b", "h2", "FINISHED", 0.05, **{"model.hidden_nodes": "10"}),
            _record("other", "h9", "FINISHED", 0.0)]  # another grid's child
    grid = {"h1": ("a", "moons"), "h2": ("b", "moons"), "h3": ("c", "moons")}
    table = sweep_report.summary_table(runs, grid, ["model.hidden_nodes"])
    assert list(table["run_name"]) == ["b", "a", "c"]  # best first, missing last
    assert list(table["status"]) == ["FINISHED", "FINISHED", "MISSING"]
    assert list(table.columns[:4]) == ["dataset", "model.activation", "model.hidden_nodes",
                                       "train.learning_rate"]
    assert list(table["dataset"]) == ["moons"] * 3


@pytest.mark.parametrize("n_val, places", [(200, 3), (30, 2), (1000, 4)])
def test_scores_are_rounded_to_what_the_validation_split_resolves(tmp_path, n_val, places):
    assert sweep_report.digits(n_val) == places
    table = pd.DataFrame({"val_misclassification": [1 / 3], "val_accuracy": [2 / 3],
                          "train_accuracy": [0.5], "test_accuracy": [0.25]})
    sweep_report.write_csv(table, tmp_path / "s.csv", n_val)
    value = (tmp_path / "s.csv").read_text().splitlines()[1].split(",")[0]
    assert value == f"{1 / 3:.{places}f}"
    assert 10 ** -places < 1 / n_val  # every k/n_val stays apart


def test_tables_and_figures_follow_the_grids_own_order():
    assert sweep_report.value_order(["relu", "tanh", "sigmoid", "tanh"],
                                    ["tanh", "sigmoid", "relu"]) == ["tanh", "sigmoid", "relu"]
    assert sweep_report.value_order(["10", "2", "5"]) == ["2", "5", "10"]  # numbers as numbers
    table = pd.DataFrame({"model.activation": ["relu", "tanh", "tanh"],
                          "model.hidden_nodes": ["2", "10", "2"],
                          "train.learning_rate": ["0.5", "0.5", "0.5"]})
    ordered = sweep_report.grid_order(table, {"model.activation": ["tanh", "relu"]})
    assert list(zip(ordered["model.activation"], ordered["model.hidden_nodes"])) == [
        ("tanh", "2"), ("tanh", "10"), ("relu", "2")]


def test_heatmap_cells_are_the_best_over_other_keys_and_failed_ones_are_empty():
    runs = [_record("a", "h1", "FINISHED", 0.2, **{"train.reg_lambda": "0"}),
            _record("b", "h2", "FINISHED", 0.1, **{"train.reg_lambda": "0.1"}),
            _record("c", "h3", "FAILED", **{"model.hidden_nodes": "10"})]
    grid = {h: (n, "moons") for n, h in (("a", "h1"), ("b", "h2"), ("c", "h3"))}
    table = sweep_report.summary_table(runs, grid, ["train.reg_lambda"])
    (panel,) = sweep_report.heatmap_panels(table, {}).values()
    assert list(panel.index) == ["2", "10"] and list(panel.columns) == ["0.5"]
    assert panel.loc["2", "0.5"] == 0.1 and math.isnan(panel.loc["10", "0.5"])


def test_curves_are_labelled_by_what_sets_them_apart_in_their_panel():
    finished = pd.DataFrame({"model.activation": ["tanh", "tanh", "relu"],
                             "run_name": ["tanh-h2-lr0.5", "tanh-h10-lr0.5", "relu-h2-lr0.5"]})
    curves = {n: pd.Series(np.ones(3)) for n in finished["run_name"]}
    panels = sweep_report.curve_panels(finished, curves)
    assert {k: list(v) for k, v in panels.items()} == {"tanh": ["h2", "h10"], "relu": ["h2"]}


def test_the_description_names_each_datasets_best_when_there_are_several():
    table = pd.DataFrame({"dataset": ["moons", "iris"], "status": ["FINISHED", "FINISHED"],
                          "run_name": ["tanh-h2", "iris-tanh-h2"],
                          "val_misclassification": [0.02, 0.1], "test_accuracy": [0.98, 0.9],
                          "run_id": ["r1", "r2"]})
    text = sweep_report.describe("sweep-x", {"data": ["moons", "iris"]}, table, "7")
    assert "Best on moons: **[tanh-h2](#/experiments/7/runs/r1)**" in text
    assert "Best on iris: **[iris-tanh-h2](#/experiments/7/runs/r2)**" in text
    single = sweep_report.describe("sweep-x", {}, table.iloc[:1], "7")
    assert "Best: **[tanh-h2](#/experiments/7/runs/r1)**" in single and "2 of 2" not in single


@pytest.mark.parametrize("limit, tiled, title", [
    (2, ["h2", "h5"], "moons: final boundaries of the 2 best of 6 configurations "
                      "(validation misclassification)"),
    (6, ["h1", "h2", "h3", "h4", "h5", "h6"], None)])
def test_a_large_grids_boundary_sheet_holds_its_best_in_the_grids_order(
        tmp_path, monkeypatch, limit, tiled, title):
    import io

    from PIL import Image

    from annlab import plots

    vals = {1: 0.3, 2: 0.1, 3: 0.2, 4: 0.25, 5: 0.05, 6: 0.1}  # h2 and h6 tie: h2 first
    runs = [_record(f"h{h}", f"c{h}", "FINISHED", v, **{"model.hidden_nodes": str(h)})
            for h, v in vals.items()]
    swept = {"model.hidden_nodes": [str(h) for h in vals]}
    table = sweep_report.summary_table(runs, {f"c{h}": (f"h{h}", "moons") for h in vals},
                                       list(swept))
    png = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(png, format="PNG")
    results = {r.run_id: {"val_curve": [0.5, r.metrics["val_misclassification"]],
                          "boundary_final": png.getvalue()} for r in runs}
    seen = {}
    monkeypatch.setattr(sweep_report, "MAX_BOUNDARIES", limit)
    monkeypatch.setattr(plots, "tile_images", lambda images, path, title=None: seen.update(
        names=list(images), title=title) or path)
    sweep_report._figures(None, table, "moons", swept, results, tmp_path)
    assert seen == {"names": tiled, "title": title}

"""Figures: files that open, frames that follow the snapshots, bytes that repeat; summary
figures that stay readable as grids grow."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageSequence

from annlab import plots, training
from annlab.data import make_splits
from annlab.network import NeuralNetClassifier


@pytest.fixture(scope="module")
def trained(resolved):
    splits = make_splits(resolved(["data.n_samples=200", "data.standardize=false"]).data, 0)
    model = NeuralNetClassifier(hidden_nodes=5, epochs=40, random_state=0)
    snapshots = training.train(model, splits, training.frame_epochs(40, 6))
    return model, splits, snapshots, training.history_frame(model)


def _render(trained, out):
    model, splits, snapshots, history = trained
    plots.plot_misclassification(history, out / "m.png", 4, 3, 50)
    plots.render_boundary(snapshots, model.activation, plots.Plane(splits.X_train),
                          splits.y_train, model.classes_, out / "b.gif", out / "b.png",
                          grid_size=30, fps=5, width=4, height=3, dpi=50)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_figures_open_with_the_right_frames_and_repeat_bytewise(trained, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = _render(trained, tmp_path / "a"), _render(trained, tmp_path / "b")
    assert first == second
    gif = Image.open(tmp_path / "a" / "b.gif")
    assert gif.n_frames == len(trained[2]) == 6 and gif.size == (200, 150)
    png = Image.open(tmp_path / "a" / "m.png")
    assert png.size == (200, 150) and "Software" not in png.info


def test_each_gif_frame_shows_its_own_snapshot_and_the_last_is_the_png(trained, tmp_path):
    model, splits, snapshots, history = trained
    _render(trained, tmp_path)
    frames = [np.asarray(f.convert("RGB"), dtype=float)
              for f in ImageSequence.Iterator(Image.open(tmp_path / "b.gif"))]
    final = np.asarray(Image.open(tmp_path / "b.png").convert("RGB"), dtype=float)
    # The GIF's palette costs a few levels per channel, nothing more.
    assert np.abs(frames[-1] - final).mean() < 2.0
    extent = plots.plot_extent(splits.X_train)
    renderer = plots.BoundaryRenderer(splits.X_train, splits.y_train, model.classes_, extent,
                                      4, 3, 50)
    probs = plots.probability_grids(snapshots, model.activation, extent, 30)
    drawn = [np.asarray(renderer.frame(code, ""), dtype=float) for code in renderer.codes(probs)]
    for k, frame in enumerate(frames):  # frame k is closest to snapshot k's field
        distances = [np.abs(frame - d).mean() for d in drawn]
        assert int(np.argmin(distances)) == k, distances


def test_step_images_are_the_animations_frames_at_their_epochs(trained, tmp_path):
    model, splits, snapshots, history = trained
    epochs = [s.epoch for s in snapshots]
    steps = {epochs[1]: tmp_path / "early.png", epochs[4]: tmp_path / "late.png"}
    plots.render_boundary(snapshots, model.activation, plots.Plane(splits.X_train),
                          splits.y_train, model.classes_, tmp_path / "b.gif",
                          tmp_path / "b.png", grid_size=30, fps=5, width=4, height=3, dpi=50,
                          step_paths=steps)
    frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(
        Image.open(tmp_path / "b.gif"))]
    for index, epoch in ((1, epochs[1]), (4, epochs[4])):
        with Image.open(steps[epoch]) as image:
            assert image.size == (200, 150)
            np.testing.assert_array_equal(np.asarray(image.convert("RGB")), frames[index])
    assert not np.array_equal(frames[1], frames[4])


def test_probability_grid_matches_the_model_at_the_last_snapshot(trained):
    model, splits, snapshots, _ = trained
    extent = plots.plot_extent(splits.X_train)
    probs = plots.probability_grids(snapshots, model.activation, extent, grid_size=7)
    assert probs.shape == (6, 7, 7, 2)
    xs = extent[0] + (np.arange(7) + 0.5) / 7 * (extent[1] - extent[0])
    ys = extent[3] - (np.arange(7) + 0.5) / 7 * (extent[3] - extent[2])
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    np.testing.assert_allclose(probs[-1].reshape(-1, 2), model.predict_proba(grid), rtol=1e-12)


@pytest.mark.parametrize("activations, datasets", [(1, 1), (3, 1), (3, 4)])
def test_heatmaps_wrap_into_rows_and_stay_readable_at_1600_pixels(tmp_path, activations,
                                                                     datasets):
    cells = pd.DataFrame(np.linspace(0, 0.5, 25).reshape(5, 5), index=[2, 4, 8, 16, 32],
                         columns=[0.01, 0.05, 0.1, 0.5, 1.0])
    panels = {f"d{d} a{a}": cells for d in range(datasets) for a in range(activations)}
    path = plots.plot_heatmaps(panels, "title", tmp_path / "h.png")
    with Image.open(path) as image:
        width, height = image.size
    n = len(panels)
    assert width <= 1600 and 0.25 < height / width < 3
    columns = min(n, plots.MAX_PANEL_COLUMNS)
    assert height > (n // columns) * 250  # a row of panels per MAX_PANEL_COLUMNS of them


def test_curves_that_oscillate_are_drawn_underneath_the_others(tmp_path):
    epochs = np.arange(1, 201)
    smooth = pd.Series(0.5 * np.exp(-epochs / 40), index=epochs)
    rough = pd.Series(np.where(epochs % 2, 0.1, 0.5), index=epochs)
    below, above = plots.curve_style(rough, "lr5"), plots.curve_style(smooth, "lr0.5")
    assert below["zorder"] < above["zorder"] and below["alpha"] < above["alpha"]
    assert below["label"] == "lr5 (oscillates)" and above["label"] == "lr0.5"
    path = plots.plot_curves({"tanh": {"lr0.5": smooth, "lr5": rough}}, "t", tmp_path / "c.png")
    with Image.open(path) as image:
        assert image.width < 1600


def test_tiles_are_named_and_fit_1600_pixels(tmp_path):
    sources = {}
    for k in range(25):
        sources[f"run-{k}"] = tmp_path / f"{k}.png"
        Image.new("RGB", (512, 384), (k * 10, 0, 0)).save(sources[f"run-{k}"])
    with Image.open(plots.tile_images(sources, tmp_path / "t.png")) as sheet:
        assert sheet.width <= 1600 and sheet.height > sheet.width * 0.6  # 5 rows of 5
        assert sheet.getpixel((10, sheet.height - 10))[0] == 200  # tile 20 starts the last row
        assert sheet.getpixel((sheet.width - 10, sheet.height - 10))[0] == 240  # and 24 ends it


def test_a_titled_sheet_has_its_title_above_the_tiles(tmp_path):
    sources = {f"run-{k}": tmp_path / f"{k}.png" for k in range(4)}
    for k, path in enumerate(sources.values()):
        Image.new("RGB", (400, 300), (0, 0, 50 * (k + 1))).save(path)
    plain = plots.tile_images(sources, tmp_path / "plain.png")
    titled = plots.tile_images(sources, tmp_path / "titled.png", title="the best 4")
    with Image.open(plain) as a, Image.open(titled) as b:
        band = b.height - a.height
        assert a.width == b.width and band > 0  # one band more, on top
        assert a.getpixel((a.width - 1, a.height - 1)) == b.getpixel((b.width - 1, b.height - 1))
        assert len(b.crop((0, 0, b.width, band)).getcolors(1 << 16)) > 1  # the title's text

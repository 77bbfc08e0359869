"""Plot stage: Figure 3 (misclassification curves) and Figure 2 (the boundary animation).

Figures are byte-for-byte reproducible: no timestamps or software versions in the files, fonts
from matplotlib's bundled DejaVu, and the same arithmetic on every run.

The animation does not redraw a matplotlib figure per frame. Matplotlib draws the static parts
once (axes, labels, the training points) on a transparent canvas; each frame is then the class-
probability field, evaluated for all frames in batched numpy passes, upsampled and banded into
a few colour codes, overlaid by that canvas and titled with Pillow. The GIF's frames are built
directly as indices into one palette (the one quantising the first and last frames gives):
each colour code, and each pair of colour code and translucent overlay colour, is mapped once;
only the titles are quantised per frame.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
from matplotlib import colormaps, font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:  # plots must not import scikit-learn (a sweep's launcher uses this module)
    from annlab.training import Snapshot

CLASS_COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
FIELD_ALPHA = 0.45  # how strongly the probability field tints the white background
BOUNDARY_RGB = (40, 40, 40)
PNG_METADATA = {"Software": None}  # no version string: bytes depend on pixels only
SHADE_LEVELS = 10  # probability bands, as contourf draws them; flat bands also compress well
MAX_CHUNK_ELEMENTS = 500_000  # bounds the batched grid evaluation (memory, cache)
FRAMES_PER_PASS = 5  # frames computed together, from probabilities to palette indices
MAX_POINTS = 5000  # training points drawn in Figure 2 at most


def own_style():
    """Inside, figures are drawn in matplotlib's default style, whatever the process has set
    (a notebook's style, or the ggplot style Optuna's plots set for the whole process): a
    run's figures depend on its config only."""
    from matplotlib import style

    return style.context("default")


def plot_misclassification(history: pd.DataFrame, path: Path, width: float, height: float,
                           dpi: int) -> Path:
    """Figure 3: fraction of misclassified samples per epoch, training and validation."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    ax = fig.add_subplot()
    ax.plot(history.index, history["train_misclassification"], label="training", lw=1.2)
    ax.plot(history.index, history["val_misclassification"], label="validation", lw=1.2)
    ax.set(xlabel="epoch", ylabel="fraction misclassified",
           title="Misclassification vs. epoch", xlim=(1, max(history.index[-1], 2)), ylim=(0, None))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.11, top=0.92)  # tight_layout: 2 draws
    fig.savefig(path, metadata=PNG_METADATA)
    return path


def plot_confusion(matrix: np.ndarray, classes, path: Path, title: str, width: float,
                   height: float, dpi: int) -> Path:
    """A confusion matrix: true class by row, predicted by column, each cell its count."""
    fig = Figure(figsize=(width, height), dpi=dpi)
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if count > matrix.max() / 2 else "black")
    ticks = range(len(classes))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=classes, yticklabels=classes,
           xlabel="predicted class", ylabel="true class", title=title)
    fig.tight_layout()
    fig.savefig(path, metadata=PNG_METADATA)
    return path


@dataclass(frozen=True)
class Plane:
    """The plane Figure 2 draws: the training points' coordinates in it, the map from its
    points to the network's inputs (None: they are the inputs), its axis labels and what the
    frames' titles say first."""

    points: np.ndarray
    to_inputs: Callable[[np.ndarray], np.ndarray] | None = None
    labels: tuple[str, str] = ("$x_1$", "$x_2$")
    title: str = ""


def plot_extent(X: np.ndarray, margin: float = 0.5) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax) around the data."""
    lo, hi = X.min(axis=0) - margin, X.max(axis=0) + margin
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def probability_grids(snapshots: list[Snapshot], activation: str, extent, grid_size: int,
                      dtype=np.float64, to_inputs=None) -> np.ndarray:
    """Class probabilities on a grid_size^2 grid for every snapshot: (frames, gy, gx, K);
    ``to_inputs`` maps the grid's points to the network's inputs (see :class:`Plane`).

    Row 0 is the top of the plot (largest y), as in an image. Frames are evaluated together,
    stacked weights through :func:`annlab.network.forward`, in chunks of bounded memory; each
    class's probabilities are one contiguous (frames, gy, gx) plane of the result.
    """
    from annlab.network import forward

    xmin, xmax, ymin, ymax = extent
    centres = (np.arange(grid_size) + 0.5) / grid_size
    xs, ys = xmin + centres * (xmax - xmin), ymax - centres * (ymax - ymin)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    grid = (grid if to_inputs is None else to_inputs(grid)).astype(dtype)
    width = max(W.shape[1] for W in snapshots[0].coefs)
    chunk = max(1, MAX_CHUNK_ELEMENTS // (len(grid) * width))
    probs = np.empty((len(snapshots), snapshots[0].coefs[-1].shape[1], len(grid)), dtype)
    for start in range(0, len(snapshots), chunk):
        part = snapshots[start : start + chunk]
        coefs = [np.stack(ws).astype(dtype) for ws in zip(*(s.coefs for s in part))]
        intercepts = [np.stack(bs).astype(dtype) for bs in zip(*(s.intercepts for s in part))]
        with np.errstate(over="ignore"):  # exp overflowing in tanh/sigmoid: an exact limit
            logp = forward(grid, coefs, intercepts, activation)[1]
            np.exp(logp, out=probs[start : start + chunk].mT)
    return probs.mT.reshape(len(snapshots), grid_size, grid_size, -1)


def _at_most(n: int, limit: int) -> slice | np.ndarray:
    """Which of ``n`` points a figure shows: all, or ``limit`` of them spread evenly (a plot of
    a million points is one blot, and slow)."""
    return slice(None) if n <= limit else np.linspace(0, n - 1, limit).round().astype(int)


class BoundaryRenderer:
    """Draws frames of Figure 2 over one static matplotlib layer (axes, labels, points)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, classes: np.ndarray, extent, width: float,
                 height: float, dpi: int, labels: tuple[str, str] = Plane.labels):
        self.extent = extent
        fig = Figure(figsize=(width, height), dpi=dpi)
        fig.patch.set_alpha(0.0)
        ax = fig.add_subplot()
        ax.patch.set_alpha(0.0)
        shown = _at_most(len(y), MAX_POINTS)
        X, y = X[shown], y[shown]
        for k, label in enumerate(classes):
            pts = X[y == label]
            ax.scatter(pts[:, 0], pts[:, 1], s=14, color=CLASS_COLORS[k], edgecolors="black",
                       linewidths=0.4, label=label if isinstance(label, str) else f"class {label}")
        ax.set(xlim=extent[:2], ylim=extent[2:], xlabel=labels[0], ylabel=labels[1])
        ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
        fig.subplots_adjust(left=0.12, right=0.96, bottom=0.12, top=0.9)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        self.overlay = Image.frombuffer("RGBA", canvas.get_width_height(),
                                        canvas.buffer_rgba(), "raw", "RGBA", 0, 1).copy()
        box = ax.get_window_extent()
        h = self.overlay.height
        self.box = (round(box.x0), h - round(box.y1), round(box.x1), h - round(box.y0))
        self.title_centre = ((self.box[0] + self.box[2]) / 2, self.box[1] / 2)
        font_path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"))
        self.font = ImageFont.truetype(font_path, size=round(11 * dpi / 72))
        # The field's colours by code: code = sum_k band_k * (SHADE_LEVELS + 1)**(K-1-k) with
        # band_k = floor(p_k * SHADE_LEVELS) (SHADE_LEVELS, p_k = 1, shows as the top band);
        # the last code is the boundary's.
        n = len(classes)
        bands = np.indices((SHADE_LEVELS + 1,) * n).reshape(n, -1).T
        bands = np.minimum(bands, SHADE_LEVELS - 1).astype(np.float32) + 0.5
        tint = FIELD_ALPHA * 255 * np.array([to_rgb(c) for c in CLASS_COLORS[:n]])
        rgb = 255 * (1 - FIELD_ALPHA) + (bands / SHADE_LEVELS) @ tint
        self.colors = np.vstack([(rgb + 0.5).astype(np.uint8), BOUNDARY_RGB]).astype(np.uint8)
        self.edge_code = len(self.colors) - 1

    def codes(self, probs: np.ndarray) -> np.ndarray:
        """Colour codes of the axes area, (frames, h, w), for (frames, gy, gx, K) probability
        grids: each grid upsampled bilinearly, banded, and the boundary drawn where the
        likeliest class changes."""
        w, h = self.box[2] - self.box[0], self.box[3] - self.box[1]
        codes = np.empty((len(probs), h, w), np.min_scalar_type(self.edge_code))
        for grid, code in zip(probs[..., :-1].astype(np.float32, copy=False), codes):
            fine = [np.asarray(Image.fromarray(grid[..., k], "F")
                               .resize((w, h), Image.Resampling.BILINEAR))
                    for k in range(grid.shape[-1])]
            fine.append(1 - sum(fine))  # the last class: what the others leave
            label, best = np.zeros((h, w), np.uint8), fine[0]
            code[:] = (best * SHADE_LEVELS).astype(code.dtype)  # band: floor(p * SHADE_LEVELS)
            for k, f in enumerate(fine[1:], 1):
                code *= SHADE_LEVELS + 1
                code += (f * SHADE_LEVELS).astype(code.dtype)
                np.copyto(label, k, where=f > best)
                best = np.maximum(best, f)
            edge = np.zeros((h, w), bool)
            np.not_equal(label[:, 1:], label[:, :-1], out=edge[:, 1:])
            edge[1:] |= label[1:] != label[:-1]
            np.copyto(code, self.edge_code, where=edge)
        return codes

    def frame(self, code: np.ndarray, title: str) -> Image.Image:
        """One frame in full colour."""
        img = Image.new("RGBA", self.overlay.size, "white")
        img.paste(Image.fromarray(self.colors[code], "RGB"), self.box[:2])
        img.alpha_composite(self.overlay)
        ImageDraw.Draw(img).text(self.title_centre, title, fill="black", font=self.font,
                                 anchor="mm")
        return img.convert("RGB")

    def indexer(self, palette: Image.Image):
        """``indexed(codes, titles)``: frames as ``palette`` indices, each pixel the palette
        colour Pillow picks for its :meth:`frame` pixel (``frame(...).quantize(palette)``),
        looked up per colour code, per pair of colour code and translucent overlay colour, and
        quantised per frame only in the title's margin (which clips the title).
        """
        x0, y0, x1, y1 = self.box

        def to_palette(rgb: np.ndarray) -> np.ndarray:
            img = Image.fromarray(np.ascontiguousarray(rgb.reshape(-1, rgb.shape[-2], 3)), "RGB")
            return np.asarray(img.quantize(palette=palette, dither=Image.Dither.NONE)
                              ).reshape(rgb.shape[:-1])

        still = Image.new("RGBA", self.overlay.size, "white")
        still.alpha_composite(self.overlay)
        still = still.convert("RGB")
        base = to_palette(np.asarray(still))
        code_index = to_palette(self.colors[None])[0]
        overlay = np.asarray(self.overlay)[y0:y1, x0:x1].reshape(-1, 4)
        opaque = np.flatnonzero(overlay[:, 3] == 255)
        part = np.flatnonzero((overlay[:, 3] > 0) & (overlay[:, 3] < 255))  # translucent
        tints, tint_of = np.unique(overlay[part].view(np.uint32), return_inverse=True)
        tints, tint_of = tints.view(np.uint8).reshape(-1, 4), tint_of.ravel()
        margin = still.crop((0, 0, still.width, y0))  # the title's, above the axes

        def indexed(codes: np.ndarray, titles: list[str]) -> list[Image.Image]:
            field = np.take(code_index, codes.astype(np.intp)).reshape(len(codes), -1)
            field[:, opaque] = base[y0:y1, x0:x1].reshape(-1)[opaque]
            under = np.take(codes.reshape(len(codes), -1), part, axis=1)
            used = np.flatnonzero(np.bincount(under.ravel(), minlength=len(self.colors)))
            mixed = Image.fromarray(np.repeat(self.colors[used][None], len(tints), 0), "RGB")
            mixed = mixed.convert("RGBA")  # every used field colour under every tint
            mixed.alpha_composite(Image.fromarray(np.repeat(tints[:, None], len(used), 1),
                                                  "RGBA"))
            rank = np.zeros(len(self.colors), np.intp)
            rank[used] = np.arange(len(used))
            field[:, part] = np.take(to_palette(np.asarray(mixed.convert("RGB"))),
                                     tint_of * len(used) + rank[under])
            margins = np.empty((len(codes), y0, still.width, 3), np.uint8)
            for rgb, title in zip(margins, titles):
                img = margin.copy()
                ImageDraw.Draw(img).text(self.title_centre, title, fill="black",
                                         font=self.font, anchor="mm")
                rgb[:] = img
            index = np.empty((len(codes), *base.shape), np.uint8)
            index[:, :y0] = to_palette(margins)
            index[:, y0:] = base[y0:]
            index[:, y0:y1, x0:x1] = field.reshape(codes.shape)
            frames = [Image.fromarray(frame, "P") for frame in index]
            for frame in frames:
                frame.putpalette(palette.palette)
            return frames

        return indexed


_renderers: dict[str, BoundaryRenderer] = {}


def _renderer(X: np.ndarray, y: np.ndarray, classes: np.ndarray, extent, width: float,
              height: float, dpi: int, labels: tuple[str, str]) -> BoundaryRenderer:
    """The renderer of these points and sizes, drawn once per process: a sweep's jobs share
    their data, and its static layer is most of a small run's figure time."""
    h = hashlib.sha256(repr((extent, width, height, dpi, labels, X.shape, y.dtype.str,
                             classes.tolist())).encode())
    for array in (X, y):
        h.update(np.ascontiguousarray(array).view(np.uint8))
    key = h.hexdigest()
    if key not in _renderers:
        if len(_renderers) >= 4:
            _renderers.pop(next(iter(_renderers)))
        _renderers[key] = BoundaryRenderer(X, y, classes, extent, width, height, dpi, labels)
    return _renderers[key]


def render_boundary(snapshots: list[Snapshot], activation: str, plane: Plane, y: np.ndarray,
                    classes: np.ndarray, gif_path: Path, final_path: Path, *, grid_size: int,
                    fps: float, width: float, height: float, dpi: int,
                    step_paths: Mapping[int, Path] | None = None) -> tuple[Path, Path]:
    """Figure 2: the training sample over the shaded class regions in ``plane``, animated
    over epochs; its last frame as a PNG too.

    ``step_paths`` (epoch -> path) also saves those epochs' frames as PNG files.
    """
    extent = plot_extent(plane.points)
    renderer = _renderer(plane.points, y, classes, extent, width, height, dpi, plane.labels)
    last = snapshots[-1].epoch
    titles = [f"{plane.title}epoch {s.epoch}/{last}   training score "
              f"{1 - s.train_misclassification:.3f}" for s in snapshots]

    def codes(part: list[Snapshot]) -> np.ndarray:  # float32: what the upsampling takes
        return renderer.codes(probability_grids(part, activation, extent, grid_size,
                                                np.float32, plane.to_inputs))

    ends = codes([snapshots[0], snapshots[-1]])
    first, final = renderer.frame(ends[0], titles[0]), renderer.frame(ends[1], titles[-1])
    final.save(final_path, optimize=False)
    # One palette for the whole animation, from its first and last frames: Pillow's fast
    # octree, as close to the colours as its much slower median cut. 255 colours leave Pillow
    # an index for transparency: each frame stores only the pixels that changed.
    both = Image.new("RGB", (first.width, 2 * first.height))
    both.paste(first, (0, 0))
    both.paste(final, (0, first.height))
    indexed = renderer.indexer(both.quantize(255, method=Image.Quantize.FASTOCTREE))
    frames = (frame for i in range(0, len(snapshots), FRAMES_PER_PASS)  # made as Pillow asks
              for frame in indexed(codes(snapshots[i : i + FRAMES_PER_PASS]),
                                   titles[i : i + FRAMES_PER_PASS]))
    frames = _saving_steps(frames, snapshots, step_paths or {})
    next(frames).save(gif_path, save_all=True, append_images=frames, loop=0,
                      duration=round(1000 / fps), optimize=True)
    return gif_path, final_path


def _saving_steps(frames, snapshots: list[Snapshot], step_paths: Mapping[int, Path]):
    """Pass the animation's frames on, saving those of ``step_paths``' epochs as PNG files:
    palette images, as in the GIF (the same pixels as in RGB, a third of the bytes to
    deflate)."""
    for snapshot, frame in zip(snapshots, frames):
        if snapshot.epoch in step_paths:
            frame.save(step_paths[snapshot.epoch], optimize=False)
        yield frame


# -- summary figures of a sweep and a study --------------------------------------------------

MAX_PANEL_COLUMNS = 3  # summary panels wrap into rows of at most this many
HEATMAP = colormaps["viridis_r"].with_extremes(bad="lightgrey")  # grey: failed or missing
ROUGH = 0.02  # a curve moving more than this per epoch on average oscillates


def _panel_grid(fig: Figure, n: int, **kw) -> list:
    """``n`` axes in rows of at most MAX_PANEL_COLUMNS; unused places switched off."""
    columns = max(1, min(n, MAX_PANEL_COLUMNS))
    axes = list(fig.subplots(max(1, math.ceil(n / columns)), columns, squeeze=False, **kw).flat)
    for ax in axes[max(n, 1):]:
        ax.set_axis_off()
    return axes


def plot_heatmaps(panels: Mapping[str, pd.DataFrame], title: str, path: Path,
                  label: str = "final validation misclassification") -> Path:
    """One heatmap per panel (its title -> a table of hidden nodes by learning rate, NaN where
    a config failed or is missing), panels wrapped into rows; every value written in its cell."""
    first = next(iter(panels.values()), pd.DataFrame())
    n_rows, n_cols = max(first.shape[0], 2), max(first.shape[1], 2)
    panel_w, panel_h = 1.4 + 0.75 * n_cols, 1.3 + 0.55 * n_rows
    columns = max(1, min(len(panels), MAX_PANEL_COLUMNS))
    rows = max(1, math.ceil(len(panels) / columns))
    fig = Figure(figsize=(panel_w * columns + 1.3, panel_h * rows + 0.5), dpi=90,
                 layout="constrained")
    axes = _panel_grid(fig, len(panels))
    image = None
    for ax, (name, cells) in zip(axes, panels.items()):
        values = cells.to_numpy(dtype=float)
        image = ax.imshow(values, cmap=HEATMAP, vmin=0, vmax=0.5, origin="lower",
                          aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            ax.text(j, i, "failed" if np.isnan(value) else f"{value:.3f}", ha="center",
                    va="center", color="white" if value > 0.25 else "black", fontsize=8)
        ax.set(title=name, xlabel="learning rate", ylabel="hidden nodes",
               xticks=range(values.shape[1]), xticklabels=cells.columns,
               yticks=range(values.shape[0]), yticklabels=cells.index)
    if image is None:  # no config has params to place (none ran)
        axes[0].set_axis_off()
        axes[0].text(0.5, 0.5, "no configuration ran", ha="center", va="center")
    else:
        fig.colorbar(image, ax=axes, label=label, shrink=0.9)
    fig.suptitle(title)
    fig.savefig(path, metadata=PNG_METADATA)
    return path


def plot_curves(panels: Mapping[str, Mapping[str, pd.Series]], title: str, path: Path) -> Path:
    """Every curve of each panel (its title -> label -> curve by epoch), panels wrapped into
    rows, each panel's labels in a legend below it. Curves that oscillate from epoch to epoch
    are drawn thin, faint and underneath, so that they do not hide the others."""
    columns = max(1, min(len(panels), MAX_PANEL_COLUMNS))
    rows = max(1, math.ceil(len(panels) / columns))
    longest = max((len(curves) for curves in panels.values()), default=1)
    legend_h = 0.25 * math.ceil(longest / 3)
    fig = Figure(figsize=(4.4 * columns + 0.6, (3.6 + legend_h) * rows + 0.5), dpi=90,
                 layout="constrained")
    axes = _panel_grid(fig, len(panels), sharey=True)
    for ax, (name, curves) in zip(axes, panels.items()):
        for label, curve in curves.items():
            ax.plot(curve.index, curve.to_numpy(), **curve_style(curve, label))
        ax.set(xlabel="epoch", title=name, ylim=(0, None))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3,
                  frameon=False)
    axes[0].set_ylabel("validation misclassification")
    if not panels:
        axes[0].text(0.5, 0.5, "no configuration finished", ha="center", va="center")
    fig.suptitle(title)
    fig.savefig(path, metadata=PNG_METADATA)
    return path


def curve_style(curve: pd.Series, label: str) -> dict:
    """How a curve is drawn: one that moves more than ROUGH per epoch on average is thin,
    faint, underneath and says that it oscillates."""
    rough = len(curve) > 1 and float(np.abs(np.diff(curve.to_numpy())).mean()) > ROUGH
    if rough:
        return {"label": f"{label} (oscillates)", "lw": 0.6, "alpha": 0.35, "zorder": 1}
    return {"label": label, "lw": 1.3, "alpha": 1.0, "zorder": 3}


def tile_images(images: Mapping[str, Path], path: Path, width: int = 1600,
                title: str | None = None) -> Path:
    """The images side by side (in the given order), in rows of up to five, each under a band
    with its name, the whole sheet ``width`` pixels wide at most; ``title`` in a band above
    them all. The images are taken to share one aspect ratio (a run's figures do)."""
    columns = max(1, min(5, math.ceil(math.sqrt(len(images)))))  # 4 -> 2x2, 9 -> 3x3
    tile_width = min(400, width // columns)
    font = ImageFont.load_default(size=max(12, tile_width // 18))
    band = round(font.size * 1.5)
    top = band if title else 0
    sheet = None
    for k, (name, file) in enumerate(images.items()):  # each pasted as it is read
        with Image.open(file) as img:
            img = img.convert("RGB").resize(
                (tile_width, round(img.height * tile_width / img.width)),
                Image.Resampling.LANCZOS)
        height = img.height + band
        if sheet is None:
            rows = -(-len(images) // columns)
            sheet = Image.new("RGB", (columns * tile_width, top + rows * height), "white")
        x, y = (k % columns) * tile_width, top + (k // columns) * height
        sheet.paste(img, (x, y + band))
        ImageDraw.Draw(sheet).text((x + 6, y + band // 5), name, fill="black", font=font)
    if sheet is None:
        sheet = Image.new("RGB", (tile_width, max(top, 1)), "white")
    if title:
        ImageDraw.Draw(sheet).text((6, band // 5), title, fill="black", font=font)
    sheet.save(path, optimize=False)
    return path


class TrialMark(NamedTuple):
    """A study's trial as its summary figures see it."""

    epochs: int  # trained (a pruned trial: to where it stopped)
    value: float | None  # its final value, or a pruned trial's last report
    pruned: bool


def plot_best_so_far(trials: list[TrialMark], title: str, path: Path) -> Path:
    """The best complete trial so far against the epochs every trial had trained, in the order
    the trials were numbered; each trial marked (pruned ones hollow, at their last report)."""
    spent, best, xs, ys, marks = 0, float("nan"), [0], [float("nan")], []
    for t in trials:
        spent += t.epochs
        if not t.pruned and t.value is not None and not t.value >= best:
            best = t.value
        xs.append(spent)
        ys.append(best)
        marks.append((spent, t.value, t.pruned))
    fig = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.step(xs, ys, where="post", lw=2, color="C0", label="best complete trial so far")
    for pruned in (False, True):
        shown = [(x, y) for x, y, p in marks if p == pruned and y is not None]
        if shown:
            ax.scatter(*zip(*shown), s=28, label="pruned (last report)" if pruned else
                       "complete", facecolors="none" if pruned else "C1", edgecolors="C1")
    ax.set(xlim=(0, None), xlabel="epochs trained, all trials (pruned ones: to where they "
           "stopped)", ylabel="validation misclassification",
           title=f"{title}: {len(trials)} trials, best so far against their epochs")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.savefig(path, metadata=PNG_METADATA)
    return path


def plot_parallel_coordinates(rows: list[tuple[dict, float, bool]], keys: list[str],
                              objective: str, title: str, path: Path) -> Path:
    """Every trial (``rows``: its values of ``keys``, its value, whether pruned) across its
    parameters (categories in their order, wide ranges on a log scale) to its value; pruned
    trials dashed, at their last report."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    columns = [*keys, objective]

    def scale(key: str, values: list):
        if all(isinstance(v, str) for v in values):
            levels = list(dict.fromkeys(values))
            return [levels.index(v) / max(len(levels) - 1, 1) for v in values], levels
        log = key != objective and min(values) > 0 and max(values) / min(values) > 50
        x = np.log10(values) if log else np.asarray(values, float)
        span = float(x.max() - x.min()) or 1.0
        return list((x - x.min()) / span), [f"{min(values):.3g}", f"{max(values):.3g}"]

    table = {key: [params.get(key) for params, _, _ in rows] for key in keys}
    table[objective] = [value for _, value, _ in rows]
    scaled = {key: scale(key, values) for key, values in table.items() if values}
    fig = Figure(figsize=(10, 6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    cmap, values = colormaps["viridis_r"], table[objective]
    low, high = (min(values), max(values)) if values else (0, 1)
    for i, (_, value, pruned) in enumerate(rows):
        ys = [scaled[key][0][i] for key in columns]
        ax.plot(range(len(columns)), ys, color=cmap((value - low) / ((high - low) or 1)),
                lw=1.5, alpha=0.9, ls="--" if pruned else "-")
    for j, key in enumerate(columns):
        ax.axvline(j, color="grey", lw=0.8)
        labels = scaled[key][1] if key in scaled else []
        for k, label in enumerate(labels):
            ax.annotate(label, (j, k / max(len(labels) - 1, 1)), xytext=(7, 0),
                        textcoords="offset points", fontsize=10, va="center",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                              "alpha": 0.8})
    fig.colorbar(ScalarMappable(Normalize(low, high), cmap), ax=ax,
                 label="validation misclassification")
    ax.set(xticks=range(len(columns)), xticklabels=columns, yticks=[], xlim=(-0.2,
           len(columns) - 0.6), title=f"{title}: every trial (dashed: pruned, at its last "
           "report), coloured by validation misclassification")
    fig.savefig(path, metadata=PNG_METADATA)
    return path

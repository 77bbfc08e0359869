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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib import font_manager
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
    fig.tight_layout()
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


class BoundaryRenderer:
    """Draws frames of Figure 2 over one static matplotlib layer (axes, labels, points)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, classes: np.ndarray, extent, width: float,
                 height: float, dpi: int, labels: tuple[str, str] = Plane.labels):
        self.extent = extent
        fig = Figure(figsize=(width, height), dpi=dpi)
        fig.patch.set_alpha(0.0)
        ax = fig.add_subplot()
        ax.patch.set_alpha(0.0)
        for k, label in enumerate(classes):
            pts = X[y == label]
            ax.scatter(pts[:, 0], pts[:, 1], s=14, color=CLASS_COLORS[k], edgecolors="black",
                       linewidths=0.4, label=f"class {label}")
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


def render_boundary(snapshots: list[Snapshot], history: pd.DataFrame, activation: str,
                    plane: Plane, y: np.ndarray, classes: np.ndarray, gif_path: Path,
                    final_path: Path, *, grid_size: int, fps: float, width: float,
                    height: float, dpi: int, step_paths: Mapping[int, Path] | None = None
                    ) -> tuple[Path, Path]:
    """Figure 2: the training sample over the shaded class regions in ``plane``, animated
    over epochs.

    ``step_paths`` (epoch -> path) also saves those epochs' frames as PNG files.
    """
    extent = plot_extent(plane.points)
    renderer = BoundaryRenderer(plane.points, y, classes, extent, width, height, dpi,
                                plane.labels)
    last = history.index[-1]
    titles = [f"{plane.title}epoch {s.epoch}/{last}   training score "
              f"{1 - history.at[s.epoch, 'train_misclassification']:.3f}" for s in snapshots]

    def codes(part: list[Snapshot]) -> np.ndarray:  # float32: what the upsampling takes
        return renderer.codes(probability_grids(part, activation, extent, grid_size,
                                                np.float32, plane.to_inputs))

    ends = codes([snapshots[0], snapshots[-1]])
    first, final = renderer.frame(ends[0], titles[0]), renderer.frame(ends[1], titles[-1])
    final.save(final_path, optimize=False)
    # One palette for the whole animation, from its first and last frames: Pillow's fast
    # octree, as close to the colours as its much slower median cut.
    both = Image.new("RGB", (first.width, 2 * first.height))
    both.paste(first, (0, 0))
    both.paste(final, (0, first.height))
    indexed = renderer.indexer(both.quantize(256, method=Image.Quantize.FASTOCTREE))
    frames = (frame for i in range(0, len(snapshots), FRAMES_PER_PASS)  # made as Pillow asks
              for frame in indexed(codes(snapshots[i : i + FRAMES_PER_PASS]),
                                   titles[i : i + FRAMES_PER_PASS]))
    frames = _saving_steps(frames, snapshots, step_paths or {})
    next(frames).save(gif_path, save_all=True, append_images=frames, loop=0,
                      duration=round(1000 / fps), optimize=False)
    return gif_path, final_path


def _saving_steps(frames, snapshots: list[Snapshot], step_paths: Mapping[int, Path]):
    """Pass the animation's frames on, saving those of ``step_paths``' epochs as PNG files:
    palette images, as in the GIF (the same pixels as in RGB, a third of the bytes to
    deflate)."""
    for snapshot, frame in zip(snapshots, frames):
        if snapshot.epoch in step_paths:
            frame.save(step_paths[snapshot.epoch], optimize=False)
        yield frame

"""Plot stage: Figure 3 (misclassification curves) and Figure 2 (the boundary animation).

Figures are byte-for-byte reproducible: no timestamps or software versions in the files, fonts
from matplotlib's bundled DejaVu, and the same arithmetic on every run.

The animation does not redraw a matplotlib figure per frame. Matplotlib draws the static parts
once (axes, labels, the training points) on a transparent canvas; each frame is then the class-
probability field, evaluated for all frames in batched numpy passes, coloured with a small
colour table, overlaid by that canvas and titled with Pillow.
"""

from __future__ import annotations

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
MAX_CHUNK_ELEMENTS = 4_000_000  # bounds the memory of the batched grid evaluation


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


def plot_extent(X: np.ndarray, margin: float = 0.5) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax) around the data."""
    lo, hi = X.min(axis=0) - margin, X.max(axis=0) + margin
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def probability_grids(snapshots: list[Snapshot], activation: str, extent, grid_size: int
                      ) -> np.ndarray:
    """Class probabilities on a grid_size^2 grid for every snapshot: (frames, gy, gx, K).

    Row 0 is the top of the plot (largest y), as in an image. Frames are evaluated together,
    stacked weights through :func:`annlab.network.forward`, in chunks of bounded memory.
    """
    from annlab.network import forward

    xmin, xmax, ymin, ymax = extent
    centres = (np.arange(grid_size) + 0.5) / grid_size
    xs, ys = xmin + centres * (xmax - xmin), ymax - centres * (ymax - ymin)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    width = max(W.shape[1] for W in snapshots[0].coefs)
    chunk = max(1, MAX_CHUNK_ELEMENTS // (len(grid) * width))
    out = []
    for start in range(0, len(snapshots), chunk):
        part = snapshots[start : start + chunk]
        coefs = [np.stack(ws) for ws in zip(*(s.coefs for s in part))]
        intercepts = [np.stack(bs) for bs in zip(*(s.intercepts for s in part))]
        with np.errstate(over="ignore"):  # exp overflowing in tanh/sigmoid: an exact limit
            out.append(np.exp(forward(grid, coefs, intercepts, activation)[1]))
    probs = np.concatenate(out)
    return probs.reshape(len(snapshots), grid_size, grid_size, -1)


class BoundaryRenderer:
    """Draws frames of Figure 2 over one static matplotlib layer (axes, labels, points)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, classes: np.ndarray, extent, width: float,
                 height: float, dpi: int):
        self.extent = extent
        colors = np.array([to_rgb(c) for c in CLASS_COLORS[: len(classes)]])
        self.field_colors = FIELD_ALPHA * 255 * colors  # K x 3, added onto the white share
        fig = Figure(figsize=(width, height), dpi=dpi)
        fig.patch.set_alpha(0.0)
        ax = fig.add_subplot()
        ax.patch.set_alpha(0.0)
        for k, label in enumerate(classes):
            pts = X[y == label]
            ax.scatter(pts[:, 0], pts[:, 1], s=14, color=CLASS_COLORS[k], edgecolors="black",
                       linewidths=0.4, label=f"class {label}")
        ax.set(xlim=extent[:2], ylim=extent[2:], xlabel="$x_1$", ylabel="$x_2$")
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

    def field(self, probs: np.ndarray) -> np.ndarray:
        """RGB pixels of the axes area for one (gy, gx, K) probability grid, boundary drawn."""
        w, h = self.box[2] - self.box[0], self.box[3] - self.box[1]
        fine = np.stack([np.asarray(Image.fromarray(probs[..., k].astype(np.float32), "F")
                                    .resize((w, h), Image.Resampling.BILINEAR))
                         for k in range(probs.shape[-1])], axis=-1)
        bands = np.floor(fine * SHADE_LEVELS).clip(0, SHADE_LEVELS - 1) + 0.5
        rgb = 255 * (1 - FIELD_ALPHA) + (bands / SHADE_LEVELS) @ self.field_colors
        label = fine.argmax(axis=-1)
        edge = np.zeros(label.shape, bool)
        edge[:, 1:] |= label[:, 1:] != label[:, :-1]
        edge[1:, :] |= label[1:, :] != label[:-1, :]
        rgb[edge] = BOUNDARY_RGB
        return (rgb + 0.5).astype(np.uint8)

    def frame(self, probs: np.ndarray, title: str) -> Image.Image:
        img = Image.new("RGBA", self.overlay.size, "white")
        img.paste(Image.fromarray(self.field(probs), "RGB"), self.box[:2])
        img.alpha_composite(self.overlay)
        ImageDraw.Draw(img).text(self.title_centre, title, fill="black", font=self.font,
                                 anchor="mm")
        return img.convert("RGB")


def render_boundary(snapshots: list[Snapshot], history: pd.DataFrame, activation: str,
                    X: np.ndarray, y: np.ndarray, classes: np.ndarray, gif_path: Path,
                    final_path: Path, *, grid_size: int, fps: float, width: float,
                    height: float, dpi: int) -> tuple[Path, Path]:
    """Figure 2: the training sample over the shaded class regions, animated over epochs."""
    extent = plot_extent(X)
    renderer = BoundaryRenderer(X, y, classes, extent, width, height, dpi)
    probs = probability_grids(snapshots, activation, extent, grid_size)
    last = history.index[-1]
    frames = [
        renderer.frame(p, f"epoch {s.epoch}/{last}   training score "
                          f"{1 - history.at[s.epoch, 'train_misclassification']:.3f}")
        for s, p in zip(snapshots, probs)
    ]
    frames[-1].save(final_path, optimize=False)
    # One palette for the whole animation, from its first and last frames; mapping each frame
    # onto it is ~30x faster than quantising every frame and keeps colours steady.
    both = Image.new("RGB", (frames[0].width, 2 * frames[0].height))
    both.paste(frames[0], (0, 0))
    both.paste(frames[-1], (0, frames[0].height))
    palette = both.quantize(256)
    indexed = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    indexed[0].save(gif_path, save_all=True, append_images=indexed[1:], loop=0,
                    duration=round(1000 / fps), optimize=False)
    return gif_path, final_path

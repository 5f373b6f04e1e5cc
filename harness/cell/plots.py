"""Figures logged with each cell: latent space (toy suites), code usage, training curves, reconstructions.

Drawn after the cell, in the process that ran the suite, from the data its worker saved
(:mod:`harness.cell.figure_data`): :func:`draw_recorded`. Plain ``matplotlib.figure.Figure``
objects (no pyplot state, no GUI backend). Layouts use fixed margins rather than
``tight_layout``, whose text measurements cost more than drawing a toy cell's figures.
"""

from __future__ import annotations

from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor

from harness.cell.figure_data import FIGURE_DATA, load_figure_data

#: the figure every drawn cell has: its presence means the cell's figures are drawn
USAGE = "plots/code_usage.png"


def panels(ncols: int, width: float, height: float, nrows: int = 1) -> tuple[Figure, Any]:
    """A figure of ``nrows x ncols`` axes with margins fixed in inches (title on top, labels below)."""
    fig = Figure(figsize=(width * ncols, height * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    w, h = width * ncols, height * nrows
    fig.subplots_adjust(left=0.55 / w, right=1 - 0.15 / w, bottom=0.5 / h, top=1 - 0.55 / h,
                        wspace=0.35, hspace=0.3)
    return fig, axes


def latent_snapshots(snapshots: list[dict[str, Any]], title: str) -> Any:
    """Liu 2026's figure: hidden states as points (coloured by cluster), codes as stars."""
    n = len(snapshots)
    fig, axes = panels(n, 3.2, 3.2)
    for ax, snap in zip(axes[0], snapshots, strict=True):
        z, labels, codes = snap["z"], snap["labels"], snap["codes"]
        colors = labels.numpy() if labels is not None else "tab:blue"
        ax.scatter(z[:, 0], z[:, 1], s=2, c=colors, cmap="coolwarm", alpha=0.35, linewidths=0)
        if codes is not None:
            used = snap.get("used")
            ax.scatter(codes[:, 0], codes[:, 1], marker="*", s=180, c="gold",
                       edgecolors="black", linewidths=0.8, zorder=3, label="codes")
            if used is not None and (~used).any():
                dead = codes[~used]
                ax.scatter(dead[:, 0], dead[:, 1], marker="*", s=180, c="lightgray",
                           edgecolors="black", linewidths=0.8, zorder=3, label="unused")
        ax.set_title(f"step {snap['step']}", fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def usage_histogram(counts: list[Tensor], title: str) -> Any:
    """Codes sorted by use, one panel per stage: a flat curve is healthy, a cliff is collapse."""
    fig, axes = panels(len(counts), 4.5, 3.0)
    for stage, (ax, c) in enumerate(zip(axes[0], counts, strict=True)):
        ordered = torch.sort(c.float(), descending=True).values.numpy()
        # one filled step polygon: a bar per code would be 65,536 rectangles at K = 65,536
        ax.fill_between(range(len(ordered)), ordered, step="post", color="tab:blue", linewidth=0)
        ax.set_xlim(0, max(1, len(ordered)))
        used = int((c > 0).sum())
        ax.set_title(f"stage {stage}: {used}/{len(ordered)} codes used" if len(counts) > 1
                     else f"{used}/{len(ordered)} codes used", fontsize=9)
        ax.set_xlabel("code (sorted by use)")
        ax.set_ylabel("tokens")
    fig.suptitle(title, fontsize=10)
    return fig


def training_curves(history: dict[str, list[tuple[int, float]]], title: str) -> Any:
    keys = [k for k in sorted(history) if history[k]]
    fig, axes = panels(max(1, len(keys)), 3.5, 2.8)
    for ax, key in zip(axes[0], keys, strict=False):
        steps, values = zip(*history[key], strict=True)
        ax.plot(steps, values)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
    fig.suptitle(title, fontsize=10)
    return fig


def reconstruction_grid(originals: Tensor, reconstructions: Tensor, title: str) -> Any:
    """Originals on top, reconstructions below, images in [-1, 1]."""
    n = originals.shape[0]
    fig, axes = panels(n, 1.2, 1.3, nrows=2)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02, top=1 - 0.4 / 2.6, wspace=0.05, hspace=0.05)
    for row, images in enumerate((originals, reconstructions)):
        for i in range(n):
            img = ((images[i].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
            axes[row][i].imshow(img, interpolation="nearest")
            axes[row][i].axis("off")
    fig.suptitle(title, fontsize=10)
    return fig


def draw(data: dict[str, Any]) -> list[tuple[str, Figure]]:
    """Each figure a cell's saved data gives, with the artifact path it is logged under."""
    title, figures = data["title"], []
    if data["snapshots"]:
        figures.append(("plots/latent.png", latent_snapshots(data["snapshots"], title)))
    figures.append((USAGE, usage_histogram(data["counts"], title)))
    figures.append(("plots/training_curves.png", training_curves(data["history"], title)))
    if data["samples"] is not None:
        figures.append(("plots/reconstructions.png", reconstruction_grid(*data["samples"], title)))
    return figures


def draw_recorded(tracker: Any, run_id: str) -> list[str]:
    """Draw a cell's figures from its ``plots/figures.pt`` into its run, unless they are there.

    Returns the artifact paths drawn: none for a run drawn before, or one recorded before
    cells saved their figure data (it drew its own)."""
    present = set(tracker.list_artifacts(run_id, "plots"))
    if FIGURE_DATA not in present or USAGE in present:
        return []
    drawn = []
    for path, figure in draw(load_figure_data(tracker.read_artifact(run_id, FIGURE_DATA))):
        tracker.log_figure(run_id, figure, path)
        drawn.append(path)
    return drawn

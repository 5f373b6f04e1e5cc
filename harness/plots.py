"""Figures logged with each cell: latent space (toy suites), code usage, reconstructions."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402


def latent_snapshots(snapshots: list[dict[str, Any]], title: str) -> Any:
    """Paper 000's figure: hidden states as points (coloured by cluster), codes as stars."""
    n = len(snapshots)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
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
    fig.tight_layout()
    return fig


def usage_histogram(counts: list[Tensor], title: str) -> Any:
    """Codes sorted by use, one panel per stage: a flat curve is healthy, a cliff is collapse."""
    fig, axes = plt.subplots(1, len(counts), figsize=(4.5 * len(counts), 3), squeeze=False)
    for stage, (ax, c) in enumerate(zip(axes[0], counts, strict=True)):
        ordered = torch.sort(c.float(), descending=True).values.numpy()
        ax.bar(range(len(ordered)), ordered, width=1.0, color="tab:blue")
        used = int((c > 0).sum())
        ax.set_title(f"stage {stage}: {used}/{len(ordered)} codes used" if len(counts) > 1
                     else f"{used}/{len(ordered)} codes used", fontsize=9)
        ax.set_xlabel("code (sorted by use)")
        ax.set_ylabel("tokens")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def training_curves(history: dict[str, list[tuple[int, float]]], title: str) -> Any:
    keys = [k for k in sorted(history) if history[k]]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.5 * max(1, len(keys)), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=False):
        steps, values = zip(*history[key], strict=True)
        ax.plot(steps, values)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def reconstruction_grid(originals: Tensor, reconstructions: Tensor, title: str) -> Any:
    """Originals on top, reconstructions below, images in [-1, 1]."""
    n = originals.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(1.2 * n, 2.6), squeeze=False)
    for row, images in enumerate((originals, reconstructions)):
        for i in range(n):
            img = ((images[i].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
            axes[row][i].imshow(img, interpolation="nearest")
            axes[row][i].axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig

"""The page's plots, as PNG bytes: utilization over training, a metric against K, latent snapshots.

Each figure is drawn from what the cells recorded (metric histories and the
``plots/latent.png`` artifacts), so the page needs nothing but the store.
"""

from __future__ import annotations

import io
import statistics
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from harness.leaderboard.build import (  # noqa: E402
    Leaderboard,
    Row,
    has_pixels,
    reference_bits_per_pixel,
)
from harness.tracking import Tracker  # noqa: E402

UTILIZATION = "train/utilization"
LATENT = "plots/latent.png"


@dataclass
class Figure:
    id: str
    title: str
    caption: str
    png: bytes


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return compact_png(buffer.getvalue())


def compact_png(data: bytes) -> bytes:
    """A 256-colour palette PNG when that is smaller: plots have few colours, and the page
    carries every image inline (a checked-in page stays a few hundred kB)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(out, "PNG", optimize=True)
    return out.getvalue() if out.tell() < len(data) else data


def _label(row: Row, dims: set[int]) -> str:
    return row.label if len(dims) == 1 else f"{row.label} d={row.dim}"


def mean_curve(histories: list[list[tuple[int, float]]]) -> tuple[list[int], list[float], list[float]]:
    """Mean and std over seeds at every step that all seeds logged (a shorter run never skews it)."""
    by_step: dict[int, list[float]] = {}
    for history in histories:
        for step, value in history:
            by_step.setdefault(step, []).append(value)
    steps = sorted(s for s, v in by_step.items() if len(v) == len(histories))
    means = [statistics.fmean(by_step[s]) for s in steps]
    stds = [statistics.stdev(by_step[s]) if len(by_step[s]) > 1 else 0.0 for s in steps]
    return steps, means, stds


def utilization_curves(board: Leaderboard, tracker: Tracker) -> Figure | None:
    """One panel per codebook size, one line per method: mean over seeds, band = ± std."""
    curves: dict[int, list[tuple[Row, tuple[list[int], list[float], list[float]]]]] = {}
    for row in board.measured:
        histories = []
        for run_id in row.run_ids.values():
            points = tracker.metric_history(run_id, UTILIZATION)
            if points:
                histories.append(sorted((p.step, p.value) for p in points))
        if histories:
            curves.setdefault(row.codebook_size, []).append((row, mean_curve(histories)))
    if not curves:
        return None
    dims = {row.dim for row in board.measured}
    sizes = sorted(curves)
    many = max(len(c) for c in curves.values()) > 5  # then the legend goes beside the panel
    fig, axes = plt.subplots(1, len(sizes), figsize=((6.5 if many else 4.2) * len(sizes), 3.4),
                             squeeze=False, sharey=True)
    colors = plt.get_cmap("tab20" if many else "tab10").colors
    for ax, k in zip(axes[0], sizes, strict=True):
        ordered = sorted(curves[k], key=lambda item: (item[0].method, item[0].dim))
        for i, (row, (steps, means, stds)) in enumerate(ordered):
            line = ax.plot(steps, means, color=colors[i % len(colors)],
                           label=f"{_label(row, dims)} (n={len(row.run_ids)})")[0]
            # utilization lives in [0, 1]: the band is clipped there
            ax.fill_between(steps, [max(0.0, m - s) for m, s in zip(means, stds, strict=True)],
                            [min(1.0, m + s) for m, s in zip(means, stds, strict=True)],
                            color=line.get_color(), alpha=0.15)
        ax.set_title(f"K = {k}", fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
        if many:
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        else:
            ax.legend(fontsize=8)
    axes[0][0].set_ylabel("codebook utilization (train batches)")
    fig.tight_layout()
    return Figure("utilization", "Codebook utilization over training",
                  "Fraction of codes used per logged training batch: mean over seeds, band ± one std.",
                  _png(fig))


def metric_vs_codebook_size(board: Leaderboard, metrics: list[str]) -> Figure | None:
    """Beyond Stationarity's figure 3: a metric against K (log scale), one line per method; reported points hollow."""
    sizes = {r.codebook_size for r in board.measured if r.metrics}
    metrics = [m for m in metrics if any(m in r.metrics for r in board.measured)][:3]
    if len(sizes) < 2 or not metrics:
        return None
    dims = {row.dim for row in board.measured}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        lines: dict[str, list[Row]] = {}
        for row in board.measured:
            if metric in row.metrics:
                lines.setdefault(_label(row, dims), []).append(row)
        for label, rows in sorted(lines.items()):
            rows.sort(key=lambda r: r.codebook_size)
            ax.errorbar([r.codebook_size for r in rows], [r.metrics[metric].mean for r in rows],
                        yerr=[r.metrics[metric].std for r in rows], marker="o", capsize=3, label=label)
        for row in board.reported:
            if metric in row.metrics and row.codebook_size:
                ax.scatter([row.codebook_size], [row.metrics[metric].mean], marker="D", facecolors="none",
                           edgecolors="black", label=f"{row.method} (reported)")
        arrow = "↑" if board.higher_is_better.get(metric, True) else "↓"
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(sizes), [str(k) for k in sorted(sizes)])
        ax.minorticks_off()
        ax.set_xlabel("codebook size K")
        ax.set_ylabel(f"{metric} {arrow}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return Figure("metric-vs-k", "Metrics against codebook size",
                  "Mean ± std over seeds at the end of training (Beyond Stationarity, figure 3 style); "
                  "hollow diamonds are numbers the papers report.", _png(fig))


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[tuple[float, float]]:
    """The points no other point beats at an equal or lower rate: sorted by rate, each better than all before."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1] if higher_is_better else p[1])):
        if not front or (y > front[-1][1] if higher_is_better else y < front[-1][1]):
            front.append((x, y))
    return front


def rate_metrics(board: Leaderboard) -> list[str]:
    """The reconstruction metrics a rate-distortion figure plots: rFID and PSNR where measured, else MSE."""
    measured = {c for r in board.measured for c in r.metrics}
    chosen = [m for m in ("rfid", "psnr") if m in measured]
    return chosen or [m for m in ("mse",) if m in measured]


def _rate(board: Leaderboard, row: Row, pixels: bool) -> float | None:

    if not pixels:
        return row.bits_per_token
    if row.reported:
        return reference_bits_per_pixel(board, row)
    return row.bits_per_pixel


def _rd_panel(ax: Any, board: Leaderboard, metric: str, pixels: bool, colors: Any) -> None:
    lines: dict[str, list[tuple[float, float, float]]] = {}
    for row in board.measured:
        x = _rate(board, row, pixels)
        if x is not None and metric in row.metrics and not row.nan.get(metric):
            lines.setdefault(row.label, []).append((x, row.metrics[metric].mean, row.metrics[metric].std))
    higher = board.higher_is_better.get(metric, True)
    for i, (label, points) in enumerate(sorted(lines.items())):
        points.sort()
        ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                    capsize=3, color=colors[i % len(colors)], label=label, linewidth=1.2, markersize=4)
    points = [(x, y) for pts in lines.values() for x, y, _ in pts]
    front = pareto_front(points, higher)
    if front:  # the best value reachable at or below each rate: a step up to the highest rate measured
        xs = [p[0] for p in front] + [max(p[0] for p in points)]
        ys = [p[1] for p in front] + [front[-1][1]]
        ax.step(xs, ys, where="post", color="black", linestyle="--", linewidth=1.4, alpha=0.75,
                label="Pareto front (measured)", zorder=0)
        ax.scatter(xs[:-1], ys[:-1], s=110, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4)
    for row in board.reported:
        x = _rate(board, row, pixels)
        if x is not None and metric in row.metrics:
            ax.scatter([x], [row.metrics[metric].mean], marker="D", s=46, facecolors="none",
                       edgecolors="black", label=f"{row.method} (reported)", zorder=3)
    ax.set_xlabel("bits per pixel" if pixels else "bits per token")
    ax.set_ylabel(f"{metric} {'↑' if higher else '↓'}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))


def rate_distortion(board: Leaderboard) -> Figure | None:
    """Each method as a curve of its reconstruction metric against its rate, with the Pareto front."""

    pixels = has_pixels(board)
    rates = {m: {_rate(board, r, pixels) for r in board.measured if m in r.metrics} - {None}
             for m in rate_metrics(board)}
    metrics = [m for m, seen in rates.items() if len(seen) > 1]  # one rate is a column of dots, not a curve
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(7.2 * len(metrics), 4.0), squeeze=False)
    labels = {r.label for r in board.measured}
    colors = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20").colors
    for ax, metric in zip(axes[0], metrics, strict=True):
        _rd_panel(ax, board, metric, pixels, colors)
    fig.tight_layout()
    unit = "bits per pixel (bits per token x tokens per image / pixels)" if pixels else "bits per token"
    return Figure("rate-distortion", "Rate-distortion",
                  f"Each method's reconstruction metric against its rate in {unit}, one point per codebook "
                  "size it ran at (mean ± std over seeds); the dashed line is the Pareto front of the "
                  "measured points (circled: the points on it); hollow diamonds are the papers' reported numbers at "
                  "their rate.", _png(fig))


def latent_snapshots(board: Leaderboard, tracker: Tracker) -> list[Figure]:
    """The toy suites' latent-space snapshots, one per method and K, from the lowest finished seed."""
    figures = []
    rows = sorted((r for r in board.measured if r.run_ids), key=lambda r: (r.method, r.codebook_size, r.dim))
    for row in rows:
        seed = min(row.run_ids)
        try:
            png = tracker.read_artifact(row.run_ids[seed], LATENT)
        except Exception:  # not a toy suite, or the plot was not asked for
            continue
        figures.append(Figure(f"latent-{row.method}-K{row.codebook_size}-d{row.dim}",
                              f"{row.method}, K = {row.codebook_size}, d = {row.dim}, seed {seed}",
                              "Encoded validation points (coloured by cluster) and the codes "
                              "(gold: used, grey: unused) at the snapshot steps.",
                              compact_png(png)))
    return figures


def page_figures(board: Leaderboard, tracker: Tracker) -> list[Figure]:
    """Every figure the suite's records allow, in reading order."""
    metrics = [board.primary] + [m for m in ("rfid", "utilization", "mse") if m != board.primary]
    figures = [rate_distortion(board), utilization_curves(board, tracker),
               metric_vs_codebook_size(board, metrics)]
    return [f for f in figures if f is not None] + latent_snapshots(board, tracker)

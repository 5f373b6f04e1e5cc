"""What a cell's figures are drawn from: the worker saves it, the suite's process draws it.

Drawing (matplotlib import, layout, PNG encoding) used to happen inside the worker at the
end of each cell. The worker now saves the few tensors the figures need as one artifact,
``plots/figures.pt``, and :func:`harness.cell.plots.draw_recorded` turns it into PNGs after
the cell, in the process that ran the suite. This module imports no matplotlib, so neither
does a worker.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from torch import Tensor

#: the artifact a cell's figures are drawn from
FIGURE_DATA = "plots/figures.pt"
#: bumped when the layout below changes, so an old artifact is recognised
FORMAT = 1


def figure_data(title: str, snapshots: list[dict[str, Any]], counts: list[Tensor],
                history: dict[str, list[tuple[int, float]]],
                samples: tuple[Tensor, Tensor] | None) -> dict[str, Any]:
    """Plain containers of CPU tensors and numbers (loadable with ``weights_only=True``)."""
    return {"format": FORMAT, "title": title, "snapshots": list(snapshots),
            "counts": [c.detach().cpu() for c in counts],
            "history": {k: [(int(s), float(v)) for s, v in points] for k, points in history.items()},
            "samples": None if samples is None else tuple(t.detach().cpu() for t in samples)}


def load_figure_data(data: bytes) -> dict[str, Any]:
    """The saved figure data; ``weights_only`` as it may come from a shared store."""
    loaded = torch.load(io.BytesIO(data), weights_only=True)
    if loaded.get("format") != FORMAT:
        raise ValueError(f"figure data of format {loaded.get('format')!r}; this harness draws format {FORMAT}")
    return loaded

"""Collapse diagnosis of one cell: latent and code geometry at step 0 and at the end, dead codes over time.

A method that ends with a few codes in use may be a bad method, or a good one
started in a regime it was not built for (codes far longer than the encoder's
first latents, latents all pointing one way, so one or two codes win every
token and the rest never get a gradient). :class:`Diagnosis` measures what
tells the two apart, on one fixed eval batch, before the first update and
after the last one, and records it as ``diag/*`` metrics and ``diagnosis.json``.
``harness diagnose <run-id>`` reads them back and says what they suggest.

Cost: two forward passes of one eval batch (start and end) and, at log steps
only, one tensor op on the usage window the loop already keeps; nothing runs
between log steps, and no value is read from the device before the end.
The measurement runs in eval mode, without gradients and with the random
state saved and restored, so a cell trains exactly as it would without it.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import torch
from torch import Tensor, nn

#: format of the diagnosis artifact (:data:`harness.cell.diagnosis_file.ARTIFACT`); bumped when a key
#: changes meaning
VERSION = 1
#: most val items in the diagnosis batch (the eval batch size, if smaller)
MAX_ITEMS = 512


def explicit_codebook(quantizer: nn.Module) -> tuple[Tensor | None, str | None]:
    """The ``(K, D)`` codebook when the quantizer stores a table of its K codes, else why not.

    An implicit grid (FSQ, LFQ, BSQ: fixed levels or signs behind a projection) has
    no initialisation scale to compare with the latents, so its code norm is
    reported unavailable rather than computed from the grid.
    """
    codes = quantizer.codebook() if callable(getattr(quantizer, "codebook", None)) else None
    if codes is None:
        return None, "no single codebook (codebook() is None: several stages or none exposed)"
    k = codes.shape[0]
    stored = chain(quantizer.parameters(), quantizer.buffers())
    if not any(t.dim() == 2 and t.shape[0] == k for t in stored):
        return None, ("implicit codebook: its codes are a fixed grid, not a stored table of "
                      f"{k} codes, so their length is not an initialisation scale")
    return codes.detach().float(), None


def diagnosis_batch(val_set: Any, limit: int, device: torch.device) -> Tensor:
    """The first ``min(len(val_set), limit, MAX_ITEMS)`` val inputs: the same batch at start and end."""
    from harness.cell.forward import split_batch

    n = max(1, min(len(val_set), limit, MAX_ITEMS))
    items = [val_set[i] for i in range(n)]
    x = torch.stack([it[0] if isinstance(it, (tuple, list)) else it for it in items])
    return split_batch(x, device)[0]


@torch.no_grad()
def measure(model: nn.Module, quantizer: nn.Module, x: Tensor) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Geometry and code choice on ``x`` (scalar tensors, still on the device) and what is unavailable."""
    from harness.cell.forward import to_tokens

    was = model.training, quantizer.training
    model.eval()
    quantizer.eval()
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            z, _ = to_tokens(model.encode(x))
            z = z.float()
            indices = quantizer(z).indices
    finally:
        model.train(was[0])
        quantizer.train(was[1])
    values = {"tokens": torch.tensor(float(z.shape[0])), **latent_geometry(z)}
    values.update(codes_won(indices.reshape(z.shape[0], -1), quantizer))
    codes, why = explicit_codebook(quantizer)
    unavailable = {} if why is None else {"code_norm": why, "code_to_latent": why}
    if codes is not None:
        values["code_norm"] = codes.norm(dim=1).mean()
        values["code_to_latent"] = values["code_norm"] / values["latent_norm"].clamp_min(1e-12)
    return values, unavailable


def latent_geometry(z: Tensor) -> dict[str, Tensor]:
    """Mean latent length and the mean cosine of the latents to their mean direction."""
    direction = z.mean(0, keepdim=True)
    cosine = torch.nn.functional.cosine_similarity(z, direction.expand_as(z), dim=1, eps=1e-12)
    return {"latent_norm": z.norm(dim=1).mean(), "latent_cosine": cosine.mean()}


def codes_won(indices: Tensor, quantizer: nn.Module) -> dict[str, Tensor]:
    """Distinct codes chosen by the batch's tokens (summed over stages; per stage with several)."""
    sizes = tuple(getattr(quantizer, "stage_sizes", (quantizer.codebook_size,)))
    won = [torch.unique(indices[:, s]).numel() for s in range(indices.shape[1])]
    out = {"codes_won": torch.tensor(float(sum(won))),
           "codes_won_fraction": torch.tensor(sum(won) / sum(sizes[: len(won)]))}
    if len(won) > 1:
        out.update({f"codes_won/stage{s}": torch.tensor(float(w)) for s, w in enumerate(won)})
    return out


class Diagnosis:
    """A callback: :func:`measure` at train start and end, dead codes at each log step.

    Must come after the usage window in the callback list (it reads the window's
    ``train/utilization`` from the log step's values) and before the logger.
    """

    def __init__(self, x: Tensor, stage_sizes: tuple[int, ...], log: Any, save: Any) -> None:
        self.x, self.sizes = x, stage_sizes
        self.log, self.save = log, save  # log(values, step); save(json-ready dict)
        self.points: dict[str, tuple[int, dict[str, Tensor], dict[str, str]]] = {}
        self.dead: list[tuple[int, Tensor]] = []
        self.tokens: int | None = None

    def on_train_start(self, state: Any) -> None:
        self._measure("init", state)

    def on_log(self, state: Any, logs: dict[str, Any]) -> None:
        fractions = [logs.get(f"train/utilization/stage{i}") for i in range(len(self.sizes))]
        if len(self.sizes) == 1 or any(f is None for f in fractions):
            fractions = [logs.get("train/utilization")] * len(self.sizes)
        if any(f is None for f in fractions):
            return
        dead = sum(torch.round(k * (1 - f)) for k, f in zip(self.sizes, fractions, strict=True))
        logs["diag/dead_codes"] = dead
        self.dead.append((state.step, dead))

    def on_train_end(self, state: Any) -> None:
        self._measure("final", state)
        self.save(self.report())

    def _measure(self, when: str, state: Any) -> None:
        values, unavailable = measure(state.model, state.quantizer, self.x)
        self.tokens = int(values.pop("tokens"))
        self.points[when] = (state.step, values, unavailable)
        self.log({f"diag/{when}/{k}": v for k, v in values.items()}, state.step)

    def report(self) -> dict[str, Any]:
        """The JSON artifact: both measurements, what was unavailable and why, dead codes per log step."""
        out: dict[str, Any] = {"version": VERSION, "codebook_sizes": list(self.sizes),
                               "tokens": self.tokens, "unavailable": {}}
        for when in ("init", "final"):
            if when not in self.points:
                out[when] = None
                out["unavailable"][when] = "not measured in this run (resumed from a checkpoint)"
                continue
            step, values, unavailable = self.points[when]
            out[when] = {"step": step, **{k: float(v) for k, v in values.items()}}
            out["unavailable"].update(unavailable)
        out["dead_codes"] = [[step, float(v)] for step, v in self.dead]
        return out


def diagnosis_callback(state: Any, val_set: Any, log: Any, save: Any) -> Diagnosis:
    """The callback for a cell: its eval batch, its stage sizes, where to log and save."""
    limit = int(state.config.get("eval", {}).get("batch_size", MAX_ITEMS))
    sizes = tuple(getattr(state.quantizer, "stage_sizes", (state.quantizer.codebook_size,)))
    return Diagnosis(diagnosis_batch(val_set, limit, state.device), sizes, log, save)

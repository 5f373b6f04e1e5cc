"""The model test kit: the contract every encoder/decoder plugin keeps (docs/hooks.md).

``M(latent_dim=D, **params)``; ``encode(x)`` gives ``(B, D)`` vectors or
``(B, D, h, w)`` maps in float32; ``decode`` gives back ``x``'s shape; every
trainable parameter learns from a reconstruction loss; in eval mode an item's
code does not depend on its batch; a state dict restores the same model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.testing.kit import Checks, add_tests, case_of, check_declares, expect, label, lookup


@dataclass
class ModelCase:
    """One model under test; ``input_shape`` is one item: ``(2,)`` points, ``(3, 32, 32)`` images."""

    model: str | type
    params: dict[str, Any] = field(default_factory=dict)
    latent_dim: int = 4
    input_shape: tuple[int, ...] = (2,)
    batch: int = 4
    seed: int = 0
    #: parameters that by design learn nothing from a reconstruction loss (fnmatch patterns)
    no_grad_params: tuple[str, ...] = ()

    @property
    def cls(self) -> type:
        return lookup("models", self.model)

    @property
    def label(self) -> str:
        return label(self.model)

    def build(self, seed: int | None = None) -> nn.Module:
        torch.manual_seed(self.seed if seed is None else seed)
        return self.cls(latent_dim=self.latent_dim, **self.params)

    def inputs(self, seed: int = 7) -> Tensor:
        x = torch.randn(self.batch, *self.input_shape, generator=torch.Generator().manual_seed(seed))
        return x.clamp(-1, 1) if len(self.input_shape) == 3 else x


MODEL_CHECKS = Checks()


@MODEL_CHECKS("declares")
def check_model_declares(case: ModelCase) -> None:
    """A name and a summary line; ``encoder`` and ``decoder`` are modules."""
    check_declares("models", case.cls, {})
    model = case.build()
    for part in ("encoder", "decoder"):
        expect(isinstance(getattr(model, part, None), nn.Module), f"{case.label}: `{part}` must be an nn.Module")


@MODEL_CHECKS("encode_shape")
def check_encode_shape(case: ModelCase) -> None:
    """``encode(x)`` is float32 ``(B, D)`` or ``(B, D, h, w)`` with ``D = latent_dim``, finite."""
    z = case.build().encode(case.inputs())
    expect(isinstance(z, Tensor) and z.dtype == torch.float32, f"{case.label}: encode must give float32")
    expect(z.dim() in (2, 4) and z.shape[0] == case.batch and z.shape[1] == case.latent_dim,
           f"{case.label}: encode must give ({case.batch}, {case.latent_dim}) or ({case.batch}, "
           f"{case.latent_dim}, h, w), got {tuple(z.shape)}")
    expect(bool(torch.isfinite(z).all()), f"{case.label}: encode gives non-finite values")


@MODEL_CHECKS("round_trip_shape")
def check_round_trip_shape(case: ModelCase) -> None:
    """``decode(encode(x))`` has ``x``'s shape and is finite."""
    x = case.inputs()
    x_hat = case.build().decode(case.build().encode(x))
    expect(tuple(x_hat.shape) == tuple(x.shape), f"{case.label}: decode(encode(x)) is {tuple(x_hat.shape)}, "
                                                f"x is {tuple(x.shape)}")
    expect(bool(torch.isfinite(x_hat).all()), f"{case.label}: decode gives non-finite values")


@MODEL_CHECKS("gradients")
def check_model_gradients(case: ModelCase) -> None:
    """Every trainable parameter gets a finite gradient from a reconstruction loss."""
    model = case.build().train()
    x = case.inputs()
    F.mse_loss(model.decode(model.encode(x)), x).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None
               and not any(fnmatch(n, pattern) for pattern in case.no_grad_params)]
    expect(not missing, f"{case.label}: no gradient reaches {missing} (list by-design exceptions in no_grad_params)")
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    expect(not bad, f"{case.label}: non-finite gradients in {bad}")


@MODEL_CHECKS("last_layer")
def check_last_layer(case: ModelCase) -> None:
    """``last_layer`` is ``None`` or a parameter of the decoder (the adaptive GAN weight reads it)."""
    model = case.build()
    last = model.last_layer
    if last is None:
        return
    expect(any(last is p for p in model.decoder.parameters()),
           f"{case.label}: last_layer must be one of the decoder's parameters")


@MODEL_CHECKS("batch_independent")
def check_batch_independent(case: ModelCase) -> None:
    """In eval mode an item's code and reconstruction do not depend on the rest of its batch."""
    model = case.build().eval()
    x = case.inputs()
    with torch.no_grad():
        whole = model.encode(x)
        alone = torch.cat([model.encode(x[i : i + 1]) for i in range(case.batch)])
    expect(torch.allclose(whole, alone, atol=1e-5, rtol=1e-4),
           f"{case.label}: eval encode of a batch differs from its items one by one "
           f"(max diff {float((whole - alone).abs().max()):.3g})")


@MODEL_CHECKS("state_dict_round_trip")
def check_model_state_dict(case: ModelCase) -> None:
    """A state dict loaded into a differently seeded model gives the same outputs (resume, eval)."""
    source, target = case.build(seed=case.seed).eval(), case.build(seed=case.seed + 1).eval()
    target.load_state_dict(source.state_dict())
    x = case.inputs()
    with torch.no_grad():
        expect(torch.equal(source.decode(source.encode(x)), target.decode(target.encode(x))),
               f"{case.label}: a model restored from a state dict computes differently")


@MODEL_CHECKS("deterministic")
def check_model_deterministic(case: ModelCase) -> None:
    """The same seed builds the same model (every seed of a suite is reproducible)."""
    x = case.inputs()
    with torch.no_grad():
        a, b = (case.build().eval() for _ in range(2))
        expect(torch.equal(a.encode(x), b.encode(x)), f"{case.label}: two builds under one seed differ")


class ModelConformance:
    """Subclass as ``Test<Something>`` and set ``model`` (and ``input_shape`` for images).

    Other class attributes mirror :class:`ModelCase`: ``params``, ``latent_dim``,
    ``batch``, ``seed``, ``no_grad_params``.
    """

    model: str | type | None = None

    def conformance_case(self) -> ModelCase:
        return case_of(self, ModelCase, "model")


add_tests(ModelConformance, MODEL_CHECKS)

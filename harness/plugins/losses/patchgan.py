"""Adversarial refinement as a loss: taming's PatchGAN, hinge loss and adaptive weight (NSVQ 2026's stage 3).

A PatchGAN discriminator trained with the hinge loss; the generator term
``-mean D(x_hat)`` enters the model's loss as ``adv``, scaled by taming's
adaptive weight

    lambda = clamp(||grad L_rec|| / (||grad L_G|| + 1e-4), 0, 1e4) * disc_weight,

both gradients taken at the decoder's last weight (``model.last_layer``), where
``L_rec`` is the weighted sum of the terms of the losses listed before it in
``train.loss`` (``rec`` and ``lpips`` in taming's recipe). The host then
multiplies the term by ``state.loss_weights["adv"]``, which starts at the
suite's ``weight`` (0 in the shipped suites): the loss is active only while
that weight is above zero, so a schedule (``nsvq-stages``) switches it on,
playing taming's ``disc_factor`` / ``disc_start``. While inactive neither the
term nor the discriminator runs.

Parameters: ``disc_weight`` (0.8, taming's ImageNet configs),
``lr`` (default: ``train.lr``, as taming uses one learning rate for
both), ``layers`` (3). The discriminator has its own Adam with betas
(0.5, 0.9); under torchrun its gradients are averaged over ranks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import ops
from harness.contracts import Loss, QuantizeOutput, autocast_for, channels_last
from harness.errors import UsageError


class PatchDiscriminator(nn.Module):
    """taming's ``NLayerDiscriminator``: a PatchGAN emitting one logit per image patch.

    Conv4 s2 3->64, LReLU 0.2; ``n_layers - 1`` times Conv4 s2 (no bias) + BN +
    LReLU doubling the width (128, 256); Conv4 s1 (no bias) to 512 + BN + LReLU;
    Conv4 s1 to a 1-channel logit map. Width multipliers cap at 8, as in taming.
    Weights start as taming's ``weights_init``: conv N(0, 0.02), BN scale N(1, 0.02).
    """

    def __init__(self, in_channels: int = 3, width: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, stride=2, padding=1),
                                   nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(width * prev, width * mult, 4, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(width * mult), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(width * mult, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """``0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))``."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_loss(logits_fake: Tensor) -> Tensor:
    return -logits_fake.mean()


def adaptive_weight(rec_loss: Tensor, g_loss: Tensor, last_layer: Tensor, disc_weight: float) -> Tensor:
    """taming's ``calculate_adaptive_weight``: balances the two gradients at ``last_layer``."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (g_grad.norm() + 1e-4)
    return torch.clamp(weight, 0.0, 1e4).detach() * disc_weight


class PatchGAN(Loss):
    """taming's PatchGAN discriminator, hinge loss and adaptive weight: term ``adv``, active while weight > 0."""

    name = "patchgan"
    term = "adv"
    paper = "Esser et al. 2021 (taming-transformers VQGAN); NSVQ 2026's adversarial refinement"
    state_key = "discriminator"  # its place in state.extras (checkpoints)

    def __init__(self, weight: float = 1.0, disc_weight: float = 0.8, lr: float | None = None,
                 layers: int = 3) -> None:
        super().__init__(weight)
        if weight < 0 or disc_weight < 0:
            raise ValueError(f"patchgan: weight and disc_weight must be >= 0, got {weight} and {disc_weight}")
        self.disc_weight, self.lr, self.layers = float(disc_weight), lr, int(layers)
        self.discriminator: PatchDiscriminator | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.precision = "auto"
        self.last_weight: Tensor | None = None

    def setup(self, state: Any) -> None:
        if getattr(state.model, "last_layer", None) is None:
            raise UsageError(f"train.loss patchgan needs a model with a last_layer (the adaptive weight's "
                             f"gradients); model {state.config.get('model', {}).get('name')!r} has none")
        cfg = state.config["train"]
        self.discriminator = PatchDiscriminator(n_layers=self.layers).to(state.device)
        if channels_last(state.config, state.device, state.model):
            self.discriminator.to(memory_format=torch.channels_last)
        lr = float(self.lr if self.lr is not None else cfg["lr"])
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.9))
        self.precision = cfg.get("precision", "auto")

    def active(self, state: Any) -> bool:
        return state.loss_weights.get(self.term, self.weight) > 0

    def state_dict(self) -> dict[str, Any]:
        if self.discriminator is None or self.optimizer is None:
            return {}
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.discriminator.load_state_dict(saved["discriminator"])
        self.optimizer.load_state_dict(saved["optimizer"])

    def _logits(self, x: Tensor) -> Tensor:
        with autocast_for(x.device, self.precision):
            return self.discriminator(x).float()

    def terms(self, state: Any, x: Tensor, x_hat: Tensor, out: QuantizeOutput) -> dict[str, Tensor]:
        """``{"adv": lambda * -mean D(x_hat)}``; gradients reach ``x_hat``, never D."""
        self.discriminator.requires_grad_(False)
        try:
            g_loss = generator_loss(self._logits(x_hat))
        finally:
            self.discriminator.requires_grad_(True)
        last = state.model.last_layer
        weights = state.loss_weights
        earlier = getattr(state, "terms", {})
        rec = sum(weights.get(k, 1.0) * v for k, v in earlier.items() if k not in ("quantizer", self.term))
        if not last.requires_grad or not isinstance(rec, Tensor) or not rec.requires_grad:
            weight = torch.zeros((), device=x.device)  # taming's fallback when the gradient is unavailable
        else:
            weight = adaptive_weight(rec, g_loss, last, self.disc_weight)
        self.last_weight = weight
        return {self.term: weight * g_loss}

    def step(self, state: Any, x: Tensor, x_hat: Tensor) -> dict[str, Tensor]:
        """One hinge-loss step of the discriminator on this batch (after the model's step)."""
        self.discriminator.train()
        logits_real = self._logits(x.detach())
        logits_fake = self._logits(x_hat.detach())
        d_loss = state.loss_weights[self.term] * hinge_d_loss(logits_real, logits_fake)
        self.optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        if ops.distributed():
            world = torch.distributed.get_world_size()
            for p in self.discriminator.parameters():
                if p.grad is not None:
                    ops.all_reduce_sum_(p.grad).div_(world)
        self.optimizer.step()
        logs = {"disc_loss": d_loss.detach(), "logits_real": logits_real.detach().mean(),
                "logits_fake": logits_fake.detach().mean()}
        if self.last_weight is not None:
            logs["adv_weight"] = self.last_weight
        return logs

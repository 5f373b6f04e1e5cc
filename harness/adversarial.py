"""Adversarial refinement (taming's VQGAN recipe, used by paper 004's third stage).

A PatchGAN discriminator trained with the hinge loss; the generator term
``-mean D(x_hat)`` enters the model's loss scaled by taming's adaptive weight

    lambda = clamp(||grad L_rec|| / (||grad L_G|| + 1e-4), 0, 1e4) * disc_weight,

both gradients taken at the decoder's last weight (``model.last_layer``), where
``L_rec`` is the weighted sum of the reconstruction terms (``rec`` + ``lpips``).
The term is active only while ``state.loss_weights["adv"] > 0`` (a schedule,
e.g. ``nsvq-stages``, switches it on: it plays taming's ``disc_factor`` /
``disc_start``); while inactive neither the term nor the discriminator runs.

Configured by ``[train]``: ``discriminator = true`` installs it; ``disc_lr``
(default: ``train.lr``, as taming uses one learning rate for both),
``disc_weight`` (0.8, taming's ImageNet configs; METHODS.md gives 0.75-0.8),
``disc_layers`` (3). The discriminator has its own Adam with betas (0.5, 0.9).
Under torchrun its gradients are averaged over ranks before each step.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import ops
from harness.errors import UsageError
from harness.train import TrainState, autocast_for, channels_last, set_requires_grad

RECONSTRUCTION_TERMS = ("rec", "lpips")


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


class Adversarial:
    """The discriminator, its optimiser, and the two hooks it puts on a :class:`TrainState`."""

    def __init__(self, state: TrainState, lr: float, disc_weight: float = 0.8, n_layers: int = 3) -> None:
        self.disc_weight = float(disc_weight)
        self.discriminator = PatchDiscriminator(n_layers=n_layers).to(state.device)
        if _channels_last(state):
            self.discriminator.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.9))
        self.precision = state.config["train"].get("precision", "auto")
        self.last_weight: Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        """Discriminator and optimiser state, for checkpoints (``state.extras``)."""
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.discriminator.load_state_dict(saved["discriminator"])
        self.optimizer.load_state_dict(saved["optimizer"])

    @staticmethod
    def active(state: TrainState) -> bool:
        return state.loss_weights.get("adv", 0.0) > 0

    def _logits(self, x: Tensor) -> Tensor:
        with autocast_for(x.device, self.precision):
            return self.discriminator(x).float()

    def generator_term(self, state: TrainState, x: Tensor, x_hat: Tensor, out: Any) -> dict[str, Tensor]:
        """The ``adv`` loss term: ``lambda * -mean D(x_hat)`` (nothing while inactive)."""
        if not self.active(state):
            return {}
        set_requires_grad(self.discriminator, False)  # gradients reach x_hat, never D
        try:
            g_loss = generator_loss(self._logits(x_hat))
        finally:
            set_requires_grad(self.discriminator, True)
        last = getattr(state.model, "last_layer", None)
        terms = state.extras.get("terms", {})
        rec = sum(state.loss_weights.get(k, 1.0) * terms[k] for k in RECONSTRUCTION_TERMS if k in terms)
        if last is None or not last.requires_grad or not isinstance(rec, Tensor) or not rec.requires_grad:
            weight = torch.zeros((), device=x.device)  # taming's fallback when the gradient is unavailable
        else:
            weight = adaptive_weight(rec, g_loss, last, self.disc_weight)
        self.last_weight = weight
        return {"adv": weight * g_loss}

    def discriminator_step(self, state: TrainState, x: Tensor, x_hat: Tensor) -> dict[str, Tensor]:
        """One hinge-loss step of the discriminator on this batch (after the model's step)."""
        if not self.active(state):
            return {}
        self.discriminator.train()
        logits_real = self._logits(x.detach())
        logits_fake = self._logits(x_hat.detach())
        d_loss = state.loss_weights["adv"] * hinge_d_loss(logits_real, logits_fake)
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


def _channels_last(state: TrainState) -> bool:
    return channels_last(state.config, state.device, state.model)


def install(state: TrainState) -> Adversarial:
    """Put adversarial refinement on ``state`` (``[train] discriminator = true``)."""
    cfg = state.config["train"]
    if getattr(state.model, "last_layer", None) is None:
        raise UsageError(f"train.discriminator needs a model with a last_layer (the adaptive weight's "
                         f"gradients); model {state.config['model']['name']!r} has none")
    adv = Adversarial(state, lr=float(cfg.get("disc_lr", cfg["lr"])),
                      disc_weight=float(cfg.get("disc_weight", 0.8)), n_layers=int(cfg.get("disc_layers", 3)))
    state.loss_terms["adv"] = adv.generator_term
    state.step_hooks["discriminator"] = adv.discriminator_step
    state.extras["discriminator"] = adv
    return adv

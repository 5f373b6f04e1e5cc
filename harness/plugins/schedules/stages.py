"""Stage-wise training: freeze or release parts of the model at set points."""

from __future__ import annotations

from typing import Any

from torch import nn

from harness.contracts import Schedule, set_requires_grad


def freeze(module: nn.Module) -> None:
    """No gradients and eval mode, so the module's map stops changing.

    ``requires_grad = False`` alone would leave BatchNorm running statistics
    moving and dropout active; eval mode fixes those too. The optimizer keeps
    the parameters, but Adam skips a parameter whose gradient is ``None``.
    """
    set_requires_grad(module, False)
    module.eval()


def release(module: nn.Module) -> None:
    set_requires_grad(module, True)
    module.train()


def part(state: Any, name: str) -> nn.Module:
    """``state.model.encoder`` or ``.decoder``; a model without it cannot be staged."""
    if not hasattr(state.model, name):
        raise ValueError(f"model {type(state.model).__name__} has no {name!r}: "
                         f"it cannot be frozen or released by a stage schedule")
    return getattr(state.model, name)


def switch_step(label: str, step: int | None, epoch: int | None, steps_per_epoch: int) -> int | None:
    """A switch point given as a step or as an epoch (the first step of that epoch)."""
    if step is not None and epoch is not None:
        raise ValueError(f"give {label}_at (a step) or {label}_epoch, not both")
    for name, value in ((f"{label}_at", step), (f"{label}_epoch", epoch)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if epoch is not None:
        return epoch * steps_per_epoch
    return step


class NSVQStages(Schedule):
    """NSVQ's stages: joint training, then a frozen encoder, then adversarial refinement.

    NSVQ 2026 (NSVQ; only the abstract and figure captions are public): stage 1
    trains encoder, codebook and decoder together so the codebook tracks encoder
    drift; then the encoder is frozen to consolidate the codebook under a fixed
    latent geometry (the "frozen-encoder warm-up stage"); finally adversarial
    refinement is reintroduced under the same fixed geometry.

    The switch points are not public (the paper's CelebA run froze the encoder
    at step 45,350), so they are parameters: ``freeze_encoder_at`` (a step) or
    ``freeze_encoder_epoch``, and ``adversarial_at`` or ``adversarial_epoch``;
    none of them set means that stage never starts. Freezing sets
    ``requires_grad = False`` on the encoder *and* puts it in eval mode (see
    :func:`freeze`): the paper asks for a fixed latent geometry, which moving
    BatchNorm statistics would break; eval mode is re-applied every step in case
    the loop switches the model back to train mode. The adversarial stage sets
    ``state.loss_weights["adv"] = adversarial_weight``; default ``1.0``, a gate:
    the adversarial loss term carries its own adaptive weight and
    ``disc_weight`` (taming's recipe). The current stage is written to
    ``state.extras["stage"]`` (``"joint"``, ``"frozen-encoder"``,
    ``"adversarial"``).
    """

    name = "nsvq-stages"
    paper = "NSVQ 2026 (stage-wise encoder freezing, adversarial refinement)"

    def __init__(self, freeze_encoder_at: int | None = None, freeze_encoder_epoch: int | None = None,
                 adversarial_at: int | None = None, adversarial_epoch: int | None = None,
                 adversarial_weight: float = 1.0) -> None:
        switch_step("freeze_encoder", freeze_encoder_at, freeze_encoder_epoch, 1)
        switch_step("adversarial", adversarial_at, adversarial_epoch, 1)
        if adversarial_weight < 0:
            raise ValueError(f"adversarial_weight must be >= 0, got {adversarial_weight!r}")
        self.freeze_args = (freeze_encoder_at, freeze_encoder_epoch)
        self.adversarial_args = (adversarial_at, adversarial_epoch)
        self.adversarial_weight = float(adversarial_weight)
        self.freeze_at: int | None = None
        self.adversarial_at: int | None = None

    def on_train_start(self, state: Any) -> None:
        self.freeze_at = switch_step("freeze_encoder", *self.freeze_args, state.steps_per_epoch)
        self.adversarial_at = switch_step("adversarial", *self.adversarial_args, state.steps_per_epoch)
        if self.freeze_at is not None and self.adversarial_at is not None and self.adversarial_at < self.freeze_at:
            raise ValueError(f"nsvq-stages: adversarial refinement (step {self.adversarial_at}) must start "
                             f"after the encoder is frozen (step {self.freeze_at}): NSVQ 2026 refines "
                             "under a fixed latent geometry")
        if self.freeze_at is not None:
            part(state, "encoder")
        state.loss_weights.setdefault("adv", 0.0)
        state.extras["stage"] = "joint"

    def on_step(self, state: Any) -> None:
        frozen = self.freeze_at is not None and state.step >= self.freeze_at
        adversarial = self.adversarial_at is not None and state.step >= self.adversarial_at
        if frozen:
            encoder = part(state, "encoder")
            if encoder.training or any(p.requires_grad for p in encoder.parameters()):
                freeze(encoder)
            state.extras["stage"] = "frozen-encoder"
        if adversarial:
            state.loss_weights["adv"] = self.adversarial_weight
            state.extras["stage"] = "adversarial"


class StagedFreeze(Schedule):
    """Decoder frozen at the start, released later (staged training of the VQ-VAE notes).

    the VQ-VAE notes (on training stability): "first fix the
    decoder and train the encoder and codebook so they learn an initial
    discrete representation, then release the decoder for joint optimization",
    so the decoder cannot dominate reconstruction early and ignore the latents.
    The notes give no release point: ``release_decoder_at`` (a step) or
    ``release_decoder_epoch`` is required. The frozen decoder is in eval mode as
    well (see :func:`freeze`); release restores gradients and train mode.
    ``state.extras["stage"]`` reads ``"decoder-frozen"`` then ``"joint"``.
    """

    name = "staged-freeze"
    paper = "VQ-VAE notes (staged training: decoder fixed first, released later)"

    def __init__(self, release_decoder_at: int | None = None, release_decoder_epoch: int | None = None) -> None:
        switch_step("release_decoder", release_decoder_at, release_decoder_epoch, 1)
        if release_decoder_at is None and release_decoder_epoch is None:
            raise ValueError("staged-freeze needs release_decoder_at (a step) or release_decoder_epoch")
        self.args = (release_decoder_at, release_decoder_epoch)
        self.release_at = 0
        self.frozen = False

    def on_train_start(self, state: Any) -> None:
        self.release_at = switch_step("release_decoder", *self.args, state.steps_per_epoch)
        if state.step < self.release_at:
            freeze(part(state, "decoder"))
            self.frozen = True
            state.extras["stage"] = "decoder-frozen"

    def on_step(self, state: Any) -> None:
        decoder = part(state, "decoder")
        if state.step < self.release_at:
            if decoder.training:  # the loop switches the model to train mode after on_train_start
                decoder.eval()
            return
        if self.frozen:
            release(decoder)
            self.frozen = False
            state.extras["stage"] = "joint"

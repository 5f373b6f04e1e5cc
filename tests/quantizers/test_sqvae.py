"""SQ-VAE (gaussian_1): a hand-computed case of the authors' quantizer.py path, temperature schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import harness.plugins.quantizers.sqvae as sqvae_module
from harness.plugins.quantizers.sqvae import SQVAE


def quantizer(**params) -> SQVAE:
    # codes 0 and 2 in one dimension; v = 0 gives the variance s^2 = 1 + e^0 = 2
    q = SQVAE(dim=1, codebook_size=2, log_var_init=0.0, **params)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0], [2.0]]))
    return q


# z = 0.5: squared distances (0.25, 2.25); logits -d / (2 s^2) = (-0.0625, -0.5625), a gap of 0.5
P1 = 1 / (1 + math.exp(0.5))
P0 = 1 - P1
KLD_DISCRETE = P0 * math.log(P0) + P1 * math.log(P1)


def test_eval_takes_the_argmax_and_the_loss_by_hand() -> None:
    q = quantizer().eval()
    out = q(torch.tensor([[0.5]]))
    assert out.indices.tolist() == [0] and out.z_q.item() == 0.0
    # sum_k p log p + ||z - z_q||^2 / (2 s^2) = -0.6628 + 0.25 / 4
    assert out.logs["kld_discrete"].item() == pytest.approx(KLD_DISCRETE, abs=1e-6)
    assert out.loss.item() == pytest.approx(KLD_DISCRETE + 0.25 / 4, abs=1e-6)
    assert out.logs["variance"].item() == pytest.approx(2.0)


def test_training_sample_is_the_relaxed_gumbel_softmax(monkeypatch) -> None:
    # Gumbel noise G: y = softmax((l + G) / t), z_q = y . codes; t = exp(-1e-5 * 1) at the first step
    noise = torch.tensor([[0.3, -0.2]])
    monkeypatch.setattr(sqvae_module, "gumbel_noise", lambda shape, device: noise)
    q = quantizer().train()
    z = torch.tensor([[0.5]], requires_grad=True)
    out = q(z)
    t = math.exp(-1e-5)
    l0, l1 = -0.0625 + 0.3, -0.5625 - 0.2
    y1 = 1 / (1 + math.exp((l0 - l1) / t))
    assert out.z_q.item() == pytest.approx(2 * y1, abs=1e-6)
    assert out.indices.tolist() == [0]  # the sample's mode
    assert out.loss.item() == pytest.approx(KLD_DISCRETE + (0.5 - 2 * y1) ** 2 / 4, abs=1e-6)
    assert out.logs["temperature"] == pytest.approx(t)
    # no straight-through: z_q = y0 b0 + y1 b1 with y a function of the codes through the logits:
    # d z_q / d b1 = y1 + (b1 - b0) y0 y1 / t * d l1 / d b1, with d l1 / d b1 = (z - b1) / s^2 = -0.75
    out.z_q.sum().backward()
    y0 = 1 - y1
    assert q.embedding.grad[1].item() == pytest.approx(y1 + 2 * y0 * y1 / t * -0.75, abs=1e-6)
    # d z_q / d z = (b1 - b0) y0 y1 / t * (d l1/dz - d l0/dz) = 2 y0 y1 / t * (-(z - 2) + z) / 2
    assert z.grad.item() == pytest.approx(2 * y0 * y1 / t * (2.0 / 2), abs=1e-6)


def test_temperature_schedule_and_step_counter() -> None:
    q = SQVAE(dim=2, codebook_size=4, temperature=2.0, temperature_decay=0.1, temperature_min=0.5)
    assert q.temperature() == pytest.approx(2.0 * math.exp(-0.1))
    z = torch.randn(8, 2)
    for _ in range(3):
        q.train()(z)
    q.eval()(z)  # eval does not advance the schedule
    assert int(q.step) == 3
    assert q.temperature() == pytest.approx(2.0 * math.exp(-0.4))
    q.step.fill_(100)
    assert q.temperature() == 0.5  # the floor


def test_defaults_are_the_authors() -> None:
    q = SQVAE(dim=4, codebook_size=8)
    assert q.log_param_q.item() == pytest.approx(math.log(10.0))  # their MNIST config
    assert q.variance().item() == pytest.approx(11.0)
    assert (q.temperature0, q.temperature_decay, q.temperature_min) == (1.0, 1e-5, 0.0)
    with pytest.raises(ValueError, match="temperature must be positive"):
        SQVAE(dim=4, codebook_size=8, temperature=0.0)


def test_gaussian_mle_reconstruction_term_by_hand() -> None:
    """SQ-VAE's rec term: D_x/2 log(per-item summed squared error), divided by tokens per item."""
    from harness.contracts import QuantizeOutput
    from harness.plugins.losses.gaussian_mle import GaussianMLE

    x = torch.zeros(2, 3)
    x_hat = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]], requires_grad=True)
    # 2 items x 4 tokens each: the quantizer's indices have 8 rows
    out = QuantizeOutput(z_q=torch.zeros(8, 1), indices=torch.zeros(8, dtype=torch.long), loss=torch.zeros(()))
    rec = GaussianMLE().terms(None, x, x_hat, out)["rec"]
    mse = (1 + 4 + 1) / 2  # summed over an item's elements, averaged over items
    assert rec.item() == pytest.approx(3 / (2 * 4) * math.log(mse), rel=1e-6)
    rec.backward()
    # gradient: the squared-error gradient 2 (x_hat - x) / items, divided by mse and scaled by D_x / 2T
    assert torch.allclose(x_hat.grad, 3 / 8 * 2 * x_hat.detach() / 2 / mse)


def test_variance_offset_zero_is_a_plain_learned_scalar() -> None:
    q = SQVAE(dim=2, codebook_size=4, log_var_init=math.log(0.25), variance_offset=0.0)
    assert q.variance().item() == pytest.approx(0.25)
    assert SQVAE(dim=2, codebook_size=4, log_var_init=math.log(0.25)).variance().item() == pytest.approx(1.25)
    with pytest.raises(ValueError, match="variance_offset non-negative"):
        SQVAE(dim=2, codebook_size=4, variance_offset=-1.0)


def _run(q: SQVAE, z: Tensor, train: bool) -> tuple:
    z = z.clone().requires_grad_(True)
    q.zero_grad()
    out = q.train(train)(z)
    (out.z_q.pow(2).sum() + out.loss).backward()
    return out.z_q.detach(), out.indices, out.loss.detach(), z.grad, q.embedding.grad.clone(), q.log_param_q.grad.clone()


def _same(a: tuple, b: tuple) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_token_blocks_give_the_same_result(monkeypatch) -> None:
    """Blocks of at most 3 tokens (5 blocks, checkpointed) equal one block, in eval and in training."""
    torch.manual_seed(0)
    q = SQVAE(dim=3, codebook_size=4, log_var_init=-1.0)
    z = torch.randn(13, 3)
    monkeypatch.setattr(sqvae_module, "gumbel_noise", lambda shape, device: torch.zeros(shape))
    whole = [_run(q, z, train) for train in (False, True)]
    monkeypatch.setattr(sqvae_module, "BLOCK_BYTES", 4 * 4 * 3)
    q.step.zero_()
    for train, expected in zip((False, True), whole, strict=True):
        _same(_run(q, z, train), expected)


def test_checkpointed_blocks_replay_the_same_gumbel_noise(monkeypatch) -> None:
    """With real noise, the checkpointed backward equals a backward that kept every block's graph."""
    monkeypatch.setattr(sqvae_module, "BLOCK_BYTES", 4 * 4 * 3)
    z = torch.randn(13, 3, generator=torch.Generator().manual_seed(1))
    results = []
    for keep_graph in (False, True):
        if keep_graph:
            monkeypatch.setattr(sqvae_module, "checkpoint", lambda fn, *args, **kw: fn(*args))
        torch.manual_seed(0)
        q = SQVAE(dim=3, codebook_size=4, log_var_init=-1.0)
        torch.manual_seed(5)
        results.append(_run(q, z, True))
    _same(results[0], results[1])

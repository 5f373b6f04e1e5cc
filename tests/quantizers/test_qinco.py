"""qinco: greedy encode over generated candidates, decode with gradient, per-stage loss.

The reference below is written from facebookresearch/Qinco ``qinco_v1/model_qinco.py``
(QINCo, QINCoStep: encode, decode, forward's per-stage losses) and ``train_qinco.py``
(``loss = losses.sum() / len(batch) / d``), run on copied weights and identical float64 inputs.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.plugins.quantizers.qinco import QINCo
from harness.testing import QuantizerConformance

D64 = torch.float64


def hand_qinco() -> QINCo:
    """Two stages in 1-D; the second stage's MLP is zero except the concat bias."""
    q = QINCo(dim=1, codebook_size=2, stages=2, blocks=1, hidden=1, beta=0.0, rq_init=False)
    with torch.no_grad():
        q.codebook0.copy_(torch.tensor([[0.0], [10.0]]))
        step = q.steps[0]
        step.codebook.copy_(torch.tensor([[1.0], [-1.0]]))
        step.concat.weight.zero_()
        step.concat.weight[0, 1] = 0.5  # + 0.5 xhat
        step.concat.bias.fill_(0.25)
        for p in step.blocks.parameters():
            p.zero_()
    return q


def test_encode_decode_and_loss_by_hand():
    q = hand_qinco()
    z = torch.tensor([[9.0]], requires_grad=True)
    out = q(z)
    # stage 1: nearest of {0, 10} is 10. stage 2 candidates: 10 + c + 0.5 * 10 + 0.25
    # = 16.25 (c = 1) or 14.25 (c = -1): 14.25 is nearer 9
    assert out.indices.tolist() == [[1, 1]]
    torch.testing.assert_close(out.z_q, torch.tensor([[14.25]]))
    # loss = (10 - 9)^2 + (14.25 - 9)^2, beta = 0
    torch.testing.assert_close(out.loss, torch.tensor(1.0 + 5.25**2))
    out.loss.backward()
    # d/d c0[1] = 2 (10 - 9) + 2 (14.25 - 9) (1 + 0.5): xhat_2 = c0 + c + 0.5 c0 + 0.25
    torch.testing.assert_close(q.codebook0.grad, torch.tensor([[0.0], [2.0 + 10.5 * 1.5]]))
    torch.testing.assert_close(q.steps[0].codebook.grad, torch.tensor([[0.0], [10.5]]))
    assert z.grad is None or float(z.grad.abs().sum()) == 0.0  # beta = 0: the loss spares z


def test_straight_through_and_commitment():
    q = hand_qinco()
    q.beta = 0.25
    z = torch.tensor([[9.0]], requires_grad=True)
    out = q(z)
    (out.z_q.sum() + out.loss).backward()
    # straight-through 1, plus 0.25 * 2 (z - 14.25)
    torch.testing.assert_close(z.grad, torch.tensor([[1.0 + 0.5 * (9.0 - 14.25)]]))


def test_rq_init_is_a_greedy_residual_kmeans():
    torch.manual_seed(0)
    q = QINCo(dim=2, codebook_size=4, stages=2, blocks=1, hidden=4)
    centres = torch.tensor([[-5.0, 0.0], [5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    z = centres.repeat_interleave(50, 0) + 0.01 * torch.randn(200, 2)
    q(z)
    assert bool(q.initted)
    found = q.codebook0.detach()
    assert torch.cdist(centres, found).min(1).values.max() < 0.05  # stage 1 finds the clusters
    assert q.steps[0].codebook.detach().abs().max() < 0.1  # stage 2: k-means of tiny residuals
    before = q.codebook0.detach().clone()
    q(z)
    assert torch.equal(q.codebook0.detach(), before), "k-means runs once"


def test_bits_and_stages():
    q = QINCo(dim=4, codebook_size=32, stages=2, blocks=1, hidden=8)
    assert q.num_stages == 2 and q.stage_sizes == (32, 32) and q.bits_per_token == 10.0


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="stages >= 1"):
        QINCo(dim=4, codebook_size=8, stages=0)


# --- the authors' computation, identical inputs, float64 ------------------------------------


class AuthorsStep(nn.Module):
    """QINCoStep: codebook (Embedding), MLPconcat, residual blocks; encode over all K."""

    def __init__(self, d, K, L, h):
        super().__init__()
        self.codebook = nn.Embedding(K, d)
        self.MLPconcat = nn.Linear(2 * d, d)
        self.residual_blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(d, h, bias=False), nn.ReLU(), nn.Linear(h, d, bias=False)) for _ in range(L))

    def decode(self, xhat, codes):
        zqs = self.codebook(codes)
        zqs = zqs + self.MLPconcat(torch.concatenate((zqs, xhat), 1))
        for block in self.residual_blocks:
            zqs = zqs + block(zqs)
        return zqs

    def encode(self, xhat, x):
        zqs = self.codebook.weight
        K, d = zqs.shape
        bs = xhat.shape[0]
        zqs_r = zqs.repeat(bs, 1, 1).reshape(bs * K, d)
        xhat_r = xhat.reshape(bs, 1, d).repeat(1, K, 1).reshape(bs * K, d)
        zqs_r = zqs_r + self.MLPconcat(torch.concatenate((zqs_r, xhat_r), 1))
        for block in self.residual_blocks:
            zqs_r = zqs_r + block(zqs_r)
        zqs_r = zqs_r.reshape(bs, K, d) + xhat.reshape(bs, 1, d)
        a = x.unsqueeze(1)
        dist = ((a ** 2).sum(-1).unsqueeze(-1) + (zqs_r ** 2).sum(-1).unsqueeze(1)
                - 2 * torch.bmm(a, zqs_r.transpose(2, 1))).squeeze(1)
        idx = dist.argmin(1)
        chosen = zqs_r[torch.arange(bs), idx]
        return idx, chosen - xhat


def authors_forward(x, codebook0, steps):
    """QINCo.forward: encode without gradient, decode stage by stage, per-stage summed errors."""
    with torch.no_grad():
        d0 = (x ** 2).sum(1, keepdim=True) + (codebook0 ** 2).sum(1) - 2 * x @ codebook0.t()
        codes = [d0.argmin(1)]
        xhat = codebook0[codes[0]]
        for step in steps:
            c, toadd = step.encode(xhat, x)
            codes.append(c)
            xhat = xhat + toadd
    xhat = codebook0[codes[0]]
    losses = [((xhat - x) ** 2).sum()]
    for i, step in enumerate(steps):
        xhat = xhat + step.decode(xhat, codes[i + 1])
        losses.append(((xhat - x) ** 2).sum())
    return torch.stack(codes, 1), xhat, torch.stack(losses)


def test_matches_the_authors_code():
    torch.manual_seed(0)
    d, K, L, h, M, bs = 6, 16, 2, 12, 3, 200
    q = QINCo(dim=d, codebook_size=K, stages=M, blocks=L, hidden=h, beta=0.0, rq_init=False).double()
    ref = [AuthorsStep(d, K, L, h).double() for _ in range(M - 1)]
    with torch.no_grad():
        for ours, theirs in zip(q.steps, ref, strict=True):
            theirs.codebook.weight.copy_(ours.codebook)
            theirs.MLPconcat.load_state_dict(ours.concat.state_dict())
            for a, b in zip(ours.blocks, theirs.residual_blocks, strict=True):
                b.load_state_dict(a.state_dict())
    cb0 = q.codebook0.detach().clone().requires_grad_(True)
    x = torch.randn(bs, d, dtype=D64) * 1.5
    codes_ref, xhat_ref, losses = authors_forward(x, cb0, ref)
    (losses.sum() / bs / d).backward()  # train_qinco.py's loss
    out = q.quantize(x)
    out.loss.backward()
    assert torch.equal(out.indices, codes_ref)
    assert (out.z_q - xhat_ref).abs().max() < 1e-12
    assert abs((out.loss - losses.sum() / bs / d).item()) < 1e-12
    assert (q.codebook0.grad - cb0.grad).abs().max() < 1e-12
    for ours, theirs in zip(q.steps, ref, strict=True):
        assert (ours.codebook.grad - theirs.codebook.weight.grad).abs().max() < 1e-12
        assert (ours.concat.weight.grad - theirs.MLPconcat.weight.grad).abs().max() < 1e-12
        for a, b in zip(ours.blocks, theirs.residual_blocks, strict=True):
            assert (a[0].weight.grad - b[0].weight.grad).abs().max() < 1e-12


class TestQINCoSmall(QuantizerConformance):
    """The kit on 3 stages with small MLPs (the defaults' 8 x 256 are slow at 20,000 tokens)."""

    quantizer = "qinco"
    params = {"stages": 3, "blocks": 2, "hidden": 16}

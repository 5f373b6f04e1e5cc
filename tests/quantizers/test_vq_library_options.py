"""vq's vector-quantize-pytorch / vqtorch options: cosine codes, orthogonal regularizer, heads,
stochastic sampling, synchronized update, affine reparameterization.

Each option: the conformance kit with it on, a hand-computed case, and a comparison on identical
inputs against vector-quantize-pytorch's ``VectorQuantize`` (run when the package is installed,
skipped otherwise) or, for vqtorch (not on PyPI), against its formulas re-implemented here from
``vqtorch/nn/vq.py`` and ``vqtorch/nn/affine.py``. vector-quantize-pytorch's codebook forward
casts to float32, so the comparisons run in float32 (the largest differences are float32 rounding).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness.plugins.quantizers.codebook_tools import orthogonal_loss
from harness.plugins.quantizers.vq import VectorQuantizer
from harness.testing import QuantizerConformance


@pytest.fixture(autouse=True)
def seeded() -> None:
    """Every check draws its codes and tokens under one seed: the tolerances below were measured there."""
    torch.manual_seed(0)

# ---------------------------------------------------------------------------- the kit, each option on


class TestCosineVQ(QuantizerConformance):
    quantizer = "vq"
    params = {"cosine_sim": True}


class TestOrthogonalVQ(QuantizerConformance):
    quantizer = "vq"
    params = {"orthogonal_reg_weight": 10.0}


class TestSharedHeadsVQ(QuantizerConformance):
    quantizer = "vq"
    params = {"heads": 2, "kmeans_init": True, "dead_code_reset": 1, "entropy_weight": 0.1}


class TestSeparateHeadsVQ(QuantizerConformance):
    quantizer = "vq"
    params = {"heads": 4, "separate_codebook_per_head": True, "kmeans_init": True, "dead_code_reset": 1}


class TestSampledVQ(QuantizerConformance):
    quantizer = "vq"
    params = {"sample_temperature": 0.1}


class TestSyncVQ(QuantizerConformance):
    quantizer = "vq"
    params = {"sync_nu": 0.5}


class TestAffineVQ(QuantizerConformance):
    quantizer = "vq"
    params = {"affine_lr": 2.0}


def test_options_off_keep_the_plain_state_and_bad_values_are_refused() -> None:
    plain = VectorQuantizer(dim=4, codebook_size=8)
    assert set(plain.state_dict()) == {"embedding"}
    assert plain.codebook() is plain.embedding, "codebook-init-scale rescales the stored parameter"
    for bad in ({"heads": 3}, {"separate_codebook_per_head": True}, {"sample_temperature": -1.0},
                {"orthogonal_reg_weight": -1.0}, {"sync_nu": -0.1}, {"affine_lr": 1.0, "cosine_sim": True}):
        with pytest.raises(ValueError):
            VectorQuantizer(dim=4, codebook_size=8, **bad)


# ---------------------------------------------------------------------------- hand-computed cases


def test_cosine_by_hand() -> None:
    q = VectorQuantizer(dim=2, codebook_size=2, cosine_sim=True, beta=0.5)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))  # unit codes (1, 0), (0, 1)
    z = torch.tensor([[3.0, 4.0], [-1.0, 0.1]])  # unit (0.6, 0.8) -> code 1; (-0.995, 0.0995) -> code 1
    out = q(z)
    assert out.indices.tolist() == [1, 1]
    torch.testing.assert_close(out.z_q, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    u2 = torch.tensor([-1.0, 0.1]) / math.sqrt(1.01)
    mse = ((0.6**2 + 0.2**2) + (u2[0] ** 2 + (u2[1] - 1) ** 2)) / 4
    torch.testing.assert_close(out.loss, (1 + 0.5) * mse)
    torch.testing.assert_close(q.codebook(), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_orthogonal_regularizer_by_hand() -> None:
    codes = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    # cosines: c01 = c12 = 1/sqrt(2), c02 = 0; sum of squares 3 + 2 (1/2 + 1/2) = 5; 5/9 - 1/3 = 2/9
    torch.testing.assert_close(orthogonal_loss(codes[None]), torch.tensor(2.0 / 9.0))
    q = VectorQuantizer(dim=2, codebook_size=3, orthogonal_reg_weight=0.5)
    plain = VectorQuantizer(dim=2, codebook_size=3)
    with torch.no_grad():
        q.embedding.copy_(codes)
        plain.embedding.copy_(codes)
    z = torch.tensor([[0.9, 0.1], [0.2, 1.7]])
    out = q(z)
    torch.testing.assert_close(out.loss, plain(z).loss + 0.5 * 2.0 / 9.0)
    torch.testing.assert_close(out.logs["orthogonal_loss"], torch.tensor(2.0 / 9.0))
    q.eval()
    torch.testing.assert_close(q(z).loss, plain.eval()(z).loss)  # a training term only


@pytest.mark.parametrize("separate", [False, True])
def test_heads_by_hand(separate: bool) -> None:
    q = VectorQuantizer(dim=4, codebook_size=2, heads=2, separate_codebook_per_head=separate)
    assert q.num_stages == 2 and q.bits_per_token == 2.0 and q.codebook() is None
    with torch.no_grad():
        if separate:  # head 0 codes (0, 0), (1, 1); head 1 codes (5, 5), (-5, -5)
            q.embedding.copy_(torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[5.0, 5.0], [-5.0, -5.0]]]))
        else:  # one codebook (0, 0), (1, 1) for both halves
            q.embedding.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    z = torch.tensor([[0.9, 0.8, -4.0, -6.0], [0.1, 0.0, 0.7, 0.6]])
    out = q(z)
    if separate:
        assert out.indices.tolist() == [[1, 1], [0, 0]]
        expected = torch.tensor([[1.0, 1.0, -5.0, -5.0], [0.0, 0.0, 5.0, 5.0]])
    else:
        assert out.indices.tolist() == [[1, 0], [0, 1]]
        expected = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(out.z_q, expected)
    torch.testing.assert_close(out.loss, 1.25 * F.mse_loss(z, expected))
    assert VectorQuantizer(dim=8, codebook_size=16, heads=4).bits_per_token == 16.0


def test_sampling_follows_the_softmax_of_minus_the_distance() -> None:
    q = VectorQuantizer(dim=1, codebook_size=2, sample_temperature=0.5)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0], [1.0]]))
    z = torch.full((40_000, 1), 0.25)  # distances 0.25 and 0.75: p(code 1) = 1 / (1 + e^(0.5 / 0.5))
    torch.manual_seed(0)
    share = q(z).indices.float().mean().item()
    assert abs(share - 1 / (1 + math.e)) < 0.01
    assert q.eval()(z).indices.eq(0).all(), "eval takes the nearest code"


def test_sync_update_sends_nu_times_the_decoder_gradient_to_the_code() -> None:
    q = VectorQuantizer(dim=2, codebook_size=2, sync_nu=0.5)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 0.0], [1.0, 2.0]]))
    z = torch.tensor([[0.9, 2.2], [1.0, 1.0]], requires_grad=True)
    out = q(z)
    torch.testing.assert_close(out.z_q, torch.tensor([[1.0, 2.0], [1.0, 2.0]]))  # the value is unchanged
    g = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    (out.z_q * g).sum().backward()
    torch.testing.assert_close(z.grad, g)  # straight-through, as without the option
    torch.testing.assert_close(q.embedding.grad, torch.tensor([[0.0, 0.0], [0.5 * 4.0, 0.5 * -1.5]]))


def test_affine_codes_by_hand() -> None:
    q = VectorQuantizer(dim=2, codebook_size=2, affine_lr=2.0)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        q.affine_scale.copy_(torch.tensor([[[0.5, 1.0]]]))  # scale 1 + 2 s = (2, 3)
        q.affine_bias.copy_(torch.tensor([[[1.0, -1.0]]]))  # shift 2 b = (2, -2)
    torch.testing.assert_close(q.codebook(), torch.tensor([[4.0, -2.0], [2.0, 1.0]]))
    out = q.eval()(torch.tensor([[3.9, -1.0], [2.0, 2.0]]))
    assert out.indices.tolist() == [0, 1]
    q.train()
    out = q(torch.tensor([[4.0, -2.0]]))
    out.loss.backward()
    assert q.affine_scale.grad.abs().sum() == 0  # exactly on the code: no pull
    out = q(torch.tensor([[5.0, -2.0]]))  # codebook term 0.5 (e - z)^2 mean: d/de0 = (4 - 5) = -1
    q.affine_scale.grad = None
    out.loss.backward()
    # de0/ds0 = 2 * embedding[0, 0] = 2; de0/db0 = 2: with beta's commitment term having no code gradient
    torch.testing.assert_close(q.affine_scale.grad, torch.tensor([[[-2.0, 0.0]]]))


# ---------------------------------------------------------------------------- against the authors' code


def _vqp_module(**kw):  # noqa: ANN202 - a third-party module
    vqp = pytest.importorskip("vector_quantize_pytorch")
    return vqp.VectorQuantize(rotation_trick=False, threshold_ema_dead_code=0, **kw)


def _vqp_run(theirs, z: torch.Tensor, g: torch.Tensor):  # noqa: ANN202
    x = z.detach().clone()[:, None, :].requires_grad_(True)
    q, idx, loss, parts = theirs(x, return_loss_breakdown=True)
    ((q * g[:, None, :]).sum() + loss).backward()
    return q[:, 0], idx[:, 0], loss, parts, x.grad[:, 0]


def _ours_run(ours: VectorQuantizer, z: torch.Tensor, g: torch.Tensor):  # noqa: ANN202
    x = z.detach().clone().requires_grad_(True)
    out = ours(x)
    ((out.z_q * g).sum() + out.loss).backward()
    return out, x.grad


def _paired(theirs, ours: VectorQuantizer, n: int, d: int):  # noqa: ANN202
    """Ours on their codebook, both run on the same tokens and upstream gradient:
    ``(q, idx, loss, parts, grad)`` of theirs, then ``(out, grad)`` of ours."""
    with torch.no_grad():
        ours.embedding.copy_(theirs.codebook)
    z, g = _inputs(n, d)
    return _vqp_run(theirs, z, g), _ours_run(ours, z, g)


def _inputs(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen)


def test_cosine_matches_vector_quantize_pytorch() -> None:
    """Their cosine codebook is an EMA buffer (they refuse a learned one): indices, z_q, the
    commitment loss and the input gradient; the codebook gradient is ours alone."""
    theirs = _vqp_module(dim=8, codebook_size=32, use_cosine_sim=True, ema_update=False, commitment_weight=0.25)
    theirs.train()
    ours = VectorQuantizer(dim=8, codebook_size=32, cosine_sim=True, beta=0.25)
    (q, idx, loss, parts, grad), (out, our_grad) = _paired(theirs, ours, 300, 8)
    assert torch.equal(out.indices, idx)
    assert (out.z_q - q).abs().max() < 1e-6
    assert abs(0.25 * out.logs["commitment_loss"] - loss) < 1e-7
    assert (our_grad - grad).abs().max() < 1e-6


def test_orthogonal_regularizer_matches_vector_quantize_pytorch() -> None:
    vqp = pytest.importorskip("vector_quantize_pytorch")
    codes = torch.randn(2, 24, 5, dtype=torch.float64, requires_grad=True)
    mine = codes.detach().clone().requires_grad_(True)
    theirs_value = vqp.vector_quantize_pytorch.orthogonal_loss_fn(codes)
    ours_value = orthogonal_loss(mine)
    theirs_value.backward()
    ours_value.backward()
    assert abs(ours_value.item() - theirs_value.item()) < 1e-15
    assert (mine.grad - codes.grad).abs().max() < 1e-16
    # in the module: their learned codebook with the same weight, the same term in the loss
    theirs = _vqp_module(dim=4, codebook_size=16, orthogonal_reg_weight=3.0, learnable_codebook=True,
                         ema_update=False, commitment_weight=1.0)
    ours = VectorQuantizer(dim=4, codebook_size=16, orthogonal_reg_weight=3.0, beta=1.0)
    (q, idx, loss, parts, grad), (out, our_grad) = _paired(theirs, ours, 200, 4)
    assert torch.equal(out.indices, idx)
    assert abs(out.logs["orthogonal_loss"] - parts.orthogonal_reg) < 1e-7
    # our loss has the codebook and commitment terms (beta = 1) where theirs has one undetached term
    assert abs(out.loss - (loss + parts.commitment)) < 1e-6
    assert (our_grad - grad).abs().max() < 1e-6
    assert (ours.embedding.grad - theirs._codebook.embed.grad[0]).abs().max() < 1e-6


@pytest.mark.parametrize("separate", [False, True])
def test_heads_match_vector_quantize_pytorch(separate: bool) -> None:
    """Learned codebook, beta = commitment weight = 1 so their one undetached mse term and our two
    detached terms give the same gradients to the tokens and the codes."""
    theirs = _vqp_module(dim=8, codebook_size=16, heads=4, separate_codebook_per_head=separate, codebook_dim=2,
                         learnable_codebook=True, ema_update=False, commitment_weight=1.0)
    ours = VectorQuantizer(dim=8, codebook_size=16, heads=4, separate_codebook_per_head=separate, beta=1.0)
    (q, idx, loss, parts, grad), (out, our_grad) = _paired(theirs, ours, 300, 8)
    assert torch.equal(out.indices, idx)
    assert (out.z_q - q).abs().max() < 1e-6
    assert abs(out.loss - 2 * loss) < 1e-6
    assert (our_grad - grad).abs().max() < 1e-6
    assert (ours.embedding.grad - theirs._codebook.embed.grad.reshape(ours.embedding.shape)).abs().max() < 1e-6


@pytest.mark.parametrize(("cosine", "temperature"), [(False, 1.0), (False, 0.1), (True, 0.05)])
def test_sampling_matches_vector_quantize_pytorch(cosine: bool, temperature: float) -> None:
    """The same Gumbel draws (one ``(1, N, K)`` uniform tensor under the same seed): the same codes."""
    kw = {"use_cosine_sim": True, "ema_update": False} if cosine else {"learnable_codebook": True, "ema_update": False}
    theirs = _vqp_module(dim=6, codebook_size=32, stochastic_sample_codes=True, sample_codebook_temp=temperature,
                         commitment_weight=1.0, **kw)
    ours = VectorQuantizer(dim=6, codebook_size=32, sample_temperature=temperature, cosine_sim=cosine, beta=1.0)
    with torch.no_grad():
        ours.embedding.copy_(theirs.codebook)
    z, g = _inputs(500, 6)
    torch.manual_seed(7)
    q, idx, loss, parts, grad = _vqp_run(theirs, z, g)
    torch.manual_seed(7)
    out, our_grad = _ours_run(ours, z, g)
    nearest = ours.eval()(z).indices
    assert (idx != nearest).float().mean() > 0.05, "the temperature must matter for this check to mean much"
    assert torch.equal(out.indices, idx)
    assert (out.z_q - q).abs().max() < 1e-6
    assert (our_grad - grad).abs().max() < 1e-6


def vqtorch_straight_through(z: torch.Tensor, z_q: torch.Tensor, nu: float) -> torch.Tensor:
    """vqtorch's ``VectorQuant.straight_through_approximation`` (vqtorch/nn/vq.py), as written there."""
    return z + (z_q - z).detach() + (nu * z_q) + (-nu * z_q).detach()


def test_sync_update_matches_vqtorch_and_differs_from_vector_quantize_pytorch() -> None:
    z, g = _inputs(300, 4)
    ours = VectorQuantizer(dim=4, codebook_size=16, sync_nu=0.3, beta=1.0)
    codes = ours.embedding.detach().clone().requires_grad_(True)
    out, our_grad = _ours_run(ours, z, g)
    # vqtorch on the same codes and assignments: their output and the gradient the decoder sends the codes
    x = z.clone().requires_grad_(True)
    zq_theirs = vqtorch_straight_through(x, F.embedding(out.indices, codes), 0.3)
    (zq_theirs * g).sum().backward()
    assert (out.z_q - zq_theirs).abs().max() < 1e-6
    assert (x.grad - g).abs().max() == 0  # vqtorch: the token's gradient stays straight-through
    plain = VectorQuantizer(dim=4, codebook_size=16, beta=1.0)
    with torch.no_grad():
        plain.embedding.copy_(codes)
    _, plain_grad = _ours_run(plain, z, g)
    # a sum over 300 tokens' float32 gradients: rounding up to about 1e-6
    assert (ours.embedding.grad - plain.embedding.grad - codes.grad).abs().max() < 1e-5
    assert (our_grad - plain_grad).abs().max() == 0  # ours too: the option changes only the codes' gradient
    # vector-quantize-pytorch: same indices and output, but the term scales the token's gradient instead
    theirs = _vqp_module(dim=4, codebook_size=16, sync_update_v=0.3, learnable_codebook=True, ema_update=False,
                         commitment_weight=1.0)
    with torch.no_grad():
        theirs.codebook = codes.detach()
    q, idx, loss, parts, grad = _vqp_run(theirs, z, g)
    assert torch.equal(out.indices, idx) and (out.z_q - q).abs().max() < 1e-6
    assert (grad - (our_grad + 0.3 * g)).abs().max() < 1e-6
    assert (theirs._codebook.embed.grad[0] - plain.embedding.grad).abs().max() < 1e-6


class VQTorchAffine(torch.nn.Module):
    """vqtorch's ``AffineTransform(use_running_statistics=False)`` (vqtorch/nn/affine.py), as written there."""

    def __init__(self, feature_size: int, lr_scale: float) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.zeros(1, feature_size))
        self.bias = torch.nn.Parameter(torch.zeros(1, feature_size))
        self.lr_scale = lr_scale

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        scale = (1.0 + self.lr_scale * self.scale).unsqueeze(1)
        bias = (self.lr_scale * self.bias).unsqueeze(1)
        n, c = codebook.shape
        return (scale * codebook.view(1, -1, c) + bias).reshape(n, c)


def test_affine_matches_vqtorch() -> None:
    """Codes, indices, z_q and the affine parameters' gradients, vqtorch's loss at its beta (0.95):
    ``(1 - beta) mse(z, sg(z_q)) + beta mse(sg(z), z_q)`` is ours scaled by ``beta`` with our beta
    ``(1 - 0.95) / 0.95``."""
    torch.manual_seed(0)
    ours = VectorQuantizer(dim=4, codebook_size=16, affine_lr=3.0, beta=0.05 / 0.95)
    affine = VQTorchAffine(4, lr_scale=3.0)
    with torch.no_grad():
        for p in (ours.affine_scale, ours.affine_bias, affine.scale, affine.bias):
            p.copy_(0.1 * torch.randn(p.shape[-1]).view(p.shape))
        affine.scale.copy_(ours.affine_scale[0])
        affine.bias.copy_(ours.affine_bias[0])
    weight = ours.embedding.detach().clone().requires_grad_(True)
    z, g = _inputs(300, 4)
    out, _ = _ours_run(ours, z, torch.zeros_like(g))
    codebook = affine(weight)
    assert (ours.codes()[0] - codebook).abs().max() < 1e-6
    idx = torch.cdist(z, codebook).argmin(1)
    assert torch.equal(out.indices, idx)
    z_q = F.embedding(idx, codebook)
    their_loss = 0.05 * F.mse_loss(z, z_q.detach()) + 0.95 * F.mse_loss(z.detach(), z_q)
    their_loss.backward()
    assert (0.95 * out.loss - their_loss).abs() < 1e-7
    for mine, theirs in ((ours.affine_scale, affine.scale), (ours.affine_bias, affine.bias),
                         (ours.embedding, weight)):
        assert (0.95 * mine.grad.reshape(theirs.grad.shape) - theirs.grad).abs().max() < 1e-7

"""The rotation trick: forward value is the code; the gradient is the rotated upstream gradient."""

from __future__ import annotations

import pytest
import torch

from harness.plugins.quantizers.rotation import RotationTrickVQ, rotate_to
from harness.testing import QuantizerConformance


def quantizer(**params) -> RotationTrickVQ:
    q = RotationTrickVQ(dim=2, codebook_size=2, **params)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 3.0], [-10.0, -10.0]]))
    return q


def test_hand_case_value_and_gradient() -> None:
    # z = (2, 0), q = (0, 3): u = (1, 0), q_hat = (0, 1), r = (1, 1)/sqrt 2, lam = 3/2.
    # value: 1.5 ((2,0) - 2 (2/sqrt2) (1,1)/sqrt2 + 2*2 (0,1)) = 1.5 (0, 2) = (0, 3)
    # gradient lam R^T g = 1.5 (g - 2 (g.r) r + 2 (g.q_hat) u):
    #   g = (1, 0) -> 1.5 ((1,0) - (1,1)) = (0, -1.5); g = (0, 1) -> 1.5 ((0,1) - (1,1) + (2,0)) = (1.5, 0)
    for g, expected in (((1.0, 0.0), (0.0, -1.5)), ((0.0, 1.0), (1.5, 0.0))):
        z = torch.tensor([[2.0, 0.0]], requires_grad=True)
        out = quantizer()(z)
        assert out.indices.tolist() == [0]
        assert torch.allclose(out.z_q, torch.tensor([[0.0, 3.0]]))
        (out.z_q * torch.tensor([g])).sum().backward()
        assert torch.allclose(z.grad, torch.tensor([expected]), atol=1e-6)


def test_rotation_without_the_pinning_has_the_code_as_value() -> None:
    torch.manual_seed(0)
    z, q = torch.randn(100, 5), torch.randn(100, 5)
    assert torch.allclose(rotate_to(z, q), q, atol=1e-5)


def test_gradient_is_the_rotation_applied_to_random_upstream_gradients() -> None:
    torch.manual_seed(1)
    z = torch.randn(20, 4, requires_grad=True)
    codes = torch.randn(20, 4)
    g = torch.randn(20, 4)
    (rotate_to(z, codes, eps=0.0) * g).sum().backward()  # the formula itself, no eps
    zd = z.detach()
    u = zd / zd.norm(dim=1, keepdim=True)
    q_hat = codes / codes.norm(dim=1, keepdim=True)
    r = (u + q_hat) / (u + q_hat).norm(dim=1, keepdim=True)
    lam = codes.norm(dim=1, keepdim=True) / zd.norm(dim=1, keepdim=True)
    eye = torch.eye(4)
    rot = eye - 2 * r[:, :, None] * r[:, None, :] + 2 * q_hat[:, :, None] * u[:, None, :]
    # R maps u to q_hat and preserves norms (a rotation)
    assert torch.allclose((rot @ u[:, :, None]).squeeze(-1), q_hat, atol=1e-5)
    assert torch.allclose(rot @ rot.transpose(1, 2), eye.expand(20, 4, 4), atol=1e-5)
    expected = lam * (rot.transpose(1, 2) @ g[:, :, None]).squeeze(-1)
    assert torch.allclose(z.grad, expected, atol=1e-5)
    # the rotated gradient keeps the upstream norm up to the scale lam
    assert torch.allclose(z.grad.norm(dim=1, keepdim=True), lam * g.norm(dim=1, keepdim=True), rtol=1e-4)


def test_vqgan_path_codebook_learns_only_through_the_codebook_loss() -> None:
    q = quantizer(path="vqgan")
    z = torch.tensor([[2.0, 0.0]], requires_grad=True)
    out = q(z)
    (grad,) = torch.autograd.grad(out.z_q.sum(), q.embedding, allow_unused=True)
    assert grad is None or torch.count_nonzero(grad) == 0
    # taming's legacy weighting: loss = 1.0 mse(z, sg e) + 0.25 mse(e, sg z), e = (0, 3): both means 6.5
    assert out.loss.item() == pytest.approx(1.25 * 6.5)
    out.loss.backward()
    # d/de 0.25 mse(e, z) = 0.25 * 2 (e - z) / 2 = 0.25 (-2, 3), for the chosen code only
    assert torch.allclose(q.embedding.grad, torch.tensor([[-0.5, 0.75], [0.0, 0.0]]))


def test_vqgan_path_loses_the_radial_gradient() -> None:
    # rot_vqgan.py applies R to z/||z|| (not detached) times ||q||: gradient lam (I - u u^T) R^T g.
    # z = (2, 0), q = (0, 3): R^T (1, 0) = (0, -1), R^T (0, 1) = (1, 0) (see the hand case above);
    # (I - u u^T) with u = (1, 0) keeps (0, -1) and removes (1, 0): gradients (0, -1.5) and (0, 0)
    for g, expected in (((1.0, 0.0), (0.0, -1.5)), ((0.0, 1.0), (0.0, 0.0))):
        z = torch.tensor([[2.0, 0.0]], requires_grad=True)
        out = quantizer(path="vqgan")(z)
        assert torch.allclose(out.z_q, torch.tensor([[0.0, 3.0]]))
        (out.z_q * torch.tensor([g])).sum().backward()
        assert torch.allclose(z.grad, torch.tensor([expected]), atol=1e-5)


def test_vqvae_path_ema_step_by_hand() -> None:
    """The authors' vector-quantize-pytorch EMA: zero counts, running sums at the codes, Laplace eps 1e-5."""
    q = quantizer()
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[2.0, 0.0], [0.0, -1.0]]))
        q.embed_sum.copy_(q.embedding)
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0]], requires_grad=True)
    out = q(z)
    assert out.indices.tolist() == [0, 0]
    # commitment weight 1.0 on mse(z, sg e) = ((1-2)^2 + (3-2)^2) / 4; no codebook term
    assert out.loss.item() == pytest.approx(0.5)
    # counts 0.8*0 + 0.2*(2, 0) = (0.4, 0); sums 0.8 e + 0.2 ((4, 0), (0, 0))
    assert torch.allclose(q.cluster_size, torch.tensor([0.4, 0.0]))
    assert torch.allclose(q.embed_sum, torch.tensor([[2.4, 0.0], [0.0, -0.8]]))
    # smoothed counts (N_k + 1e-5) / (0.4 + 2e-5) * 0.4; code = sum / count
    n0, n1 = 0.40001 / 0.40002 * 0.4, 1e-5 / 0.40002 * 0.4
    assert torch.allclose(q.embedding, torch.tensor([[2.4 / n0, 0.0], [0.0, -0.8 / n1]]), rtol=1e-5)
    # the unused code is thrown to about -80,000: the authors' code does the same
    assert q.embedding[1, 1].item() == pytest.approx(-80004.0, rel=1e-4)
    # the output used the codes from before the update
    assert torch.allclose(out.z_q, torch.tensor([[2.0, 0.0], [2.0, 0.0]]))


def test_defaults_are_the_authors_vqvae_path() -> None:
    q = RotationTrickVQ(dim=4, codebook_size=8)
    assert (q.path, q.beta, q.decay) == ("vqvae", 1.0, 0.8)
    assert not list(q.parameters()) and "embedding" in dict(q.named_buffers())
    # kaiming-uniform on (1, K, D): bound sqrt(6 / (K D))
    assert q.embedding.abs().max().item() <= (6 / 32) ** 0.5
    g = RotationTrickVQ(dim=4, codebook_size=8, path="vqgan")
    assert (g.beta, g.codebook_weight) == (1.0, 0.25)
    assert g.embedding.abs().max().item() <= 1 / 8


@pytest.mark.parametrize(("params", "message"), [
    ({"codebook_weight": 0.5}, "codebook_weight belongs to path='vqgan'"),
    ({"path": "vqgan", "decay": 0.9}, "decay belongs to path='vqvae'"),
    ({"path": "ema"}, "path must be one of"),
    ({"decay": 1.0}, r"decay must lie in \[0, 1\)"),
])
def test_settings_of_the_other_path_are_refused(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RotationTrickVQ(dim=2, codebook_size=4, **params)


@pytest.mark.parametrize("path", ["vqvae", "vqgan"])
def test_degenerate_directions_stay_finite(path: str) -> None:
    q = quantizer(path=path)
    # z = 0, and z antiparallel to its code (u + q_hat = 0)
    for z in (torch.zeros(1, 2), torch.tensor([[0.0, -1.0]])):
        z.requires_grad_(True)
        codes = q.embedding.detach().clone()  # the vqvae path's EMA moves them after the forward
        out = q(z)
        assert out.indices.tolist() == [0]  # the code (0, 3)
        out.z_q.sum().backward()
        assert torch.isfinite(out.z_q).all() and torch.isfinite(z.grad).all()
        assert torch.allclose(out.z_q, codes[out.indices])


class TestRotationVQGANPath(QuantizerConformance):
    quantizer = "rotation"
    params = {"path": "vqgan"}
    large_n = 2000


# --- the cosine codebook (the authors' ImageNet runs, --codebook cosine) ----------------------


def cosine_quantizer() -> RotationTrickVQ:
    q = RotationTrickVQ(dim=2, codebook_size=2, cosine=True)
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.0, 1.0], [-0.6, -0.8]]))
        q.embed_sum.copy_(q.embedding)
    return q


def test_cosine_hand_case_value_gradient_loss_and_ema() -> None:
    # z = (2, 0): x = (1, 0), dots (0, -0.6): code 0 = (0, 1). The output is normalised again, so of
    # the rotated gradient lam R^T g only the part orthogonal to x survives, divided by ||z|| = 2:
    # g = (1, 0): R^T g = (0, -1) -> (0, -0.5); g = (0, 1): R^T g = (1, 0), radial -> (0, 0)
    for g, expected in (((1.0, 0.0), (0.0, -0.5)), ((0.0, 1.0), (0.0, 0.0))):
        z = torch.tensor([[2.0, 0.0]], requires_grad=True)
        q = cosine_quantizer()
        out = q(z)
        assert out.indices.tolist() == [0]
        assert torch.allclose(out.z_q, torch.tensor([[0.0, 1.0]]))
        # beta mse(x, sg e) = ((1 - 0)^2 + (0 - 1)^2) / 2
        assert out.loss.item() == pytest.approx(1.0)
        (out.z_q * torch.tensor([g])).sum().backward()
        assert torch.allclose(z.grad, torch.tensor([expected]), atol=1e-5)
    # EMA on the unit token, then unit codes: sums 0.8 e + 0.2 ((1, 0), 0); the unused code keeps its
    # direction (the Euclidean path would throw it to about 80,000 times its length)
    assert torch.allclose(q.embedding, torch.nn.functional.normalize(torch.tensor([[0.2, 0.8], [-0.6, -0.8]])))


def authors_cosine_step(z, codes, cluster_size, embed_avg, g, decay=0.8, commit_weight=1.0):
    """vq_vae.py's forward with --codebook cosine and rot=True, with their copy's CosineSimCodebook.

    The model normalises x, the codebook's transform_input normalises it again, the lookup is
    argmax of dot products, the EMA averages the unit tokens and re-normalises the codes, the
    rotation maps x onto the code and the result is normalised before the decoder.
    """
    x = z / torch.norm(z, dim=1, keepdim=True)
    flat = torch.nn.functional.normalize(x, dim=-1)
    dist = flat @ codes.t()
    ind = dist.argmax(-1)
    onehot = torch.nn.functional.one_hot(ind, codes.shape[0]).to(z.dtype)
    quantize = onehot @ codes
    cluster_size = cluster_size.lerp(onehot.sum(0), 1 - decay)
    embed_avg = embed_avg.lerp(onehot.t() @ flat.detach(), 1 - decay)
    k = codes.shape[0]
    smoothed = (cluster_size + 1e-5) / (cluster_size.sum() + k * 1e-5) * cluster_size.sum()
    new_codes = torch.nn.functional.normalize(torch.nn.functional.normalize(embed_avg / smoothed[:, None], dim=-1), dim=-1)
    commit = torch.nn.functional.mse_loss(quantize.detach(), flat) * commit_weight
    quantized = flat + (quantize - flat).detach()
    u = x / (torch.norm(x, dim=1, keepdim=True) + 1e-6)
    qh = quantized / (torch.norm(quantized, dim=1, keepdim=True) + 1e-6)
    w = ((u + qh) / torch.norm(u + qh, dim=1, keepdim=True)).detach()
    e = x
    e = (e - 2 * (e * w).sum(1, keepdim=True) * w
         + 2 * (e * u.detach()).sum(1, keepdim=True) * qh.detach())
    out = e * (torch.norm(quantized, dim=1, keepdim=True) / (torch.norm(x, dim=1, keepdim=True) + 1e-6)).detach()
    out = out / torch.norm(out, dim=1, keepdim=True)
    (grad,) = torch.autograd.grad((out * g).sum() + commit, z)
    return ind, out, commit, grad, new_codes, cluster_size, embed_avg


def test_cosine_matches_the_authors_code_on_identical_inputs() -> None:
    torch.manual_seed(3)
    n, d, k = 300, 6, 24
    q = RotationTrickVQ(dim=d, codebook_size=k, cosine=True).double()
    z0 = torch.randn(n, d, dtype=torch.float64) * 2.0
    codes, sizes, sums = q.embedding.clone(), q.cluster_size.clone(), q.embed_sum.clone()
    for step in range(3):  # lockstep: each side keeps its own codebook and statistics
        z = (z0 + 0.3 * step).requires_grad_(True)
        g = torch.randn(n, d, dtype=torch.float64)
        ind, z_q, commit, grad, codes, sizes, sums = authors_cosine_step(z, codes, sizes, sums, g)
        mine = z.detach().clone().requires_grad_(True)
        out = q.quantize(mine)
        ((out.z_q * g).sum() + out.loss).backward()
        assert torch.equal(out.indices, ind)
        # ours is pinned to the unit code; theirs is off it by the 1e-6 eps inside R (6e-8 here)
        assert (out.z_q - z_q).abs().max() < 1e-6
        assert abs(out.loss.item() - commit.item()) < 1e-12
        assert (mine.grad - grad).abs().max() < 1e-12
        assert (q.embedding - codes).abs().max() < 1e-12
        assert (q.cluster_size - sizes).abs().max() < 1e-12 and (q.embed_sum - sums).abs().max() < 1e-12


def test_cosine_ties_go_to_the_lowest_index_as_their_argmax() -> None:
    # codes 0 and 2 equal and closest: their CosineSimCodebook takes argmax, the first maximum
    q = RotationTrickVQ(dim=2, codebook_size=3, cosine=True).eval()
    with torch.no_grad():
        q.embedding.copy_(torch.tensor([[0.6, 0.8], [-1.0, 0.0], [0.6, 0.8]]))
    assert q(torch.tensor([[3.0, 4.0], [1.0, 1.0]])).indices.tolist() == [0, 0]


def test_cosine_is_refused_on_the_vqgan_path() -> None:
    with pytest.raises(ValueError, match="cosine is the authors' vqvae-path codebook"):
        RotationTrickVQ(dim=2, codebook_size=4, path="vqgan", cosine=True)
    q = RotationTrickVQ(dim=4, codebook_size=8, cosine=True)
    torch.testing.assert_close(q.embedding.norm(dim=1), torch.ones(8))


class TestRotationCosine(QuantizerConformance):
    quantizer = "rotation"
    params = {"cosine": True}
    large_n = 2000

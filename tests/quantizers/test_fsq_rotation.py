"""FSQ's ``random_rotation`` option: the kit, a hand-computed case, and vector-quantize-pytorch's
``FSQ(orthogonal_rotation=True)``."""

from __future__ import annotations

import pytest
import torch

from harness.contracts import Quantizer
from harness.plugins.quantizers.fsq import FSQ
from harness.testing import QuantizerConformance


class TestRotatedFSQConformance(QuantizerConformance):
    quantizer = "fsq"
    params = {"levels": [4, 4], "random_rotation": True}


def test_off_by_default_and_a_saved_orthogonal_buffer_when_on() -> None:
    assert "rotation" not in FSQ(dim=8, codebook_size=256).state_dict()
    torch.manual_seed(0)
    q = FSQ(dim=8, codebook_size=256, random_rotation=True)
    r = q.state_dict()["rotation"]
    assert r.shape == (3, 3) and not r.requires_grad
    assert torch.allclose(r @ r.t(), torch.eye(3), atol=1e-6)
    assert not torch.allclose(r.abs(), torch.eye(3))


def test_hand_computed_quarter_turn() -> None:
    q = FSQ(dim=2, codebook_size=25, levels=[5, 5], random_rotation=True).eval()
    with torch.no_grad():
        q.rotation.copy_(torch.tensor([[0.0, -1.0], [1.0, 0.0]]))  # (a, b) R = (b, -a)
    # rotated (1.2, -0.3); f = tanh(.) * 1.998: 1.666 -> 2, -0.582 -> -1; codes (1, -0.5)
    # digits code * 2 + 2 = (4, 1): index 4 + 5 * 1 = 9; back: (1, -0.5) R^T = (0.5, 1)
    out = q(torch.tensor([[0.3, 1.2]]))
    assert out.indices.tolist() == [9]
    assert torch.allclose(out.z_q, torch.tensor([[0.5, 1.0]]))
    assert torch.allclose(q.decode(out.indices), out.z_q)


# vector-quantize-pytorch computes 2/(L-1) from int32 levels in float32 even in a float64 module:
# exact for L = 2, within float32's rounding of 2/3 and 2/7 for L = 4 and 8.
@pytest.mark.parametrize(("levels", "dim", "tol"), [((2, 2, 2, 2), 4, 0.0), ((4, 4, 4), 3, 1e-7),
                                                    ((8, 8, 4, 4), 6, 1e-6)])
def test_matches_vector_quantize_pytorch(monkeypatch, levels, dim, tol) -> None:
    """Even levels in the symmetric form on both sides, its rotation and projections copied, float64."""
    vqp = pytest.importorskip("vector_quantize_pytorch")
    monkeypatch.setattr(Quantizer, "forward", lambda self, z: self.quantize(z))  # keep float64
    torch.manual_seed(0)
    theirs = vqp.FSQ(levels=list(levels), dim=dim, preserve_symmetry=True, orthogonal_rotation=True).double()
    ours = FSQ(dim=dim, codebook_size=2**12, levels=levels, symmetric_even=True, random_rotation=True).double()
    ours.rotation.copy_(theirs.orthogonal_rot)
    if dim != len(levels):
        ours.project_in.load_state_dict(theirs.project_in.state_dict())
        ours.project_out.load_state_dict(theirs.project_out.state_dict())
    z = (1.5 * torch.randn(1, 500, dim, dtype=torch.float64)).requires_grad_(True)
    z_ours = z.detach().clone().requires_grad_(True)
    g = torch.randn(1, 500, dim, dtype=torch.float64)
    q_theirs, idx_theirs = theirs(z)
    out = ours(z_ours[0])
    assert torch.equal(out.indices, idx_theirs[0].long())
    assert (out.z_q - q_theirs[0]).abs().max().item() <= tol
    (q_theirs * g).sum().backward()
    (out.z_q * g[0]).sum().backward()
    assert (z_ours.grad - z.grad).abs().max().item() <= tol

"""Contract checks shared by the codebook quantizers' tests (a subset of the conformance kit).

Each check builds the quantizer itself so that it can compare fresh copies.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from harness.contracts import Quantizer

Factory = Callable[[], Quantizer]


def build(factory: Factory, seed: int = 0) -> Quantizer:
    torch.manual_seed(seed)
    return factory()


def tokens(n: int, dim: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def check_outputs_and_gradients(factory: Factory, n: int = 13) -> None:
    """bf16 input under bf16 autocast, shapes, float32 output, index range, finite loss, gradients."""
    q = build(factory)
    q.train()
    z = tokens(n, q.dim).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
        codes = q.codebook()
    assert codes is not None and codes.shape == (q.codebook_size, q.dim) and codes.dtype == torch.float32
    assert out.z_q.shape == (n, q.dim) and out.z_q.dtype == torch.float32
    assert out.indices.shape == (n,) and out.indices.dtype == torch.int64
    assert int(out.indices.min()) >= 0 and int(out.indices.max()) < q.codebook_size
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    (out.z_q.float().pow(2).sum() + out.loss).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    for name, p in q.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"no gradient reaches {name}"


def check_eval_is_pure(factory: Factory, n: int = 9) -> None:
    """Eval mode changes no buffer; its output decodes through ``codebook()``."""
    q = build(factory)
    q.train()
    q(tokens(n, q.dim))  # a training step first, so that lazy state exists
    q.eval()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    with torch.no_grad():
        out = q(tokens(n, q.dim, seed=2))
        codes = q.codebook()
    for k, v in q.state_dict().items():
        assert torch.equal(v, before[k]), f"eval forward changed {k}"
    torch.testing.assert_close(out.z_q, codes[out.indices], rtol=1e-5, atol=1e-5)


def check_state_dict_and_seed(factory: Factory, n: int = 9) -> None:
    """Same seed, same result; a fresh copy loaded from a state_dict quantizes identically."""
    a = build(factory)
    za = a(tokens(n, a.dim))
    b = build(factory)
    zb = b(tokens(n, b.dim))
    assert torch.equal(za.indices, zb.indices) and torch.equal(za.z_q, zb.z_q)
    other = build(factory, seed=123)
    other.load_state_dict(a.state_dict())
    a.eval()
    other.eval()
    with torch.no_grad():
        x = tokens(n, a.dim, seed=3)
        oa, ob = a(x), other(x)
    assert torch.equal(oa.indices, ob.indices) and torch.equal(oa.z_q, ob.z_q)


def check_extreme_sizes(factory: Factory, large: int = 20_000) -> None:
    """One token, and many tokens, in training mode."""
    q = build(factory)
    q.train()
    for n in (1, large):
        out = q(tokens(n, q.dim, seed=n))
        assert out.z_q.shape == (n, q.dim) and torch.isfinite(out.loss)


def check_all(factory: Factory) -> None:
    check_outputs_and_gradients(factory)
    check_eval_is_pure(factory)
    check_state_dict_and_seed(factory)
    check_extreme_sizes(factory)

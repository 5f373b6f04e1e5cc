"""The quantizer conformance kit: one suite of checks every quantizer plugin can run on itself.

Plugin authors subclass :class:`QuantizerConformance` in their own test module::

    from harness.testing import QuantizerConformance

    class TestMine(QuantizerConformance):
        quantizer = "mine"            # a registered name or the class itself
        params = {"beta": 0.5}        # constructor parameters (optional)
        dim, codebook_size = 8, 16    # optional overrides

and pytest collects one test per check. The checks are plain functions in
:data:`CHECKS` taking a :class:`QuantizerCase`, so a project can also
parametrize them over many quantizers (see ``tests/quantizers/test_conformance.py``).

What "conformant" means (docs/architecture.md, "The contracts"): ``z_q (N, D)`` float32 with a
gradient path to ``z``; ``indices`` int64 ``(N,)`` (or ``(N, L)`` with
``num_stages = L``) inside each stage's size; a finite scalar ``loss``;
float32 quantization under bf16 autocast (no op of the forward runs in bf16); reproducible under a seed; eval
forwards change no state; a state dict restores the same quantizer; N = 1 and
large N work; and a few optimizer steps make ``z_q`` approach a fixed ``z``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from harness.contracts import QuantizeOutput

REDUCED_PRECISION = (torch.bfloat16, torch.float16)


@dataclass
class QuantizerCase:
    """One quantizer under test and the sizes the checks use.

    ``no_grad_params`` lists parameter names (``fnmatch`` patterns, e.g.
    ``"stages.*.frozen"``) that require grad yet by the method's design receive
    none in a training forward; parameters with ``requires_grad=False`` and
    buffers (EMA codebooks, frozen bases) are never expected to get one.
    """

    quantizer: str | type
    params: dict[str, Any] = field(default_factory=dict)
    dim: int = 8
    codebook_size: int = 16
    batch: int = 64
    large_n: int = 20_000
    #: codebook size for the large-N check (``None``: ``codebook_size``)
    large_codebook_size: int | None = None
    no_grad_params: tuple[str, ...] = ()
    seed: int = 0
    train_steps: int = 30
    train_lr: float = 1e-2
    device: str = "cpu"

    @property
    def cls(self) -> type:
        """The quantizer class (a registered name is looked up in the host's registry)."""
        if isinstance(self.quantizer, str):
            from harness.host import get_host

            return get_host().quantizers.get(self.quantizer).obj
        return self.quantizer

    @property
    def label(self) -> str:
        return self.quantizer if isinstance(self.quantizer, str) else self.quantizer.__name__

    def build(self, seed: int | None = None, codebook_size: int | None = None) -> nn.Module:
        """A fresh quantizer, its initialisation drawn under ``seed``."""
        torch.manual_seed(self.seed if seed is None else seed)
        k = self.codebook_size if codebook_size is None else codebook_size
        return self.cls(dim=self.dim, codebook_size=k, **self.params).to(self.device)

    def tokens(self, n: int | None = None, seed: int = 1234) -> Tensor:
        """Standard-normal tokens ``(n, dim)``, the same for the same ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(n or self.batch, self.dim, generator=generator).to(self.device)


# ---------------------------------------------------------------------------
# helpers


def _trainable(q: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in q.named_parameters() if p.requires_grad]


def _stage_sizes(q: nn.Module) -> tuple[int, ...]:
    return tuple(getattr(q, "stage_sizes", (q.codebook_size,)))


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _finite(t: Tensor) -> bool:
    return bool(torch.isfinite(t.detach().float()).all())


def check_output(case: QuantizerCase, q: nn.Module, out: Any, n: int, where: str) -> None:
    """The contract's shapes, dtypes and ranges for one forward of ``n`` tokens."""
    name = f"{case.label} ({where})"
    _expect(isinstance(out, QuantizeOutput), f"{name}: forward must return QuantizeOutput, got {type(out).__name__}")
    _expect(isinstance(out.z_q, Tensor) and tuple(out.z_q.shape) == (n, case.dim),
            f"{name}: z_q must be ({n}, {case.dim}), got {tuple(getattr(out.z_q, 'shape', ()))}")
    _expect(out.z_q.dtype == torch.float32, f"{name}: z_q must be float32, got {out.z_q.dtype}")
    _expect(_finite(out.z_q), f"{name}: z_q has non-finite values")
    stages = int(getattr(q, "num_stages", 1))
    sizes = _stage_sizes(q)
    _expect(len(sizes) == stages, f"{name}: stage_sizes {sizes} does not have num_stages={stages} entries")
    shape = (n,) if stages == 1 else (n, stages)
    _expect(out.indices.dtype == torch.int64, f"{name}: indices must be int64, got {out.indices.dtype}")
    _expect(tuple(out.indices.shape) == shape,
            f"{name}: indices must be {shape} for num_stages={stages}, got {tuple(out.indices.shape)}")
    columns = out.indices.reshape(n, stages)
    for stage, size in enumerate(sizes):
        col = columns[:, stage]
        lo, hi = int(col.min()), int(col.max())
        _expect(lo >= 0 and hi < size, f"{name}: stage {stage} indices span [{lo}, {hi}], outside [0, {size})")
    if stages == 1:
        _expect(sizes == (q.codebook_size,), f"{name}: stage_sizes {sizes} != (codebook_size,) = ({q.codebook_size},)")


def check_loss(case: QuantizerCase, out: QuantizeOutput, where: str) -> None:
    name = f"{case.label} ({where})"
    _expect(isinstance(out.loss, Tensor) and out.loss.dim() == 0,
            f"{name}: loss must be a 0-dim tensor, got {getattr(out.loss, 'shape', type(out.loss))}")
    _expect(out.loss.is_floating_point() and _finite(out.loss), f"{name}: loss is not finite: {out.loss}")
    for key, value in out.logs.items():
        v = torch.as_tensor(value)
        _expect(v.numel() == 1 and _finite(v), f"{name}: log {key!r} must be one finite number, got {value}")


def _backward(out: QuantizeOutput, seed: int = 99) -> None:
    """Backpropagate a random decoder gradient through ``z_q`` plus the method's loss."""
    g = torch.randn(out.z_q.shape, generator=torch.Generator().manual_seed(seed)).to(out.z_q.device)
    total = (out.z_q * g).sum() + out.loss
    _expect(total.requires_grad, "neither z_q nor the loss depends on z or a parameter")
    total.backward()


def _outputs_equal(a: QuantizeOutput, b: QuantizeOutput) -> bool:
    return (torch.equal(a.z_q, b.z_q) and torch.equal(a.indices, b.indices)
            and torch.equal(a.loss.detach(), b.loss.detach()))


def _snapshot(q: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in q.state_dict().items()}


def _changed(before: dict[str, Tensor], after: dict[str, Tensor]) -> list[str]:
    keys = sorted(set(before) | set(after))
    return [k for k in keys if k not in before or k not in after
            or before[k].shape != after[k].shape or not torch.equal(before[k], after[k])]


# ---------------------------------------------------------------------------
# the checks

CHECKS: dict[str, Callable[[QuantizerCase], None]] = {}


def check(name: str) -> Callable[[Callable[[QuantizerCase], None]], Callable[[QuantizerCase], None]]:
    def add(fn: Callable[[QuantizerCase], None]) -> Callable[[QuantizerCase], None]:
        CHECKS[name] = fn
        return fn

    return add


@check("output_shapes")
def check_output_shapes(case: QuantizerCase) -> None:
    """z_q (N, D) float32, indices int64 (N,) or (N, L) inside each stage's size, train and eval."""
    q = case.build()
    z = case.tokens()
    for mode in ("train", "eval"):
        q.train(mode == "train")
        check_output(case, q, q(z), case.batch, mode)


@check("codebook_matches_output")
def check_codebook_matches_output(case: QuantizerCase) -> None:
    """When ``codebook()`` is given it is ``(K, D)`` and eval ``z_q`` is ``codebook()[indices]``."""
    q = case.build().eval()
    if int(getattr(q, "num_stages", 1)) != 1:
        pytest.skip("multi-stage quantizer: no single codebook")
    with torch.no_grad():
        codes = q.codebook() if hasattr(q, "codebook") else None
        if codes is None:
            pytest.skip("codebook() is None: implicit codebook")
        _expect(tuple(codes.shape) == (q.codebook_size, case.dim),
                f"{case.label}: codebook() must be ({q.codebook_size}, {case.dim}), got {tuple(codes.shape)}")
        out = q(case.tokens())
        expected = codes.float()[out.indices]
    error = (out.z_q - expected).abs().max().item()
    _expect(torch.allclose(out.z_q, expected, rtol=1e-4, atol=1e-5),
            f"{case.label}: eval z_q differs from codebook()[indices] by up to {error:.3g}")


@check("gradients")
def check_gradients(case: QuantizerCase) -> None:
    """The decoder's gradient reaches z; every trainable parameter that should learn gets one."""
    q = case.build().train()
    z = case.tokens().requires_grad_(True)
    out = q(z)
    _expect(out.z_q.requires_grad, f"{case.label}: z_q is detached: no gradient reaches z (the encoder would not learn)")
    g = torch.randn(out.z_q.shape, generator=torch.Generator().manual_seed(7)).to(out.z_q.device)
    (grad_z,) = torch.autograd.grad((out.z_q * g).sum(), z, retain_graph=True, allow_unused=True)
    _expect(grad_z is not None and bool(grad_z.abs().sum() > 0),
            f"{case.label}: no gradient reaches z through z_q (the encoder would not learn)")
    _expect(_finite(grad_z), f"{case.label}: non-finite gradient at z")
    ((out.z_q * g).sum() + out.loss).backward()
    params = _trainable(q)
    stale = [p for p in case.no_grad_params if not any(fnmatch(n, p) for n, _ in params)]
    _expect(not stale, f"{case.label}: no_grad_params {stale} match no trainable parameter")
    missing, bad = [], []
    for n, p in params:
        if any(fnmatch(n, pattern) for pattern in case.no_grad_params):
            continue
        if p.grad is None or not bool(p.grad.abs().sum() > 0):
            missing.append(n)
        elif not _finite(p.grad):
            bad.append(n)
    _expect(not missing, f"{case.label}: trainable parameters without gradient: {missing} "
                         "(set requires_grad=False, make them buffers, or list them in no_grad_params)")
    _expect(not bad, f"{case.label}: non-finite gradients in {bad}")


@check("finite_loss")
def check_finite_loss(case: QuantizerCase) -> None:
    """The loss is a finite 0-dim tensor and every log one finite number, train and eval."""
    q = case.build()
    z = case.tokens()
    for mode in ("train", "eval"):
        q.train(mode == "train")
        check_loss(case, q(z), mode)


@check("deterministic")
def check_deterministic(case: QuantizerCase) -> None:
    """The same seed builds the same quantizer and gives the same training forward."""
    results = []
    for _ in range(2):
        q = case.build(seed=case.seed).train()
        state = _snapshot(q)
        torch.manual_seed(case.seed + 1)
        results.append((state, q(case.tokens())))
    (s1, o1), (s2, o2) = results
    changed = _changed(s1, s2)
    _expect(not changed, f"{case.label}: same seed, different initial state in {changed}")
    _expect(_outputs_equal(o1, o2), f"{case.label}: same seed, different training forward")


@check("eval_is_pure")
def check_eval_is_pure(case: QuantizerCase) -> None:
    """Eval forwards update no parameter or buffer and give the same output twice."""
    q = case.build().train()
    z = case.tokens()
    with torch.no_grad():
        q(z)  # lets lazily initialised quantizers (k-means init) initialise
    q.eval()
    before = _snapshot(q)
    with torch.no_grad():
        first = q(z)
    second = q(z)  # with autograd on too: eval must not depend on grad mode
    changed = _changed(before, _snapshot(q))
    _expect(not changed, f"{case.label}: eval forwards changed {changed}")
    _expect(_outputs_equal(first, second), f"{case.label}: two eval forwards on the same z differ")


@check("state_dict_round_trip")
def check_state_dict_round_trip(case: QuantizerCase) -> None:
    """A fresh instance loaded from a trained state dict (saved with torch.save) evaluates identically."""
    q = case.build(seed=case.seed).train()
    params = [p for _, p in _trainable(q)]
    opt = torch.optim.SGD(params, lr=0.1) if params else None
    for step in range(2):
        out = q(case.tokens(seed=step))
        if opt is not None:
            opt.zero_grad()
            _backward(out)
            opt.step()
    buffer = io.BytesIO()
    torch.save(q.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = case.build(seed=case.seed + 1)
    fresh.load_state_dict(state)
    q.eval()
    fresh.eval()
    z = case.tokens(seed=5)
    with torch.no_grad():
        _expect(_outputs_equal(q(z), fresh(z)),
                f"{case.label}: a fresh instance loaded from the state dict gives different eval outputs "
                "(is some state kept outside parameters and buffers?)")


@check("single_token")
def check_single_token(case: QuantizerCase) -> None:
    """N = 1 works in training (with backward) and eval."""
    q = case.build().train()
    z = case.tokens(1).requires_grad_(True)
    out = q(z)
    check_output(case, q, out, 1, "train, N=1")
    check_loss(case, out, "train, N=1")
    _backward(out)
    _expect(z.grad is not None and _finite(z.grad), f"{case.label}: bad gradient at z for N=1")
    bad = [n for n, p in _trainable(q) if p.grad is not None and not _finite(p.grad)]
    _expect(not bad, f"{case.label}: non-finite gradients for N=1 in {bad}")
    q.eval()
    with torch.no_grad():
        out = q(case.tokens(1))
    check_output(case, q, out, 1, "eval, N=1")
    check_loss(case, out, "eval, N=1")


@check("large_batch")
def check_large_batch(case: QuantizerCase) -> None:
    """``large_n`` tokens (20,000 by default) in training (with backward) and eval."""
    q = case.build(codebook_size=case.large_codebook_size).train()
    n = case.large_n
    z = case.tokens(n).requires_grad_(True)
    out = q(z)
    check_output(case, q, out, n, f"train, N={n}")
    check_loss(case, out, f"train, N={n}")
    _backward(out)
    _expect(z.grad is not None and _finite(z.grad), f"{case.label}: bad gradient at z for N={n}")
    q.eval()
    with torch.no_grad():
        out = q(case.tokens(n))
    check_output(case, q, out, n, f"eval, N={n}")
    check_loss(case, out, f"eval, N={n}")


@check("bf16_input")
def check_bf16_input(case: QuantizerCase) -> None:
    """bf16 tokens under bf16 autocast: z_q comes out float32, the loss finite, gradients flow."""
    device_type = torch.device(case.device).type
    q = case.build().train()
    z = case.tokens().bfloat16().requires_grad_(True)
    with torch.autocast(device_type, dtype=torch.bfloat16):
        out = q(z)
    check_output(case, q, out, case.batch, "train, bf16")
    check_loss(case, out, "train, bf16")
    _backward(out)
    _expect(z.grad is not None and _finite(z.grad), f"{case.label}: bad gradient at bf16 z")
    q.eval()
    with torch.no_grad(), torch.autocast(device_type, dtype=torch.bfloat16):
        out = q(case.tokens().bfloat16())
    check_output(case, q, out, case.batch, "eval, bf16")
    check_loss(case, out, "eval, bf16")


class _ReducedPrecisionOps(TorchDispatchMode):
    """Records every computing op (views and aliases aside) whose result is bf16 or fp16.

    It sits below autocast in the dispatcher, so it sees what actually ran: a
    matmul autocast lowered to bf16 shows up here even when the plugin's code
    called it on float32 tensors.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        results = out if isinstance(out, (tuple, list)) else (out,)
        if not func.is_view and any(isinstance(t, Tensor) and t.dtype in REDUCED_PRECISION for t in results):
            name = str(func.overloadpacket)
            if name not in self.ops:
                self.ops.append(name)
        return out


@check("float32_under_autocast")
def check_float32_under_autocast(case: QuantizerCase) -> None:
    """Under bf16 autocast with bf16 tokens, no op inside the forward computes in reduced precision.

    ``z.float()`` alone is not enough: autocast would still run a matmul in
    bf16. A quantizer that implements ``quantize`` and keeps the base class's
    ``forward`` (autocast off, float32) passes; one that overrides ``forward``
    without turning autocast off fails here, naming the ops that ran in bf16.
    """
    device_type = torch.device(case.device).type
    q = case.build()
    z = case.tokens().bfloat16()
    for mode in ("train", "eval"):
        q.train(mode == "train")
        tokens = z.clone().requires_grad_(mode == "train")
        with torch.autocast(device_type, dtype=torch.bfloat16), _ReducedPrecisionOps() as seen:
            q(tokens)
        _expect(not seen.ops, f"{case.label} ({mode}): computes in reduced precision under bf16 autocast: "
                              f"{', '.join(seen.ops)}. Implement quantize() and keep the base class's forward "
                              "(it turns autocast off and passes float32 tokens), or do the same in your forward")


@check("training_reduces_error")
def check_training_reduces_error(case: QuantizerCase) -> None:
    """A few Adam steps on ``mse(z_q, z) + loss`` for a fixed z lower the eval mse of z_q to z.

    With an identity encoder and decoder this is the VQ-VAE objective; every
    method should learn to represent a fixed batch better than its initialisation.
    """
    q = case.build()
    params = [p for _, p in _trainable(q)]
    if not params and not list(q.buffers()):
        pytest.skip("no parameters or statistics: nothing to train")
    z = case.tokens(256, seed=11)

    def eval_mse() -> float:
        q.eval()
        with torch.no_grad():
            return F.mse_loss(q(z).z_q, z).item()

    before = eval_mse()
    opt = torch.optim.Adam(params, lr=case.train_lr) if params else None
    q.train()
    for _ in range(case.train_steps):
        out = q(z)
        if opt is not None:
            opt.zero_grad()
            objective = F.mse_loss(out.z_q, z) + out.loss
            _expect(objective.requires_grad, f"{case.label}: no gradient path from mse + loss to the parameters")
            objective.backward()
            opt.step()
    after = eval_mse()
    _expect(after < before, f"{case.label}: {case.train_steps} training steps did not lower the eval "
                            f"mse(z_q, z): {before:.4g} -> {after:.4g}")


# ---------------------------------------------------------------------------
# the pytest base class


class QuantizerConformance:
    """Subclass as ``Test<Something>`` and set ``quantizer``: pytest runs every check on it.

    Class attributes mirror :class:`QuantizerCase`: ``quantizer`` (registered
    name or class), ``params``, ``dim``, ``codebook_size``, ``batch``,
    ``large_n``, ``large_codebook_size``, ``no_grad_params`` (parameters that by
    design get no gradient, as ``fnmatch`` patterns; say why in a comment),
    ``seed``, ``train_steps``, ``train_lr``, ``device``.
    """

    quantizer: str | type | None = None
    params: dict[str, Any] = {}  # read only: copied into each case
    dim: int = 8
    codebook_size: int = 16
    batch: int = 64
    large_n: int = 20_000
    large_codebook_size: int | None = None
    no_grad_params: tuple[str, ...] = ()
    seed: int = 0
    train_steps: int = 30
    train_lr: float = 1e-2
    device: str = "cpu"

    def conformance_case(self) -> QuantizerCase:
        if self.quantizer is None:
            raise TypeError(f"{type(self).__name__}: set the class attribute `quantizer` "
                            "(a registered name or the quantizer class)")
        return QuantizerCase(
            quantizer=self.quantizer, params=dict(self.params), dim=self.dim,
            codebook_size=self.codebook_size, batch=self.batch, large_n=self.large_n,
            large_codebook_size=self.large_codebook_size, no_grad_params=tuple(self.no_grad_params),
            seed=self.seed, train_steps=self.train_steps, train_lr=self.train_lr, device=self.device)

    def test_output_shapes(self) -> None:
        check_output_shapes(self.conformance_case())

    def test_codebook_matches_output(self) -> None:
        check_codebook_matches_output(self.conformance_case())

    def test_gradients(self) -> None:
        check_gradients(self.conformance_case())

    def test_finite_loss(self) -> None:
        check_finite_loss(self.conformance_case())

    def test_deterministic(self) -> None:
        check_deterministic(self.conformance_case())

    def test_eval_is_pure(self) -> None:
        check_eval_is_pure(self.conformance_case())

    def test_state_dict_round_trip(self) -> None:
        check_state_dict_round_trip(self.conformance_case())

    def test_single_token(self) -> None:
        check_single_token(self.conformance_case())

    def test_large_batch(self) -> None:
        check_large_batch(self.conformance_case())

    def test_bf16_input(self) -> None:
        check_bf16_input(self.conformance_case())

    def test_float32_under_autocast(self) -> None:
        check_float32_under_autocast(self.conformance_case())

    def test_training_reduces_error(self) -> None:
        check_training_reduces_error(self.conformance_case())

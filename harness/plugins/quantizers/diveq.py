"""DiVeQ and SF-DiVeQ: quantization as adding an error vector whose length carries the gradient."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import all_reduce_sum_, broadcast_, nearest_code

PAPER = "Vali et al. 2025, DiVeQ"


def directional_error(z: Tensor, target: Tensor, noise: Tensor) -> Tensor:
    """``||target - z|| * sg(normalize(target - z + noise))``: the DiVeQ error vector.

    Forward, with small noise, it is (almost) ``target - z``; backward, only its
    length ``||target - z||`` is differentiated, so the gradient reaches ``z``
    and the code through the distance between them, and the direction is held.
    """
    direction = target - z + noise
    unit = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (target - z).norm(dim=1, keepdim=True) * unit.detach()


class DiVeQ(Quantizer):
    """DiVeQ: the nearest code, reached by a differentiable error vector; no auxiliary loss.

    Paper: Vali, Baeckstroem and Solin, "DiVeQ: Differentiable Vector Quantization
    Using the Reparameterization Trick" (arXiv 2509.26469, 2025; ICLR 2026). Public
    code: AaltoML/DiVeQ, ``vqvae_compression/diveq.py`` (class ``DIVEQ``; the same
    class ships in the ``diveq`` package, MHVali/DiVeQ_PyPI).

    Training forward: ``i = argmin_k ||z - c_k||``; ``z_q = z + ||c_i - z|| *
    sg((c_i - z + n) / ||c_i - z + n||)`` with ``n ~ N(0, noise_std^2 I)``. The
    loss is zero: ``z`` and ``c_i`` learn only through the decoder's gradient on
    the error's length. Eval forward: the hard code ``c_i`` (the authors'
    ``inference``), with a straight-through path so ``z_q`` stays attached.

    Defaults, all the authors' class defaults: ``noise_std = 1e-3`` (their
    ``noise_var``, which they pass to ``Normal(0, .)`` as its *scale*: it is a
    standard deviation, hence our name); codebook uniform in ``[0, 1/K)``
    (``uniform_init=True``); codebook replacement every ``replacement_iters =
    100`` training forwards: a code chosen in fewer than ``discard_threshold =
    0.01`` of those forwards (the authors count forwards in which a code was
    chosen at least once, not tokens) is replaced by a used code, drawn with
    probability proportional to that count, plus ``perturb_eps = 1e-9`` times
    Gaussian noise. ``replacement_iters = 0`` turns replacement off.

    Deviations: the usage mask is summed over DDP ranks and the replacement is
    drawn on rank 0 and broadcast, so every rank keeps one codebook (the authors'
    code replaces per process); nothing is printed.
    """

    name = "diveq"
    paper = PAPER

    def __init__(self, dim: int, codebook_size: int, noise_std: float = 1e-3,
                 replacement_iters: int = 100, discard_threshold: float = 0.01,
                 perturb_eps: float = 1e-9, uniform_init: bool = True) -> None:
        super().__init__(dim, codebook_size)
        if noise_std <= 0:
            raise ValueError(f"diveq: noise_std must be positive, got {noise_std}")
        if replacement_iters < 0:
            raise ValueError(f"diveq: replacement_iters must be >= 0 (0 = off), got {replacement_iters}")
        if not 0.0 <= discard_threshold <= 1.0:
            raise ValueError(f"diveq: discard_threshold must be in [0, 1], got {discard_threshold}")
        self.noise_std, self.perturb_eps = float(noise_std), float(perturb_eps)
        self.replacement_iters, self.discard_threshold = int(replacement_iters), float(discard_threshold)
        self.uniform_init = bool(uniform_init)
        self.embedding = nn.Parameter(initial_codebook(codebook_size, dim, uniform_init))
        self.register_buffer("usage", torch.zeros(codebook_size, dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def codebook(self) -> Tensor:
        return self.embedding

    def noise(self, z: Tensor) -> Tensor:
        """The directional noise ``N(0, noise_std^2)``, one draw per element of ``z``."""
        return torch.randn_like(z) * self.noise_std

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        indices = nearest_code(z.detach(), self.embedding.detach())
        e = F.embedding(indices, self.embedding)
        if not self.training:
            return QuantizeOutput(z_q=z + (e - z).detach(), indices=indices, loss=z.new_zeros(()))
        z_q = z + directional_error(z, e, self.noise(z))
        logs: dict[str, Tensor] = {}
        if self.replacement_iters:
            logs["codes_replaced"] = self.track_and_replace(indices)
        return QuantizeOutput(z_q=z_q, indices=indices, loss=z.new_zeros(()), logs=logs)

    @torch.no_grad()
    def track_and_replace(self, indices: Tensor) -> Tensor:
        """Count this forward's chosen codes; every ``replacement_iters`` forwards, replace the rare ones."""
        chosen = torch.zeros_like(self.usage)
        chosen[indices] = 1
        self.usage += all_reduce_sum_(chosen).clamp(max=1)
        self.steps += 1
        if int(self.steps) % self.replacement_iters:
            return torch.zeros((), device=indices.device)
        ratio = self.usage.float() / self.replacement_iters
        rare, used = ratio < self.discard_threshold, ratio >= self.discard_threshold
        replaced = int(rare.sum())
        if replaced and bool(used.any()):
            probs = self.usage.float() * used
            pick = torch.multinomial(probs / probs.sum(), replaced, replacement=True)
            fresh = self.embedding[pick] + self.perturb_eps * torch.randn_like(self.embedding[pick])
            self.embedding[rare] = broadcast_(fresh)
        else:
            replaced = 0
        self.usage.zero_()
        return torch.tensor(float(replaced), device=indices.device)


def initial_codebook(k: int, dim: int, uniform: bool) -> Tensor:
    """The authors' init: ``U[0, 1/K)`` (or ``N(0, 1) / K``) per element."""
    return (torch.rand(k, dim) if uniform else torch.randn(k, dim)) / k


class SFDiVeQ(Quantizer):
    """SF-DiVeQ: DiVeQ onto the polyline through consecutive codes, at a random point per segment.

    Paper: as ``diveq`` (its space-filling variant). Public code: AaltoML/DiVeQ,
    ``vqvae_compression/sf_diveq.py`` (class ``SFDIVEQ``).

    Training forward: each segment ``s = 0..K-2`` gets a dither ``l_s ~ U(0, 1)``
    and the point ``p_s = (1 - l_s) c_s + l_s c_{s+1}``; ``i = argmin_s ||z - p_s||``
    and ``z_q = z + (1 - l_i) E(c_i) + l_i E(c_{i+1})`` with ``E`` the DiVeQ
    error vector (its own noise draw for each end), so ``z_q = p_i`` forward and
    both ends of the segment learn. Training indices are segment numbers.
    No loss; no codebook replacement (the curve keeps codes inside the data).

    Start-up (the authors' custom init): for the first ``skip_iters`` training
    forwards ``z`` passes unquantized (index 0, a placeholder); the tokens of the
    last ``avg_iters`` of them are kept, and at forward ``skip_iters - 1`` the
    codebook becomes the means of ``K`` consecutive, equal chunks of those tokens
    in arrival order (``floor(count / K)`` tokens each). ``skip_iters = 0`` starts
    quantizing at once from the random init.

    Defaults, the authors' class defaults: ``noise_std = 1e-3`` (their
    ``noise_var``, a scale: see ``diveq``), ``skip_iters = 1000``, ``avg_iters =
    50``, codebook ``U[0, 1/K)``. Suites with fewer steps must lower
    ``skip_iters`` (digits uses 200), or training never quantizes.

    Deviations: eval returns the nearest *code* ``c_i`` and its index. The
    authors' ``inference`` reports that index but decodes the projection of ``z``
    onto the polyline near ``c_i``, a continuous value the index does not carry;
    at ``log2 K`` bits per token the decoder can only receive ``c_i``. The kept
    tokens live in a Python list (not in the state dict): a checkpoint taken during
    the start-up window resumes with fewer tokens for the init.
    """

    name = "sf-diveq"
    paper = PAPER

    def __init__(self, dim: int, codebook_size: int, noise_std: float = 1e-3,
                 skip_iters: int = 1000, avg_iters: int = 50, uniform_init: bool = True) -> None:
        super().__init__(dim, codebook_size)
        if codebook_size < 2:
            raise ValueError(f"sf-diveq: the curve needs at least 2 codes, got {codebook_size}")
        if noise_std <= 0:
            raise ValueError(f"sf-diveq: noise_std must be positive, got {noise_std}")
        if skip_iters < 0 or avg_iters < 0 or avg_iters > skip_iters:
            raise ValueError(f"sf-diveq: need 0 <= avg_iters <= skip_iters, got avg_iters={avg_iters}, "
                             f"skip_iters={skip_iters}")
        self.noise_std, self.skip_iters, self.avg_iters = float(noise_std), int(skip_iters), int(avg_iters)
        self.uniform_init = bool(uniform_init)
        self.embedding = nn.Parameter(initial_codebook(codebook_size, dim, uniform_init))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.kept: list[Tensor] = []

    def codebook(self) -> Tensor:
        return self.embedding

    def noise(self, z: Tensor) -> Tensor:
        """The directional noise ``N(0, noise_std^2)``, one draw per element of ``z``."""
        return torch.randn_like(z) * self.noise_std

    def dither(self, device: torch.device) -> Tensor:
        """One ``U(0, 1)`` position per segment, ``(K - 1, 1)``."""
        return torch.rand(self.codebook_size - 1, 1, device=device)

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """The method on float32 tokens, autocast off (the base class's ``forward``)."""
        if not self.training:
            indices = nearest_code(z.detach(), self.embedding.detach())
            e = self.embedding[indices]
            return QuantizeOutput(z_q=z + (e - z).detach(), indices=indices, loss=z.new_zeros(()))
        with torch.no_grad():
            self.steps += 1
        if int(self.steps) < self.skip_iters:
            self.warm_up(z.detach())
            zeros = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
            return QuantizeOutput(z_q=z, indices=zeros, loss=z.new_zeros(()))
        lam = self.dither(z.device)
        first, second = self.embedding[:-1], self.embedding[1:]
        points = (1 - lam) * first.detach() + lam * second.detach()
        indices = nearest_code(z.detach(), points)
        l_i = lam[indices]
        e1, e2 = self.embedding[indices], self.embedding[indices + 1]
        z_q = (z + (1 - l_i) * directional_error(z, e1, self.noise(z))
               + l_i * directional_error(z, e2, self.noise(z)))
        return QuantizeOutput(z_q=z_q, indices=indices, loss=z.new_zeros(()))

    @torch.no_grad()
    def warm_up(self, z: Tensor) -> None:
        """Keep the last ``avg_iters`` start-up batches; at ``skip_iters - 1`` set the codebook from them."""
        step = int(self.steps)
        if step < self.skip_iters - self.avg_iters:
            return
        self.kept.append(z)
        if step != self.skip_iters - 1:
            return
        tokens = torch.cat(self.kept)
        hop = math.floor(tokens.shape[0] / self.codebook_size)
        if hop == 0:
            raise ValueError(f"sf-diveq: {tokens.shape[0]} start-up tokens cannot initialise "
                             f"{self.codebook_size} codes; raise avg_iters")
        chunks = tokens[: hop * self.codebook_size].reshape(self.codebook_size, hop, -1)
        self.embedding.copy_(broadcast_(chunks.mean(dim=1)))
        self.kept = []

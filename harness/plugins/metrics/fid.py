"""Reconstruction FID (rFID): val originals vs their reconstructions, torch-fidelity's Inception."""

from __future__ import annotations

import pickle
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from harness.contracts import EvalBatch, Metric, MetricContext
from harness.errors import MetricUnavailable
from harness.plugins.metrics.pixel import to_uint8
from harness.plugins.metrics.weights import INCEPTION_FILE, WeightsFile, file_digest

FEATURE = "2048"


def fidelity_version() -> str:
    import torch_fidelity

    return str(getattr(torch_fidelity, "__version__", "unknown"))


def build_inception(path: Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` from a local file (never its URL).

    Cached per file version and device: a suite evaluates many cells, and the
    frozen network is the same for all of them.
    """
    stat = Path(path).stat()
    return _cached_inception(str(path), stat.st_mtime_ns, stat.st_size, str(device))


@lru_cache(maxsize=2)
def _cached_inception(path: str, mtime_ns: int, size: int, device: str) -> torch.nn.Module:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", [FEATURE], feature_extractor_weights_path=path)
    except (RuntimeError, OSError, ValueError, KeyError, pickle.UnpicklingError) as exc:
        raise MetricUnavailable(f"rfid: {path} is not torch-fidelity's Inception state dict: {exc}") from exc
    return net.to(device)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """FID between two feature sets ``(n, d)``.

    With at least ``d`` images per side: torch-fidelity's own statistics and
    formula. With fewer (smoke runs, small eval splits), the covariances have
    rank below ``d`` and the same value comes exactly and much faster from
    ``tr sqrt(S_a S_b) = ||A B^T||_*`` for centred features ``A``, ``B``
    scaled by ``1 / sqrt(n - 1)`` (the nonzero eigenvalues of ``S_a S_b`` are
    the squared singular values of ``A B^T``); a test checks both agree.
    """
    if min(len(a), len(b)) >= a.shape[1]:
        from torch_fidelity.metric_fid import (
            KEY_METRIC_FID,
            fid_features_to_statistics,
            fid_statistics_to_metric,
        )

        stats_a, stats_b = fid_features_to_statistics(a.double()), fid_features_to_statistics(b.double())
        return float(fid_statistics_to_metric(stats_a, stats_b, verbose=False)[KEY_METRIC_FID])
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = (a - mu_a) / (len(a) - 1) ** 0.5, (b - mu_b) / (len(b) - 1) ** 0.5
    trace_sqrt = torch.linalg.svdvals(ca @ cb.T).sum()
    value = (mu_a - mu_b).pow(2).sum() + ca.pow(2).sum() + cb.pow(2).sum() - 2 * trace_sqrt
    return float(value)


class RFID(Metric):
    """rFID: FID between the val originals and their reconstructions (torch-fidelity, 2048-d Inception).

    The stack that produces the number (docs/protocols.md asks to record it):
    torch-fidelity's ``FeatureExtractorInceptionV3`` (TF-1.x-compatible
    bilinear resize to 299, ``(x - 128) / 128``), pool3 2048-d features, its
    ``fid_statistics_to_metric`` (with fewer than 2,048 images per side the
    same quantity in exact low-rank form, see :func:`frechet_distance`);
    inputs ``uint8 3xHxW`` after clamp and ROUND,
    at the suite's resolution, every image of the eval split. SimVQ and
    Open-MAGVIT2 report the pytorch-fid port instead (float input, plain
    bilinear resize): close but not identical numbers. Weights: the metric
    parameter ``weights`` (a suite's ``eval.metrics = [{ name = "rfid",
    weights = "/path/to/file.pth" }]``, torch-fidelity's
    ``feature_extractor_weights_path``) when given, else
    ``weights-inception-2015-12-05-6726825d.pth`` in ``$TORCH_HOME/hub/checkpoints/``;
    absent -> unavailable, never downloaded. Fewer than 2 images -> unavailable.
    Features are kept on the CPU (50,000 x 2048 float32 = 400 MB per side).
    """

    name = "rfid"
    paper = "Heusel et al. 2017 (FID); torch-fidelity"
    higher_is_better = False
    requires = (INCEPTION_FILE.filename,)
    weights: tuple[WeightsFile, ...] = (INCEPTION_FILE,)

    def __init__(self, context: MetricContext, weights: str | None = None) -> None:
        super().__init__(context)
        if context.modality != "images":
            raise MetricUnavailable(f"rfid is an image metric; this dataset's modality is {context.modality!r}")
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise MetricUnavailable(f"rfid: weights file {path} (the suite's eval.metrics "
                                        "rfid.weights) does not exist")
        else:
            path = INCEPTION_FILE.require(self.name, context.weights_dir)
        self.weights_path = path
        self.net = build_inception(path, context.device)
        self.real: list[Tensor] = []
        self.fake: list[Tensor] = []

    @classmethod
    def weights_status(cls, weights_dir=None) -> list[dict[str, object]]:
        return [w.status(weights_dir) for w in cls.weights]

    @property
    def stack(self) -> str:
        return (f"torch-fidelity {fidelity_version()} inception-v3-compat pool3 2048-d, weights "
                f"{file_digest(self.weights_path)}, TF-1.x bilinear resize to 299, uint8 rounded inputs")

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        (out,) = self.net(to_uint8(x).to(self.context.device))
        return out.float().cpu()

    def update(self, batch: EvalBatch) -> None:
        self.real.append(self.features(batch.x))
        self.fake.append(self.features(batch.x_hat))

    def compute(self) -> dict[str, float]:
        n = sum(len(r) for r in self.real)
        if n < 2:
            raise MetricUnavailable(f"rfid needs at least 2 images, the eval split had {n}")
        return {self.name: frechet_distance(torch.cat(self.real), torch.cat(self.fake))}

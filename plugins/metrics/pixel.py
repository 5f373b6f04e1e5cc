"""Pixel metrics on 8-bit images: PSNR and SSIM, per image then averaged (PROTOCOLS.md)."""

from __future__ import annotations

import torch
from torch import Tensor

from harness.contracts import EvalBatch, Metric, MetricContext
from harness.errors import MetricUnavailable

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def to_uint8(x: Tensor) -> Tensor:
    """``[-1, 1]`` images -> ``uint8`` values: clamp, then ROUND (SimVQ/Open-MAGVIT2 truncate)."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _require_images(metric: Metric) -> None:
    if metric.context.modality != "images":
        raise MetricUnavailable(f"{metric.name} is an image metric; this dataset's modality is "
                                f"{metric.context.modality!r}")


class _PerImageMean(Metric):
    """Sums a per-image value over the split; ``compute`` is the mean over images."""

    def __init__(self, context: MetricContext) -> None:
        super().__init__(context)
        _require_images(self)
        self.total = 0.0
        self.count = 0

    def per_image(self, x: Tensor, x_hat: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, batch: EvalBatch) -> None:
        values = self.per_image(to_uint8(batch.x).double(), to_uint8(batch.x_hat).double())
        self.total += float(values.sum())
        self.count += values.numel()

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise MetricUnavailable(f"{self.name}: the eval split had no images")
        return {self.name: self.total / self.count}


class PSNR(_PerImageMean):
    """PSNR in dB per image on uint8 (clamp, round; data range 255), mean over images.

    Per image, so independent of the eval batch size (SimVQ/Open-MAGVIT2
    pool a whole batch; torchmetrics ``dim=None`` pools the split). An image
    reconstructed exactly has infinite PSNR, and so then does the mean: the
    value is reported as it is rather than capped at an arbitrary ceiling.
    """

    name = "psnr"
    paper = "PROTOCOLS.md"
    higher_is_better = True

    def per_image(self, x: Tensor, x_hat: Tensor) -> Tensor:
        mse = ((x - x_hat) ** 2).flatten(1).mean(1)
        return 10 * torch.log10(255.0**2 / mse)


class SSIM(_PerImageMean):
    """SSIM per image (Gaussian window 11, sigma 1.5, data range 255 on uint8), mean over images.

    Wang et al. 2004 as torchmetrics computes it (its defaults), with
    ``data_range`` passed explicitly: torchmetrics would otherwise infer it per
    batch. SimVQ/Open-MAGVIT2 use skimage's 7x7 uniform window instead.
    Images smaller than the 11x11 window (the 8x8 digits) make the metric
    unavailable rather than silently changing the window.
    """

    name = "ssim"
    paper = "Wang et al. 2004"
    higher_is_better = True

    def per_image(self, x: Tensor, x_hat: Tensor) -> Tensor:
        from torchmetrics.functional import structural_similarity_index_measure

        if min(x.shape[-2:]) < SSIM_WINDOW:
            raise MetricUnavailable(f"ssim: images of {tuple(x.shape[-2:])} pixels are smaller than the "
                                    f"{SSIM_WINDOW}x{SSIM_WINDOW} Gaussian window")
        return structural_similarity_index_measure(
            x_hat, x, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_WINDOW,
            reduction="none", data_range=255.0,
        )

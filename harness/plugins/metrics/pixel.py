"""Pixel metrics on 8-bit images: PSNR and SSIM, per image then averaged (docs/protocols.md)."""

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
    paper = "harness protocol (docs/protocols.md)"
    higher_is_better = True

    stack = "harness psnr: per image, uint8 (clamp, round), data_range 255, mean over images"

    def per_image(self, x: Tensor, x_hat: Tensor) -> Tensor:
        mse = ((x - x_hat) ** 2).flatten(1).mean(1)
        return 10 * torch.log10(255.0**2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """The normalised separable Gaussian, as 1-D float64 taps."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(x**2) / (2 * sigma**2))
    return taps / taps.sum()


def _filter_valid(x: Tensor, taps: Tensor) -> Tensor:
    """Separable Gaussian filter over ``(B, C, H, W)``, only where the window fits (no padding)."""
    c = x.shape[1]
    k = taps.numel()
    rows = taps.view(1, 1, k, 1).expand(c, 1, k, 1).to(x)
    cols = taps.view(1, 1, 1, k).expand(c, 1, 1, k).to(x)
    return torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, rows, groups=c), cols, groups=c)


def ssim_valid(x: Tensor, y: Tensor, data_range: float = 255.0) -> Tensor:
    """Per-image SSIM over valid windows only (Wang et al. 2004), mean over channels and windows.

    The statistics are population (biased) moments under an 11-tap Gaussian of
    sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``: scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255, channel_axis=0)`` to float64
    precision. No padded border window enters the mean, so the value does not
    depend on a library's padding mode.
    """
    taps = gaussian_window()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    x, y = x.double(), y.double()
    mu_x, mu_y = _filter_valid(x, taps), _filter_valid(y, taps)
    var_x = _filter_valid(x * x, taps) - mu_x**2
    var_y = _filter_valid(y * y, taps) - mu_y**2
    cov = _filter_valid(x * y, taps) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


class SSIM(_PerImageMean):
    """SSIM per image on uint8 (Gaussian window 11, sigma 1.5, data range 255), mean over images.

    Computed here over VALID windows only, as Wang et al. and scikit-image do
    (:func:`ssim_valid`), not with torchmetrics: from torchmetrics 1.4.2 on its
    mean also takes the reflect-padded border windows, so the same images
    scored 0.976 with torchmetrics 1.9.0 and 0.984 with 1.4.1. A test pins the
    value to scikit-image at 32, 64 and 256 pixels. SimVQ/Open-MAGVIT2 use
    scikit-image's 7x7 uniform window instead. Images smaller than the 11x11
    window (the 8x8 digits) make the metric unavailable rather than silently
    changing the window.
    """

    name = "ssim"
    paper = "Wang et al. 2004"
    higher_is_better = True
    stack = ("harness ssim_valid: valid windows, gaussian 11/1.5, K1=0.01 K2=0.03, population "
             "moments, uint8 (clamp, round), data_range 255")

    def per_image(self, x: Tensor, x_hat: Tensor) -> Tensor:
        if min(x.shape[-2:]) < SSIM_WINDOW:
            raise MetricUnavailable(f"ssim: images of {tuple(x.shape[-2:])} pixels are smaller than the "
                                    f"{SSIM_WINDOW}x{SSIM_WINDOW} Gaussian window")
        return ssim_valid(x_hat, x)

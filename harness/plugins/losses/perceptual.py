"""LPIPS as a training loss (taming's perceptual term), through the ``lpips`` metric's loader.

The backbone (``net``: ``vgg``, taming's choice and the default, or ``alex``,
the metric's convention) is torchvision's ImageNet file read from the torch hub
cache only (``$TORCH_HOME/hub/checkpoints/``); the harness never downloads it.
One loader and one weights table serve the loss and the metric
(:func:`harness.plugins.metrics.perceptual.build_lpips`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from harness.contracts import Loss, QuantizeOutput
from harness.errors import HarnessError, UnknownNameError
from harness.plugins.metrics.weights import LPIPS_BACKBONES


class LPIPSLoss(Loss):
    """LPIPS distance (Zhang et al. 2018) between ``x_hat`` and ``x``, images in ``[-1, 1]``: term ``lpips``.

    ``net`` is ``vgg`` (taming's perceptual loss) or ``alex``. The network is
    frozen and stays in eval mode (it has dropout layers); gradients reach
    ``x_hat`` only. Images smaller than about 32x32 are refused with a clear error.
    """

    name = "lpips"
    term = "lpips"
    paper = "Zhang et al. 2018; taming-transformers (VGG perceptual loss)"

    def __init__(self, weight: float = 1.0, net: str = "vgg") -> None:
        super().__init__(weight)
        if net not in LPIPS_BACKBONES:
            raise UnknownNameError("LPIPS backbone (train.loss lpips net)", net, LPIPS_BACKBONES)
        self.net = net
        self.perceptual: nn.Module | None = None

    @classmethod
    def weights_status(cls) -> list[dict[str, object]]:
        """Every backbone file this loss may read from the hub cache (``harness doctor`` lists them)."""
        return [{**weights.status(), "purpose": f"LPIPS loss backbone ({net})", "used_by": f"net = {net!r}"}
                for net, weights in sorted(LPIPS_BACKBONES.items())]

    def setup(self, state: Any) -> None:
        from harness.plugins.metrics.perceptual import build_lpips

        self.perceptual = build_lpips(metric=f"train.loss lpips (net = {self.net!r})", device=state.device,
                                      net=self.net)

    def terms(self, state: Any, x: Tensor, x_hat: Tensor, out: QuantizeOutput) -> dict[str, Tensor]:
        if self.perceptual is None:
            self.setup(state)
        if x.dim() != 4 or x.shape[1] != 3:
            raise HarnessError(f"train.loss lpips needs (B, 3, H, W) images, got {tuple(x.shape)}")
        try:
            return {"lpips": self.perceptual(x_hat.float(), x.float()).mean()}
        except RuntimeError as exc:  # AlexNet/VGG pool images smaller than about 32x32 away
            raise HarnessError(f"train.loss lpips: LPIPS cannot compare {x.shape[-2]}x{x.shape[-1]} "
                               f"images ({exc})") from exc

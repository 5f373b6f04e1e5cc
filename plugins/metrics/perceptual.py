"""LPIPS (package ``lpips`` 0.1, AlexNet), with the backbone read from the local torch cache."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from harness.contracts import EvalBatch, Metric, MetricContext
from harness.errors import MetricUnavailable
from harness.plugins.metrics.weights import ALEXNET_FILE, WeightsFile


def build_lpips(weights_dir=None, metric: str = "lpips", device: torch.device | str = "cpu") -> torch.nn.Module:
    """``lpips.LPIPS(net="alex")`` without any download.

    The package's linear heads (v0.1) ship inside it; the AlexNet backbone is
    torchvision's ``alexnet-owt-7be5be79.pth``. We build LPIPS with a random
    backbone (``pnet_rand=True``: no download attempt), then load the local
    torchvision file into a torchvision AlexNet (strict: a wrong file fails
    loudly) and copy its conv layers into LPIPS's five slices.
    """
    import lpips
    import torchvision

    path = ALEXNET_FILE.require(metric, weights_dir)
    alexnet = torchvision.models.alexnet(weights=None)
    try:
        alexnet.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, ValueError) as exc:
        raise MetricUnavailable(f"{metric}: {path} is not a torchvision AlexNet state dict: {exc}") from exc
    with warnings.catch_warnings():  # lpips calls torchvision's deprecated ``pretrained=False``
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    for i in range(1, model.net.N_slices + 1):
        for index, layer in getattr(model.net, f"slice{i}").named_children():
            layer.load_state_dict(alexnet.features[int(index)].state_dict())  # slice names = feature indices
    return model.eval().requires_grad_(False).to(device)


class LPIPS(Metric):
    """LPIPS distance (AlexNet, v0.1) per image, mean over images; inputs in [-1, 1].

    Zhang et al. 2018 through the ``lpips`` package, as PROTOCOLS.md fixes:
    AlexNet backbone, inputs in ``[-1, 1]`` (reconstructions clamped; no
    uint8 rounding, LPIPS is a float metric), one spatially averaged distance
    per image. Needs ``alexnet-owt-7be5be79.pth`` in ``$TORCH_HOME/hub/checkpoints/``;
    without it the metric is unavailable, never downloaded. Images under
    31x31 pixels are too small for AlexNet's pooling and make it unavailable.
    """

    name = "lpips"
    paper = "Zhang et al. 2018"
    higher_is_better = False
    requires = (ALEXNET_FILE.filename,)
    weights: tuple[WeightsFile, ...] = (ALEXNET_FILE,)

    def __init__(self, context: MetricContext) -> None:
        super().__init__(context)
        if context.modality != "images":
            raise MetricUnavailable(f"lpips is an image metric; this dataset's modality is {context.modality!r}")
        self.net = build_lpips(context.weights_dir, self.name, context.device)
        self.total = 0.0
        self.count = 0

    @classmethod
    def weights_status(cls, weights_dir=None) -> list[dict[str, object]]:
        return [w.status(weights_dir) for w in cls.weights]

    def update(self, batch: EvalBatch) -> None:
        x = batch.x.float().to(self.context.device)
        x_hat = batch.x_hat.float().clamp(-1, 1).to(self.context.device)
        if min(x.shape[-2:]) < 31:
            raise MetricUnavailable(f"lpips: images of {tuple(x.shape[-2:])} pixels are too small for "
                                    "AlexNet (at least 31x31)")
        with torch.no_grad():
            values: Tensor = self.net(x, x_hat)
        self.total += float(values.double().sum())
        self.count += values.numel()

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise MetricUnavailable("lpips: the eval split had no images")
        return {self.name: self.total / self.count}

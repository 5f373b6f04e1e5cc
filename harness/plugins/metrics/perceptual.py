"""LPIPS (package ``lpips`` 0.1, AlexNet), with the backbone read from the local torch cache."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from harness.contracts import EvalBatch, Metric, MetricContext
from harness.errors import MetricUnavailable, UnknownNameError
from harness.plugins.metrics.weights import ALEXNET_FILE, LPIPS_BACKBONES, WeightsFile, file_digest


def build_lpips(weights_dir=None, metric: str = "lpips", device: torch.device | str = "cpu",
                net: str = "alex") -> torch.nn.Module:
    """``lpips.LPIPS(net=net)`` (``alex`` or ``vgg``) without any download, frozen, in eval mode.

    The one loader of the ``lpips`` metric and the ``lpips`` training loss. The
    package's linear heads (v0.1) ship inside it; the backbone is torchvision's
    ImageNet file (:data:`LPIPS_BACKBONES`). LPIPS is built with a random
    backbone (``pnet_rand=True``: no download attempt), then each of its slices
    gets the file's ``features.<index>.<param>`` (slice layers are named by their
    index in torchvision's ``features``); a file lacking one, or with another
    shape, fails loudly.
    """
    import lpips

    if net not in LPIPS_BACKBONES:
        raise UnknownNameError("LPIPS backbone", net, LPIPS_BACKBONES)
    path = LPIPS_BACKBONES[net].require(metric, weights_dir)
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise MetricUnavailable(f"{metric}: {path} cannot be read as a state dict: {exc}") from exc
    with warnings.catch_warnings():  # lpips calls torchvision's deprecated ``pretrained=False``
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    mapped = {}
    for key, target in model.net.state_dict().items():
        _, index, param = key.split(".")
        name = f"features.{index}.{param}"
        if name not in source or source[name].shape != target.shape:
            raise MetricUnavailable(f"{metric}: {path} is not torchvision's {net} state dict "
                                    f"({name} missing or of another shape)")
        mapped[key] = source[name]
    model.net.load_state_dict(mapped)
    return model.eval().requires_grad_(False).to(device)


class LPIPS(Metric):
    """LPIPS distance (AlexNet, v0.1) per image, mean over images; inputs in [-1, 1].

    Zhang et al. 2018 through the ``lpips`` package, as docs/protocols.md fixes:
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
        self.weights_path = ALEXNET_FILE.path(context.weights_dir)
        self.total = 0.0
        self.count = 0

    @classmethod
    def weights_status(cls, weights_dir=None) -> list[dict[str, object]]:
        return [w.status(weights_dir) for w in cls.weights]

    @property
    def stack(self) -> str:
        from importlib.metadata import version

        return (f"lpips {version('lpips')} net=alex v0.1 linear heads, backbone {ALEXNET_FILE.filename} "
                f"{file_digest(self.weights_path)}, float inputs in [-1, 1], no resize")

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

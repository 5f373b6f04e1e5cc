"""Reconstruction losses for training: pixel MSE or L1, optionally plus LPIPS.

``train.loss`` picks the recipe: ``"mse"`` (paper 002's CelebA-HQ protocol),
``"mse+lpips"`` (its ImageNet appendix) or ``"l1+lpips"`` (taming's VQGAN
loss). The pixel term is returned as ``rec`` and LPIPS as ``lpips``, so the
loop weights them separately (``state.loss_weights``; ``lpips`` starts at
``train.lpips_weight``) and schedules can change either.

LPIPS as a training loss uses the ``lpips`` package with a VGG16 backbone by
default (``train.lpips_net``): taming's perceptual loss is VGG-LPIPS, whereas
the ``lpips`` *metric* follows the convention of AlexNet. The backbone weights
are torchvision's ImageNet files and are read only from the torch hub cache
(``$TORCH_HOME/hub/checkpoints/``); the harness never downloads them. The
package's own linear-layer weights ship inside the package.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from harness.errors import HarnessError, UnknownNameError

LOSSES = ("mse", "mse+lpips", "l1+lpips")

#: torchvision's ImageNet weight files for the LPIPS backbones, and where they come from
BACKBONE_FILES: dict[str, tuple[str, str]] = {
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
}


def hub_checkpoints() -> Path:
    """The torch hub cache folder (``$TORCH_HOME/hub/checkpoints``; torch's default otherwise)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def backbone_path(net: str) -> Path:
    """Where the LPIPS backbone weights for ``net`` must be; a clear error when they are not."""
    if net not in BACKBONE_FILES:
        raise UnknownNameError("LPIPS backbone", net, BACKBONE_FILES)
    filename, url = BACKBONE_FILES[net]
    path = hub_checkpoints() / filename
    if not path.is_file():
        raise HarnessError(
            f"the LPIPS loss needs torchvision's {net} weights {filename} at {path} "
            f"(the torch hub cache, $TORCH_HOME/hub/checkpoints); the harness never downloads: "
            f"fetch {url} on a machine with internet and copy it there"
        )
    return path


def load_lpips(net: str = "vgg") -> nn.Module:
    """An ``lpips.LPIPS`` network in eval mode with frozen weights, read from local files only.

    The package is built with a random backbone (``pnet_rand``, which downloads
    nothing); the backbone is then loaded from the hub cache. Its layers are
    torchvision's ``features`` split into slices, so ``slice<k>.<i>.<p>`` is
    ``features.<i>.<p>`` of the torchvision file.
    """
    import lpips

    path = backbone_path(net)
    with warnings.catch_warnings():  # the package calls torchvision's deprecated ``pretrained=``
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.net.state_dict()
    mapped = {}
    for key in target:
        _, index, param = key.split(".")
        name = f"features.{index}.{param}"
        if name not in source:
            raise HarnessError(f"{path} is not torchvision's {net} file: it lacks {name}")
        mapped[key] = source[name]
    model.net.load_state_dict(mapped)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class ReconstructionLoss(nn.Module):
    """``{"rec": pixel loss, "lpips": LPIPS}`` for images in ``[-1, 1]`` (LPIPS only when asked)."""

    def __init__(self, kind: str = "mse", lpips_net: str = "vgg") -> None:
        super().__init__()
        if kind not in LOSSES:
            raise UnknownNameError("train.loss", kind, LOSSES)
        self.kind = kind
        self.pixel = kind.split("+")[0]
        self.perceptual = load_lpips(lpips_net) if kind.endswith("+lpips") else None

    def train(self, mode: bool = True) -> ReconstructionLoss:
        super().train(mode)
        if self.perceptual is not None:
            self.perceptual.eval()  # LPIPS has dropout layers; never sample them
        return self

    def forward(self, x_hat: Tensor, x: Tensor) -> dict[str, Tensor]:
        diff = x_hat - x
        terms = {"rec": diff.abs().mean() if self.pixel == "l1" else (diff**2).mean()}
        if self.perceptual is not None:
            if x.dim() != 4 or x.shape[1] != 3:
                raise HarnessError(f"train.loss {self.kind!r} needs (B, 3, H, W) images, got {tuple(x.shape)}")
            try:
                terms["lpips"] = self.perceptual(x_hat.float(), x.float()).mean()
            except RuntimeError as exc:  # AlexNet/VGG pool images smaller than about 32x32 away
                raise HarnessError(f"train.loss {self.kind!r}: LPIPS cannot compare "
                                   f"{x.shape[-2]}x{x.shape[-1]} images ({exc})") from exc
        return terms


def build_loss(config: dict, device: torch.device) -> ReconstructionLoss:
    """The cell's reconstruction loss from ``[train]`` (``loss``, ``lpips_net``)."""
    cfg = config["train"]
    return ReconstructionLoss(cfg.get("loss", "mse"), cfg.get("lpips_net", "vgg")).to(device)

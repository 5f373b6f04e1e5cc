"""Where pretrained metric weights live on an offline machine; nothing here downloads.

Files are looked up in ``context.weights_dir`` when the runner sets one, else
in torch's hub cache ``$TORCH_HOME/hub/checkpoints/`` (default
``~/.cache/torch/hub/checkpoints/``), the folder torchvision and
torch-fidelity would download into (docs/protocols.md, "Weights on an offline machine").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from harness.errors import MetricUnavailable

ALEXNET = "alexnet-owt-7be5be79.pth"
VGG16 = "vgg16-397923af.pth"
INCEPTION = "weights-inception-2015-12-05-6726825d.pth"


@dataclass(frozen=True)
class WeightsFile:
    """One pretrained file a metric needs, where it is looked for and how to get it."""

    filename: str
    purpose: str
    url: str

    def path(self, weights_dir: Path | None = None) -> Path:
        return Path(weights_dir) / self.filename if weights_dir is not None else checkpoints_dir() / self.filename

    def status(self, weights_dir: Path | None = None) -> dict[str, object]:
        path = self.path(weights_dir)
        return {"file": self.filename, "purpose": self.purpose, "path": str(path), "present": path.is_file()}

    def require(self, metric: str, weights_dir: Path | None = None) -> Path:
        """The file's path; :class:`MetricUnavailable` saying where to put it when it is absent."""
        path = self.path(weights_dir)
        if not path.is_file():
            raise MetricUnavailable(
                f"{metric}: weights file {path} not found ({self.purpose}). The harness never downloads: "
                f"on a machine with internet get {self.url} and copy it to {path} "
                "(the folder is $TORCH_HOME/hub/checkpoints/, default ~/.cache/torch/hub/checkpoints/)"
            )
        return path


def checkpoints_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` as torch resolves it (read at call time)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


ALEXNET_FILE = WeightsFile(ALEXNET, "torchvision AlexNet backbone of LPIPS",
                           "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth")
VGG16_FILE = WeightsFile(VGG16, "torchvision VGG16 backbone of LPIPS (taming's perceptual loss)",
                         "https://download.pytorch.org/models/vgg16-397923af.pth")
#: the LPIPS backbones by the ``lpips`` package's ``net`` name (one table for the metric and the loss)
LPIPS_BACKBONES = {"alex": ALEXNET_FILE, "vgg": VGG16_FILE}
INCEPTION_FILE = WeightsFile(
    INCEPTION, "torch-fidelity InceptionV3 (FID)",
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION,
)


def file_digest(path: Path) -> str:
    """``sha256:<first 16 hex>`` of a weights file, cached per file version (recorded with a metric)."""
    stat = Path(path).stat()
    return _digest(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=16)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()[:16]}"

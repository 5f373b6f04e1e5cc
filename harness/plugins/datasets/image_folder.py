"""Shared pieces of the image-folder datasets: listing, decoding with PIL, resizing, error policy.

Decoding is done here once so that every image suite turns a file into a
tensor the same way: RGB, PIL bilinear (antialiased when shrinking) shorter
side to the target size, center crop, ``uint8 -> [-1, 1]`` as ``x / 127.5 - 1``.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ON_ERROR = ("raise", "skip")
#: the selection split of the image-folder datasets (``harness tune``): every 50th file of the
#: train split in its fixed order (2%), ``select``; the other 98% are ``fit``, where trials train
SELECT_EVERY = 50
SELECTION_SPLITS = {"select": "fit"}


class UnreadableImage(RuntimeError):
    """An image file PIL cannot decode; the message names the file."""


def selection_indices(n: int, split: str) -> list[int]:
    """Positions of ``split`` (``select`` or ``fit``) among ``n`` training items (:data:`SELECT_EVERY`)."""
    if split == "select":
        return list(range(SELECT_EVERY - 1, n, SELECT_EVERY))
    return [i for i in range(n) if (i + 1) % SELECT_EVERY]


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, by name (see :func:`name_key`)."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if is_image(p)), key=name_key)


def name_key(path: Path) -> tuple[int, int, str]:
    """Sort key: numeric stems by number (``2.jpg`` before ``10.jpg``), others by name.

    Zero-padded names (``00002.jpg``) sort the same either way; for unpadded
    ones (CelebAMask-HQ's ``0.jpg ... 29999.jpg``) numeric order keeps the
    image order of the padded distribution, so both layouts give one split.
    """
    stem = path.stem
    if stem.isdigit():
        return (0, int(stem), path.name)
    return (1, 0, path.name)


def index_of(name: str) -> int | None:
    """The image number in a name such as ``imgHQ00042.npy`` or ``00042.jpg`` (``None`` if none)."""
    digits = re.findall(r"\d+", Path(name).stem)
    return int(digits[-1]) if digits else None


def resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size`` with PIL bilinear (antialiased), then a centred ``size x size`` crop.

    The crop offset rounds like torchvision's ``CenterCrop``.
    """
    w, h = img.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        new = (max(size, round(w * scale)), max(size, round(h * scale)))
        if new != (w, h):
            img = img.resize(new, Image.Resampling.BILINEAR)
    w, h = img.size
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    if (w, h) != (size, size):
        img = img.crop((left, top, left + size, top + size))
    return img


def to_tensor(img: Image.Image) -> Tensor:
    """``uint8`` RGB image -> ``float32 (3, H, W)`` in ``[-1, 1]``."""
    array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def load_image(path: Path, size: int) -> Tensor:
    """Decode ``path`` (any mode: grayscale and CMYK JPEGs exist in ImageNet) to a tensor."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise UnreadableImage(f"cannot decode image {path}: {exc}") from exc
    return to_tensor(resize_center_crop(img, size))


class ImageFiles(Dataset):
    """Images from a list of files, optionally labelled; items ``x`` or ``(x, label)``.

    ``on_error="raise"`` (the default) stops at the first unreadable file and
    names it. ``on_error="skip"`` replaces an unreadable file by the next
    readable one in the list (so batches keep their size), warns once per
    file and counts it in :attr:`skipped`; :meth:`report` says how many.
    With ``num_workers > 0`` each loader worker keeps its own count (the
    warnings still name every file).
    """

    def __init__(self, files: Sequence[Path], size: int, labels: Sequence[int] | None = None,
                 on_error: str = "raise", loader: Callable[[Path, int], Tensor] = load_image) -> None:
        check_on_error(on_error)
        if labels is not None and len(labels) != len(files):
            raise ValueError("labels and files differ in length")
        self.files, self.size, self.labels = list(files), int(size), labels
        self.on_error, self.loader = on_error, loader
        self.skipped: set[Path] = set()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tensor | tuple[Tensor, int]:
        n = len(self.files)
        for offset in range(n):
            i = (index + offset) % n
            try:
                x = self.loader(self.files[i], self.size)
            except UnreadableImage as exc:
                if self.on_error == "raise":
                    raise UnreadableImage(f"{exc} (set dataset.params.on_error = \"skip\" to skip "
                                          "unreadable files and count them)") from exc.__cause__
                if self.files[i] not in self.skipped:
                    self.skipped.add(self.files[i])
                    warnings.warn(f"skipping unreadable image {self.files[i]}", stacklevel=2)
                continue
            return x if self.labels is None else (x, int(self.labels[i]))
        raise UnreadableImage(f"no readable image among the {n} files (first: {self.files[0]})")

    def report(self) -> str:
        """How many files were skipped so far (``on_error="skip"``)."""
        return f"{len(self.skipped)} unreadable of {len(self.files)} files skipped"


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")


def check_resolution(resolution: int) -> None:
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")

"""ImageNet-1k (ILSVRC-2012) from a local folder in the usual ``split/<wnid>/*.JPEG`` layout."""

from __future__ import annotations

import logging
from pathlib import Path

from torch.utils.data import Dataset

from harness.contracts import DatasetPlugin
from harness.errors import DatasetMissing
from harness.plugins.datasets.image_folder import (
    IMAGE_SUFFIXES,
    SELECTION_SPLITS,
    ImageFiles,
    check_on_error,
    check_resolution,
    selection_indices,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
HOW_TO_GET = (
    "Expected the ILSVRC-2012 images under the dataset root (--data-root, else $HARNESS_DATA/imagenet):\n"
    "  <root>/train/<wnid>/*.JPEG   1,000 class folders such as n01440764/, 1,281,167 images\n"
    "  <root>/val/<wnid>/*.JPEG     the 50,000 validation images sorted into the same 1,000 folders\n"
    "The harness cannot download ImageNet: get ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
    "from image-net.org (an account is needed), untar the per-class train tars into train/<wnid>/, and "
    "move the flat val images into val/<wnid>/ using the ground-truth labels (for example the "
    "widely used valprep.sh script)."
)


class ImageNet(DatasetPlugin):
    """ImageNet-1k train/val from ``<root>/{train,val}/<wnid>/*.JPEG``, center-cropped to 128.

    NSVQ 2026 (and SimVQ, whose protocol it follows) trains on ImageNet-1k
    train and reports on the full 50,000-image val at 128x128. Order: sorted
    ``wnid/filename``, no shuffle, so the eval split is the same on every
    machine. Labels: the index of the wnid among the sorted train folders
    (the torchvision ``ImageFolder`` convention). Preprocessing as SimVQ /
    Open-MAGVIT2 ``ImagePaths`` (docs/protocols.md): PIL bilinear (antialiased)
    shorter side to ``resolution`` (default 128), center crop, scale to
    ``[-1, 1]``; no random crop or flip, which the papers do not state for
    training either. ``on_error = "skip"`` skips unreadable files and counts them.
    Selection split (``harness tune``): every 50th train image in that order
    (25,623, all classes) is ``select``, the rest ``fit`` (image_folder.SELECT_EVERY).
    """

    name = "imagenet"
    paper = "NSVQ 2026"
    modality = "images"
    needs_root = True
    selection_splits = SELECTION_SPLITS

    def __init__(self, root: Path | None = None, resolution: int = 128, on_error: str = "raise") -> None:
        super().__init__(root=Path(root) if root is not None else None)
        check_resolution(resolution)
        check_on_error(on_error)
        self.resolution, self.on_error = resolution, on_error
        self.datasets: dict[str, ImageFiles] = {}

    def _classes(self, folder: Path) -> list[str]:
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def check(self) -> str | None:
        if self.root is None:
            return "no dataset root for 'imagenet': pass --data-root or set $HARNESS_DATA.\n" + HOW_TO_GET
        for split in SPLITS:
            folder = self.root / split
            if not self._classes(folder):
                return f"{folder} has no <wnid> class folders.\n" + HOW_TO_GET
        return None

    def classes(self) -> list[str]:
        """Sorted train wnids (label = index); val-only roots use the val folders."""
        classes = self._classes(self.root / "train") if self.root is not None else []
        return classes or (self._classes(self.root / "val") if self.root is not None else [])

    def files(self, split: str) -> tuple[list[Path], list[int]]:
        if split in ("fit", "select"):  # carved from train (harness tune)
            files, labels = self.files("train")
            chosen = selection_indices(len(files), split)
            return [files[i] for i in chosen], [labels[i] for i in chosen]
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if self.root is None:
            raise DatasetMissing("no dataset root for 'imagenet': pass --data-root or set $HARNESS_DATA.\n"
                                 + HOW_TO_GET)
        folder = self.root / split
        wnids = self._classes(folder)
        if not wnids:
            raise DatasetMissing(f"{folder} has no <wnid> class folders.\n" + HOW_TO_GET)
        labels_of = {wnid: i for i, wnid in enumerate(self.classes())}
        unknown = [w for w in wnids if w not in labels_of]
        if unknown:
            raise DatasetMissing(f"{folder} has class folders that train/ lacks: {', '.join(unknown[:5])}")
        files, labels = [], []
        for wnid in wnids:
            for path in sorted((folder / wnid).iterdir(), key=lambda p: p.name):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(path)
                    labels.append(labels_of[wnid])
        if not files:
            raise DatasetMissing(f"{folder}/<wnid>/ holds no .JPEG files.\n" + HOW_TO_GET)
        return files, labels

    def build(self, split: str) -> Dataset:
        files, labels = self.files(split)
        log.info("imagenet: %s split: %d images in %d classes", split, len(files), len(set(labels)))
        dataset = ImageFiles(files, self.resolution, labels=labels, on_error=self.on_error)
        self.datasets[split] = dataset
        return dataset

"""CelebA-HQ from a local folder of JPEG/PNG images (the celebahq256 suite)."""

from __future__ import annotations

import logging
from pathlib import Path

from torch.utils.data import Dataset

from harness.contracts import DatasetPlugin
from harness.errors import DatasetMissing
from harness.plugins.datasets.image_folder import (
    SELECTION_SPLITS,
    ImageFiles,
    check_on_error,
    check_resolution,
    index_of,
    list_images,
    selection_indices,
)

log = logging.getLogger(__name__)

#: folder name -> description of the distribution it comes from (docs/protocols.md)
LAYOUTS = {
    "celeba_hq_256": "celeba_hq_256/00000.jpg ... 29999.jpg (256x256 JPEG)",
    "CelebA-HQ-img": "CelebA-HQ-img/0.jpg ... 29999.jpg (CelebAMask-HQ, 1024x1024 JPEG)",
}
SPLITS = ("train", "val", "test")
PERCENT = (75, 10, 15)
HOW_TO_GET = (
    "Put the 30,000 CelebA-HQ images in one of these forms under the dataset root "
    "(--data-root, else $HARNESS_DATA/celebahq):\n"
    "  <root>/celeba_hq_256/00000.jpg ... 29999.jpg   (the common 256x256 JPEG release)\n"
    "  <root>/CelebA-HQ-img/0.jpg ... 29999.jpg       (CelebAMask-HQ, 1024x1024; resized on load)\n"
    "  <root>/00000.jpg ...                            (images directly in the root; .png also accepted)\n"
    "CelebA-HQ is not downloadable by the harness: get it from the CelebAMask-HQ release "
    "(github.com/switchablenorms/CelebAMask-HQ) or build it with the PGGAN scripts. The .npy "
    "arrays (imgHQ00000.npy) of the PGGAN scripts are not read: convert them to PNG first."
)


class CelebAHQ(DatasetPlugin):
    """CelebA-HQ faces from a local JPEG/PNG folder, resized to ``resolution`` (default 256).

    Beyond Stationarity section 4 trains and tests on CelebA-HQ at 256x256. Split by
    rule, as Beyond Stationarity's public code does (NS-VQ-TransVQ
    ``NS_Trans_VQ_CelebA/dataset.py``; docs/protocols.md): sort the file names, the
    first 75% train (22,500), the next 10% val (3,000), the last 15% test
    (4,500). Names sort by number when they are numbers (``2.jpg`` before
    ``10.jpg``), so the padded and unpadded distributions give the same split.
    The other common split (taming-transformers' list files, 25,000/5,000) is
    not a rule: pass it as ``split_file = { train = "celebahqtrain.txt", val =
    "celebahqvalidation.txt" }`` (paths relative to the root); each line names
    an image by file name or by its number (``imgHQ00042.npy`` -> image 42).
    Images are resized with PIL bilinear (antialiased), shorter side then a
    centre crop (a no-op crop for the square CelebA-HQ). The public NS-VQ
    config evaluates at 64x64; the paper says 256, which is the default here.
    ``on_error = "skip"`` skips unreadable files and counts them. Selection split
    (``harness tune``): every 50th image of train in that order is ``select``,
    the rest ``fit`` (image_folder.SELECT_EVERY).
    """

    name = "celebahq"
    paper = "Beyond Stationarity"
    modality = "images"
    needs_root = True
    selection_splits = SELECTION_SPLITS

    def __init__(self, root: Path | None = None, resolution: int = 256,
                 split_file: dict[str, str] | None = None, on_error: str = "raise") -> None:
        super().__init__(root=Path(root) if root is not None else None)
        check_resolution(resolution)
        check_on_error(on_error)
        if split_file is not None and (not isinstance(split_file, dict)
                                       or not set(split_file) <= set(SPLITS)):
            raise ValueError(f"split_file must be a table with keys among {SPLITS}, got {split_file!r}")
        self.resolution, self.split_file, self.on_error = resolution, split_file, on_error
        self.layout: str | None = None
        self.datasets: dict[str, ImageFiles] = {}

    # -- finding the files ---------------------------------------------------------
    def find(self) -> tuple[Path, list[Path]]:
        """The image folder and its sorted files; raises :class:`DatasetMissing` when none."""
        if self.root is None:
            raise DatasetMissing("no dataset root for 'celebahq': pass --data-root or set "
                                 "$HARNESS_DATA.\n" + HOW_TO_GET)
        if not self.root.is_dir():
            raise DatasetMissing(f"the dataset root {self.root} does not exist.\n" + HOW_TO_GET)
        for sub, description in LAYOUTS.items():
            files = list_images(self.root / sub)
            if files:
                self.layout = description
                return self.root / sub, files
        files = list_images(self.root)
        if files:
            self.layout = f"images directly in {self.root} ({files[0].name} ...)"
            return self.root, files
        npy = next(self.root.glob("**/imgHQ*.npy"), None)
        extra = f"\nFound {npy}: the .npy form is not read, convert it to PNG." if npy else ""
        raise DatasetMissing(f"no CelebA-HQ images (.jpg/.jpeg/.png) in {self.root}.{extra}\n" + HOW_TO_GET)

    def check(self) -> str | None:
        try:
            folder, files = self.find()
        except DatasetMissing as exc:
            return str(exc)
        if self.split_file:
            for split, name in self.split_file.items():
                path = self._list_path(name)
                if not path.is_file():
                    return f"split_file for {split!r}: {path} does not exist"
        return None

    def _list_path(self, name: str) -> Path:
        path = Path(name)
        return path if path.is_absolute() or self.root is None else self.root / path

    # -- splits ----------------------------------------------------------------------
    def split_files(self, split: str) -> list[Path]:
        if split in ("fit", "select"):  # carved from train (harness tune)
            train = self.split_files("train")
            return [train[i] for i in selection_indices(len(train), split)]
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        folder, files = self.find()
        if self.split_file is not None:
            return self._from_list(split, files)
        n = len(files)
        ends = (n * PERCENT[0] // 100, n * (PERCENT[0] + PERCENT[1]) // 100, n)  # exact integers
        start = 0 if split == "train" else ends[SPLITS.index(split) - 1]
        return files[start : ends[SPLITS.index(split)]]

    def _from_list(self, split: str, files: list[Path]) -> list[Path]:
        if split not in self.split_file:
            raise ValueError(f"split_file has no {split!r} list (it has {', '.join(sorted(self.split_file))})")
        path = self._list_path(self.split_file[split])
        if not path.is_file():
            raise DatasetMissing(f"split_file for {split!r}: {path} does not exist")
        by_name = {f.name: f for f in files}
        by_index = {index_of(f.name): f for f in files}
        chosen = []
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            name = line.strip()
            if not name:
                continue
            found = by_name.get(name) or by_index.get(index_of(name))
            if found is None:
                raise DatasetMissing(f"{path}:{line_no}: {name!r} matches no image in {files[0].parent}")
            chosen.append(found)
        return chosen

    def build(self, split: str) -> Dataset:
        files = self.split_files(split)
        if not files:
            raise DatasetMissing(f"the {split!r} split of {self.root} is empty ({self.layout})")
        log.info("celebahq: %s, %s split: %d images", self.layout, split, len(files))
        dataset = ImageFiles(files, self.resolution, on_error=self.on_error)
        self.datasets[split] = dataset
        return dataset

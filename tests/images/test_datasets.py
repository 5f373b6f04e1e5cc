"""Image dataset plugins on tiny folders written in the real layouts (no real data needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.cell.build import build_dataset, dataset_root
from harness.errors import DatasetMissing
from harness.host import get_host
from harness.plugins.datasets.celebahq import CelebAHQ
from harness.plugins.datasets.digits import Digits
from harness.plugins.datasets.image_folder import UnreadableImage, load_image, resize_center_crop
from harness.plugins.datasets.imagenet import ImageNet

WNIDS = ("n01440764", "n01443537", "n01484850")


def solid(value: int, size: tuple[int, int] = (40, 40)) -> Image.Image:
    """An RGB image whose red channel encodes ``value`` (so a test can tell images apart)."""
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[..., 0] = value
    array[..., 1] = 128
    return Image.fromarray(array)


def write_celebahq(root: Path, n: int = 40, layout: str = "celeba_hq_256", size: int = 40) -> list[str]:
    """``n`` images in one of the CelebA-HQ folder layouts; returns the names in image order."""
    folder = root / layout if layout else root
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"{i:05d}.jpg" if layout == "celeba_hq_256" else f"{i}.jpg"
        if layout == "":
            name = f"{i:05d}.png"
        solid(i * 5 % 256, (size, size)).save(folder / name, quality=95)
        names.append(name)
    return names


def write_imagenet(root: Path, per_class: dict[str, int] | None = None, size: tuple[int, int] = (48, 36)) -> None:
    """ILSVRC layout: ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``."""
    per_class = per_class or {"train": 4, "val": 2}
    for split, n in per_class.items():
        for c, wnid in enumerate(WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                solid(40 * c + 5 * i, size).save(folder / f"{wnid}_{i:08d}.JPEG")


def red(x: torch.Tensor) -> int:
    """The red value an image was written with: values are multiples of 5, JPEG keeps them within +-2."""
    return 5 * round(float((x[0].mean() + 1) * 127.5) / 5)


# -- digits --------------------------------------------------------------------------

def test_digits_split_shapes_range_and_labels() -> None:
    data = Digits()
    train, val = data.build("train"), data.build("val")
    assert (len(train), len(val)) == (1497, 300)
    x, label = val[0]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # grey repeated to RGB
    xs = torch.cat([train.tensors[0], val.tensors[0]])
    assert xs.min() == -1.0 and xs.max() == 1.0
    assert set(train.tensors[1].tolist()) == set(range(10))


def test_digits_values_follow_the_protocol() -> None:
    from sklearn.datasets import load_digits

    raw = torch.as_tensor(load_digits().images, dtype=torch.float32)
    x = torch.cat([Digits().build(s).tensors[0][:, 0] for s in ("train", "val")])
    # every image is some raw image / 16 scaled to [-1, 1]: compare as multisets of sums
    expected = sorted((raw / 16 * 2 - 1).flatten(1).sum(1).tolist())
    assert np.allclose(sorted(x.flatten(1).sum(1).tolist()), expected, atol=1e-4)


def test_digits_split_is_fixed_by_data_seed_and_disjoint() -> None:
    a, b = Digits().build("train"), Digits().build("train")
    assert torch.equal(a.tensors[0], b.tensors[0])
    other = Digits(data_seed=1).build("train")
    assert not torch.equal(a.tensors[0], other.tensors[0])
    train = {tuple(t.flatten().tolist()) for t in a.tensors[0]}
    val = {tuple(t.flatten().tolist()) for t in Digits().build("val").tensors[0]}
    # sklearn's digits contain a few exact duplicates; the split itself must not repeat positions
    assert len(train & val) < 10


# -- CelebA-HQ -----------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["celeba_hq_256", "CelebA-HQ-img", ""])
def test_celebahq_layouts_and_rule_split(tmp_path: Path, layout: str) -> None:
    write_celebahq(tmp_path, n=40, layout=layout)
    data = CelebAHQ(root=tmp_path, resolution=16)
    assert data.check() is None
    splits = {s: data.build(s) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [30, 4, 6]  # 75/10/15 of 40
    assert layout in (data.layout or "") if layout else "directly in" in data.layout
    # sorted by image number: val is images 30-33, test 34-39, whatever the name padding
    assert [red(splits["val"][i]) for i in range(4)] == [150, 155, 160, 165]
    x = splits["test"][5]
    assert x.shape == (3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert red(x) == 195


def test_celebahq_full_size_split_matches_protocol_counts(tmp_path: Path, monkeypatch) -> None:
    files = [tmp_path / f"{i:05d}.jpg" for i in range(30000)]
    data = CelebAHQ(root=tmp_path)
    monkeypatch.setattr(data, "find", lambda: (tmp_path, files))
    train, val, test = (data.split_files(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (22500, 3000, 4500)
    assert val[0].name == "22500.jpg" and val[-1].name == "25499.jpg"


def test_celebahq_split_file(tmp_path: Path) -> None:
    write_celebahq(tmp_path, n=12)
    (tmp_path / "train.txt").write_text("imgHQ00003.npy\nimgHQ00007.npy\n\n00001.jpg\n")
    (tmp_path / "val.txt").write_text("imgHQ00011.npy\n")
    data = CelebAHQ(root=tmp_path, resolution=8, split_file={"train": "train.txt", "val": "val.txt"})
    train = data.build("train")
    assert [red(train[i]) for i in range(3)] == [15, 35, 5]
    assert len(data.build("val")) == 1
    (tmp_path / "val.txt").write_text("imgHQ00099.npy\n")
    with pytest.raises(DatasetMissing, match=r"val.txt:1: 'imgHQ00099.npy' matches no image"):
        data.build("val")


def test_celebahq_missing_root_says_what_goes_where(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissing) as info:
        CelebAHQ(root=None).build("train")
    text = str(info.value)
    assert "--data-root" in text and "$HARNESS_DATA" in text
    assert "celeba_hq_256/00000.jpg" in text and "CelebA-HQ-img/0.jpg" in text
    empty = tmp_path / "empty"
    empty.mkdir()
    message = CelebAHQ(root=empty).check()
    assert message is not None and str(empty) in message and "celeba_hq_256" in message
    assert "does not exist" in CelebAHQ(root=tmp_path / "nowhere").check()


def test_celebahq_npy_form_is_named(tmp_path: Path) -> None:
    np.save(tmp_path / "imgHQ00000.npy", np.zeros((1, 3, 4, 4), dtype=np.uint8))
    message = CelebAHQ(root=tmp_path).check()
    assert "imgHQ00000.npy" in message and "convert" in message


def test_corrupt_image_is_named_or_skipped_and_counted(tmp_path: Path) -> None:
    write_celebahq(tmp_path, n=8)
    bad = tmp_path / "celeba_hq_256" / "00001.jpg"
    bad.write_bytes(b"not a jpeg at all")
    train = CelebAHQ(root=tmp_path, resolution=8).build("train")  # images 0-5
    assert red(train[0]) == 0
    with pytest.raises(UnreadableImage, match="00001.jpg") as info:
        train[1]
    assert 'on_error = "skip"' in str(info.value)

    data = CelebAHQ(root=tmp_path, resolution=8, on_error="skip")
    skipping = data.build("train")
    with pytest.warns(UserWarning, match="00001.jpg"):
        x = skipping[1]
    assert red(x) == 10  # the next readable image stands in
    skipping[1]
    assert skipping.skipped == {bad}
    assert skipping.report().startswith("1 unreadable of 6")
    with pytest.raises(ValueError, match="on_error"):
        CelebAHQ(root=tmp_path, on_error="ignore")


# -- ImageNet ------------------------------------------------------------------------

def test_imagenet_layout_order_labels_and_crop(tmp_path: Path) -> None:
    write_imagenet(tmp_path)
    data = ImageNet(root=tmp_path, resolution=16)
    assert data.check() is None
    val = data.build("val")
    assert len(val) == 6 and len(data.build("train")) == 12
    items = [val[i] for i in range(len(val))]
    assert [label for _, label in items] == [0, 0, 1, 1, 2, 2]  # sorted wnid, then file name
    assert [red(x) for x, _ in items] == [0, 5, 40, 45, 80, 85]
    assert all(x.shape == (3, 16, 16) for x, _ in items)


def test_resize_shorter_side_then_center_crop() -> None:
    array = np.zeros((36, 48, 3), dtype=np.uint8)  # H=36, W=48
    array[:, :6] = 255  # a white band at the left edge only
    out = resize_center_crop(Image.fromarray(array), 12)
    assert out.size == (12, 12)
    # shorter side 36 -> 12 scales by 1/3: width 16, crop drops 2 columns each side, so
    # the 6-pixel band (2 columns after scaling) is cropped away entirely
    assert np.asarray(out)[:, :, 0].max() < 128


def test_load_image_converts_grayscale_and_scales(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((8, 8), 255, dtype=np.uint8), mode="L").save(path)
    x = load_image(path, 8)
    assert x.shape == (3, 8, 8) and torch.all(x == 1.0)


def test_imagenet_missing_says_what_goes_where(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissing) as info:
        ImageNet(root=None).build("val")
    assert "train/<wnid>/*.JPEG" in str(info.value) and "image-net.org" in str(info.value)
    (tmp_path / "train" / WNIDS[0]).mkdir(parents=True)
    message = ImageNet(root=tmp_path).check()
    assert message.startswith(f"{tmp_path / 'val'} has no <wnid> class folders")


def test_registered_and_root_from_harness_data(tmp_path: Path, monkeypatch) -> None:
    host = get_host()
    for name in ("digits", "celebahq", "imagenet"):
        assert host.datasets.get(name).obj.modality == "images"
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    assert dataset_root("imagenet", None) == tmp_path / "imagenet"
    write_celebahq(tmp_path / "celebahq", n=8)
    config = {"dataset": {"name": "celebahq", "params": {"resolution": 8}}}
    data = build_dataset(host, config, None)
    assert data.root == tmp_path / "celebahq" and len(data.build("train")) == 6

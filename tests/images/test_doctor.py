"""``harness doctor``: datasets and weights, present or missing, and where missing ones go."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.commands.cli import main
from harness.plugins.metrics.weights import ALEXNET, INCEPTION
from tests.images.test_datasets import write_celebahq


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty data and weights folders."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "data"))
    return tmp_path


def doctor_json(capsys, *args: str) -> dict:
    assert main(["doctor", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_doctor_reports_missing_data_and_weights(offline: Path, capsys) -> None:
    report = doctor_json(capsys)
    datasets = {row["name"]: row for row in report["datasets"]}
    assert datasets["digits"]["status"] == "present"
    assert datasets["celebahq"]["status"] == "missing"
    assert datasets["celebahq"]["root"] == str(offline / "data" / "celebahq")
    assert "celeba_hq_256/00000.jpg" in datasets["celebahq"]["message"]
    assert datasets["imagenet"]["status"] == "missing"
    weights = {row["file"]: row for row in report["weights"]}
    for name, metric in ((ALEXNET, "lpips"), (INCEPTION, "rfid")):
        assert weights[name]["present"] is False
        assert weights[name]["path"] == str(offline / "torch" / "hub" / "checkpoints" / name)
        assert metric in weights[name]["metrics"]
    assert weights[ALEXNET]["metrics"] == ["lpips", "train.loss lpips (net = 'alex')"]


def test_doctor_sees_files_once_they_are_there(offline: Path, capsys) -> None:
    write_celebahq(offline / "data" / "celebahq", n=4)
    folder = offline / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / INCEPTION).write_bytes(b"x")
    report = doctor_json(capsys)
    assert {r["name"]: r["status"] for r in report["datasets"]}["celebahq"] == "present"
    assert {r["file"]: r["present"] for r in report["weights"]} == {
        ALEXNET: False, INCEPTION: True, "vgg16-397923af.pth": False}


def test_doctor_text_and_one_dataset_at_a_root(offline: Path, capsys) -> None:
    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    assert "celebahq" in text and "missing" in text and ALEXNET in text and "never downloads" in text
    root = offline / "elsewhere"
    write_celebahq(root, n=4, layout="CelebA-HQ-img")
    report = doctor_json(capsys, "--dataset", "celebahq", "--data-root", str(root))
    assert [(r["name"], r["status"], r["root"]) for r in report["datasets"]] == [
        ("celebahq", "present", str(root))]


def test_doctor_rejects_unknown_dataset_and_root_without_dataset(offline: Path, capsys) -> None:
    assert main(["doctor", "--dataset", "celebhq"]) == 2
    assert "did you mean 'celebahq'" in capsys.readouterr().err
    assert main(["doctor", "--data-root", str(offline)]) == 2
    assert "--dataset" in capsys.readouterr().err

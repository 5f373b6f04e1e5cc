"""The image suites' smoke profiles end to end: real loaders on generated folders, temp MLflow store.

Each metric must come back as a finite number or as "unavailable" with its
reason. Weight files, where used, are random networks in the real format
(see test_image_metrics.py): the numbers exercise the plumbing only.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from harness.run.lifecycle import RunOptions, run_suite
from harness.suite import load_suite
from harness.tracking import Tracker
from tests.images.test_datasets import write_celebahq, write_imagenet
from tests.images.test_image_metrics import fake_torch_home  # noqa: F401  (a fixture)

IMAGE_METRICS = ["mse", "psnr", "ssim", "lpips", "rfid", "utilization", "perplexity", "dead_codes"]


def options(workdir: Path, data_root: Path | None = None) -> RunOptions:
    return RunOptions(device="cpu", data_root=data_root, tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}",
                      progress=False)


def finished(result) -> None:
    for cell in result.cells:
        assert cell.status == "FINISHED", cell.error


def test_suites_validate_and_carry_reference_rows() -> None:
    expected = {"digits": 0, "celebahq256": 36, "imagenet128": 6}
    for name, n_refs in expected.items():
        full = load_suite(name, "full")
        assert len(full.references) == n_refs
        assert all(ref["source"] and ref["metrics"] for ref in full.references)
        load_suite(name, "smoke")
    celeba = load_suite("celebahq256")
    assert {c.codebook_size for c in celeba.cells()} == {64, 1024, 8192}
    assert {c.dim for c in celeba.cells()} == {3, 64}
    assert celeba.data["train"] == {**celeba.data["train"], "epochs": 40, "batch_size": 16, "lr": 5e-4}
    table4 = [r for r in celeba.references if "lpips" in r["metrics"]]
    assert {(r["method"], r["codebook_size"], r["dim"]) for r in table4} == {
        ("vqgan-fc", 8192, 3), ("vq", 8192, 3), ("ema", 1024, 3), ("simvq", 8192, 64),
        ("ns-vq", 8192, 64), ("transvq", 8192, 64)}
    imagenet = load_suite("imagenet128")
    assert [c.codebook_size for c in imagenet.cells()] == [65536, 65536]


def test_digits_smoke(workdir: Path) -> None:
    suite = load_suite("digits", "smoke")
    result = run_suite(suite, ["fsq", "residual-vq"], options(workdir))
    finished(result)
    for cell in result.cells:
        assert cell.metrics["psnr"] > 5 and math.isfinite(cell.metrics["psnr"])
        assert 0 < cell.metrics["utilization"] <= 1
    residual = next(c for c in result.cells if c.cell.method == "residual-vq")
    stages = residual.cell.config["quantizer"]["params"]["stages"]
    assert {f"utilization/stage{i}" for i in range(stages)} <= set(residual.metrics)


def test_celebahq256_smoke_without_weights(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(workdir / "no_weights"))
    root = workdir / "celebahq"
    write_celebahq(root, n=40)
    suite = load_suite("celebahq256", "smoke")
    result = run_suite(suite, ["ns-vq", "transvq"], options(workdir, root))
    finished(result)
    for cell in result.cells:
        assert set(cell.unavailable) == {"lpips", "rfid"}
        assert "alexnet-owt-7be5be79.pth" in cell.unavailable["lpips"]
        assert "weights-inception-2015-12-05-6726825d.pth" in cell.unavailable["rfid"]
        numbers = {m for m in IMAGE_METRICS if m in cell.metrics}
        assert numbers == set(IMAGE_METRICS) - {"lpips", "rfid"}
        assert all(math.isfinite(cell.metrics[m]) for m in numbers)
    run = Tracker(options(workdir).tracking_uri).client.get_run(result.cells[0].run_id)
    assert "never downloads" in run.data.tags["harness.unavailable.rfid"]
    assert run.data.params["dataset.resolution"] == "32"
    assert run.data.params["quantizer.kernel_decay"] == "paper"


def test_imagenet128_smoke_with_weights(workdir: Path, fake_torch_home: Path,  # noqa: F811
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(fake_torch_home))
    root = workdir / "imagenet"
    write_imagenet(root, {"train": 4, "val": 1})
    suite = load_suite("imagenet128", "smoke", overrides=[
        'train.loss=["mse", {name="lpips", net="alex"}, {name="patchgan", weight=0.0}]'])
    result = run_suite(suite, None, options(workdir, root))
    finished(result)
    assert [c.cell.method for c in result.cells] == ["nsvq", "simvq"]
    run = Tracker(options(workdir).tracking_uri).client.get_run(result.cells[0].run_id)
    assert "train/lpips" in run.data.metrics  # the MSE + LPIPS loss trained
    assert run.data.tags["harness.metric_stack.rfid"].startswith("torch-fidelity")  # which FID stack
    for cell in result.cells:
        assert cell.unavailable == {}
        assert set(IMAGE_METRICS) <= set(cell.metrics)
        assert all(math.isfinite(cell.metrics[m]) for m in IMAGE_METRICS)
        assert cell.metrics["lpips"] >= 0 and cell.metrics["rfid"] >= -1e-6


@pytest.mark.parametrize("plots, drawn", [('["reconstructions"]', True), ("[]", False)])
def test_the_reconstruction_grid_is_drawn_when_eval_plots_lists_it(plots, drawn, workdir: Path) -> None:
    suite = load_suite("digits", "smoke", overrides=[f"eval.plots={plots}", "matrix.codebook_size=[256]"])
    result = run_suite(suite, ["vq"], options(workdir))
    finished(result)
    client = Tracker(f"sqlite:///{workdir / 'mlflow.db'}").client
    figures = {a.path for a in client.list_artifacts(result.cells[0].run_id, "plots")}
    assert {"plots/code_usage.png", "plots/training_curves.png"} <= figures
    assert ("plots/reconstructions.png" in figures) is drawn


def test_an_unknown_plot_is_refused_with_close_matches() -> None:
    from harness.errors import SuiteError

    with pytest.raises(SuiteError, match="unknown plot 'reconstruction' in eval.plots; did you mean 'reconstructions'"):
        load_suite("digits", "smoke", overrides=['eval.plots=["reconstruction"]'])

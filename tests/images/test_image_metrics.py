"""Image metrics: hand-derived values, offline weight loading from files in the real format.

The weight files here are RANDOMLY initialised networks saved in the exact
format of the real ones: they test loading and plumbing, and their numbers
mean nothing.
"""

from __future__ import annotations

import math
from pathlib import Path
from unittest import mock

import pytest
import torch

from harness.cell.evaluate import build_metrics
from harness.contracts import EvalBatch, MetricContext
from harness.errors import MetricUnavailable
from harness.host import get_host
from harness.plugins.metrics.fid import RFID, frechet_distance
from harness.plugins.metrics.perceptual import LPIPS
from harness.plugins.metrics.pixel import PSNR, SSIM, to_uint8
from harness.plugins.metrics.weights import ALEXNET, INCEPTION, file_digest


def write_fake_weights(checkpoints: Path) -> None:
    """Random AlexNet and torch-fidelity Inception state dicts under their real file names."""
    import torchvision
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    checkpoints.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), checkpoints / ALEXNET)
    empty = checkpoints / "empty.pth"
    torch.save({}, empty)
    # torch-fidelity's constructor always loads a state dict: skip that once to get the random net
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None):
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                          feature_extractor_weights_path=str(empty))
    torch.save(net.state_dict(), checkpoints / INCEPTION)
    empty.unlink()


@pytest.fixture(scope="session")
def fake_torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("torch_home")
    write_fake_weights(home / "hub" / "checkpoints")
    return home


@pytest.fixture
def with_weights(fake_torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(fake_torch_home))
    return fake_torch_home


@pytest.fixture
def no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    return tmp_path / "empty_home"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a metric tried to download: {args[:1]}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    monkeypatch.setattr(fe, "load_state_dict_from_url", refuse)


def context(**kw) -> MetricContext:
    return MetricContext(codebook_sizes=(4,), device=torch.device("cpu"), modality="images", **kw)


def batch(x: torch.Tensor, x_hat: torch.Tensor) -> EvalBatch:
    return EvalBatch(x=x, x_hat=x_hat, indices=torch.zeros(len(x), dtype=torch.long), z=x)


def run(metric, pairs) -> float:
    for x, x_hat in pairs:
        metric.update(batch(x, x_hat))
    return metric.compute()[metric.name]


# -- pixel metrics ----------------------------------------------------------------------

def test_to_uint8_rounds_not_truncates() -> None:
    x = torch.tensor([-1.0, -2.0, 1.0, 5.0, 0.0, -0.9961])
    # (0 + 1) * 127.5 = 127.5 rounds to 128 (half to even: 128); -0.9961 -> 0.497 -> 0
    assert to_uint8(x).tolist() == [0, 0, 255, 255, 128, 0]


def test_psnr_per_image_mean_by_hand() -> None:
    x = torch.full((2, 3, 4, 4), -1.0)  # uint8 0
    x_hat = x.clone()
    x_hat[0] = -1 + 10 / 127.5  # image 0 off by 10 grey levels everywhere: MSE 100
    x_hat[1] = -1 + 1 / 127.5  # image 1 off by 1: MSE 1
    expected = (10 * math.log10(255**2 / 100) + 10 * math.log10(255**2 / 1)) / 2
    assert run(PSNR(context()), [(x, x_hat)]) == pytest.approx(expected, rel=1e-9)
    # one image per batch gives the same value: per image, not per batch
    assert run(PSNR(context()), [(x[:1], x_hat[:1]), (x[1:], x_hat[1:])]) == pytest.approx(expected, rel=1e-9)


def test_psnr_clamps_reconstructions_and_is_infinite_for_exact_copies() -> None:
    x = torch.full((1, 3, 4, 4), 1.0)
    assert run(PSNR(context()), [(x, x * 3)]) == math.inf


def test_ssim_identical_is_one_and_noise_lowers_it() -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    assert run(SSIM(context()), [(x, x)]) == pytest.approx(1.0, abs=1e-6)
    noisy = run(SSIM(context()), [(x, x + 0.3 * torch.randn_like(x))])
    assert 0 < noisy < 0.95


def _smooth(n: int, generator: torch.Generator) -> torch.Tensor:
    """A smooth ``(1, 3, n, n)`` image in [-1, 1]: low-frequency noise, bilinearly upsampled."""
    coarse = torch.rand(1, 3, 4, 4, generator=generator) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(n, n), mode="bilinear", align_corners=True)


@pytest.mark.parametrize("size", [32, 64, 256])
@pytest.mark.parametrize("kind", ["smooth", "random"])
def test_ssim_matches_scikit_image_over_valid_windows(size: int, kind: str) -> None:
    """Wang et al.'s SSIM as scikit-image computes it, whatever torchmetrics version is installed."""
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(size)
    x = _smooth(size, g) if kind == "smooth" else torch.rand(1, 3, size, size, generator=g) * 2 - 1
    x_hat = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    u, v = to_uint8(x)[0].double().numpy(), to_uint8(x_hat)[0].double().numpy()
    expected = structural_similarity(u, v, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255, channel_axis=0)
    assert run(SSIM(context()), [(x, x_hat)]) == pytest.approx(expected, abs=1e-12)


def test_ssim_passes_the_data_range_explicitly() -> None:
    """A dark batch: inferring the range from the data would change the value; ours must not."""
    from skimage.metrics import structural_similarity

    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16) * 0.2 - 1  # uint8 values 0-25
    x_hat = (x + 0.02 * torch.randn_like(x)).clamp(-1, 1)
    u, v = to_uint8(x)[0].double().numpy(), to_uint8(x_hat)[0].double().numpy()
    kwargs = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=0)
    expected = structural_similarity(u, v, data_range=255, **kwargs)
    inferred = structural_similarity(u, v, data_range=float(max(u.max(), v.max()) - min(u.min(), v.min())),
                                     **kwargs)
    assert abs(expected - inferred) > 1e-3  # the check can fail
    assert run(SSIM(context()), [(x, x_hat)]) == pytest.approx(expected, abs=1e-12)


def test_every_metric_says_what_produced_its_number() -> None:
    """``Metric.stack`` is recorded beside each value: pixel metrics name their convention."""
    assert "valid windows" in SSIM(context()).stack
    assert "uint8" in PSNR(context()).stack
    from harness.plugins.metrics.codes import Utilization

    assert "vq-harness" in Utilization(context()).stack and "torch" in Utilization(context()).stack


def test_ssim_unavailable_on_images_smaller_than_the_window() -> None:
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(MetricUnavailable, match="smaller than the 11x11"):
        SSIM(context()).update(batch(x, x))


def test_image_metrics_refuse_point_data() -> None:
    ctx = MetricContext(codebook_sizes=(4,), device=torch.device("cpu"), modality="points")
    for cls in (PSNR, SSIM, LPIPS, RFID):
        with pytest.raises(MetricUnavailable, match="image metric"):
            cls(ctx)


# -- LPIPS --------------------------------------------------------------------------------

def test_lpips_zero_for_identical_positive_otherwise(with_weights: Path, no_network: None) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert run(LPIPS(context()), [(x, x)]) == pytest.approx(0.0, abs=1e-7)
    assert run(LPIPS(context()), [(x, x.flip(-1))]) > 0


def test_lpips_loads_the_backbone_from_the_file(with_weights: Path, no_network: None) -> None:
    import torchvision

    metric = LPIPS(context())
    saved = torch.load(with_weights / "hub" / "checkpoints" / ALEXNET, weights_only=True)
    assert torch.equal(metric.net.net.slice1[0].weight, saved["features.0.weight"])
    assert torch.equal(metric.net.net.slice5.get_submodule("10").bias, saved["features.10.bias"])
    fresh = torchvision.models.alexnet(weights=None)
    assert not torch.equal(fresh.features[0].weight, saved["features.0.weight"])


def test_lpips_missing_weights_say_where(no_weights: Path, no_network: None) -> None:
    with pytest.raises(MetricUnavailable) as info:
        LPIPS(context())
    text = str(info.value)
    assert str(no_weights / "hub" / "checkpoints" / ALEXNET) in text and "never downloads" in text


def test_lpips_wrong_file_is_unavailable(tmp_path: Path, monkeypatch, no_network: None) -> None:
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"features.0.weight": torch.zeros(1)}, folder / ALEXNET)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MetricUnavailable, match="state dict"):
        LPIPS(context())


# -- rFID ---------------------------------------------------------------------------------

def test_rfid_zero_for_identical_positive_otherwise(with_weights: Path, no_network: None) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    metric = RFID(context())
    assert "torch-fidelity" in metric.stack
    metric.update(batch(x, x))
    assert metric.compute()["rfid"] == pytest.approx(0.0, abs=1e-6)
    other = RFID(context())
    assert other.net is metric.net  # the frozen network is built once per file
    other.real, other.fake = metric.real, [other.features(-x)]  # the originals vs their negatives
    assert other.compute()["rfid"] > 0


def test_rfid_explicit_weights_path(with_weights: Path, no_weights: Path, no_network: None) -> None:
    path = with_weights / "hub" / "checkpoints" / INCEPTION
    metric = RFID(context(), weights=str(path))
    assert metric.weights_path == path
    assert file_digest(path) in metric.stack  # the weights file is part of the recorded stack
    with pytest.raises(MetricUnavailable, match="does not exist"):
        RFID(context(), weights=str(no_weights / "x.pth"))


def test_metric_parameters_come_from_the_suite(with_weights: Path, no_weights: Path, no_network: None) -> None:
    """``eval.metrics = ["psnr", { name = "rfid", weights = ... }]``: the table's params reach the metric."""
    path = with_weights / "hub" / "checkpoints" / INCEPTION
    metrics, unavailable = build_metrics(get_host(), ["psnr", {"name": "rfid", "weights": str(path)}],
                                         context())
    assert not unavailable and metrics["rfid"].weights_path == path
    _, unavailable = build_metrics(get_host(), [{"name": "rfid", "weights": str(no_weights / "x.pth")}],
                                   context())
    assert "does not exist" in unavailable["rfid"]


def test_rfid_needs_two_images(with_weights: Path, no_network: None) -> None:
    metric = RFID(context())
    metric.real, metric.fake = [torch.zeros(1, 2048)], [torch.zeros(1, 2048)]
    with pytest.raises(MetricUnavailable, match="at least 2 images"):
        metric.compute()


def test_low_rank_frechet_distance_matches_torch_fidelity() -> None:
    """The fast path for n < d equals torch-fidelity's formula (checked at d = 6)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    torch.manual_seed(0)
    a, b = torch.randn(4, 6), torch.randn(5, 6) + 0.5
    reference = fid_statistics_to_metric(fid_features_to_statistics(a.double()),
                                         fid_features_to_statistics(b.double()), verbose=False)
    assert frechet_distance(a, b) == pytest.approx(reference["frechet_inception_distance"], rel=1e-6)
    big_a, big_b = torch.randn(20, 6), torch.randn(20, 6)  # n >= d: torch-fidelity's own path
    reference = fid_statistics_to_metric(fid_features_to_statistics(big_a.double()),
                                         fid_features_to_statistics(big_b.double()), verbose=False)
    assert frechet_distance(big_a, big_b) == pytest.approx(reference["frechet_inception_distance"])


def test_missing_weights_become_unavailable_records(no_weights: Path, no_network: None) -> None:
    """Through the evaluator's builder: a reason per metric, never a number."""
    metrics, unavailable = build_metrics(get_host(), ["psnr", "lpips", "rfid"], context())
    assert list(metrics) == ["psnr"]
    assert set(unavailable) == {"lpips", "rfid"}
    assert INCEPTION in unavailable["rfid"] and ALEXNET in unavailable["lpips"]

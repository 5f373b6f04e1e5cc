"""Reconstruction losses: pixel terms, LPIPS from local backbone files only, and the loop using them."""

from __future__ import annotations

import pytest
import torch
import torchvision

from harness.errors import HarnessError, UnknownNameError
from harness.losses import BACKBONE_FILES, ReconstructionLoss, build_loss


@pytest.fixture(scope="module")
def alexnet_state() -> dict[str, torch.Tensor]:
    """torchvision's AlexNet ``features`` weights under their real keys, random values.

    The classifier (58M parameters LPIPS never reads) is left out to keep the file small.
    """
    with torch.device("meta"):
        shapes = torchvision.models.alexnet(weights=None).features.state_dict()
    generator = torch.Generator().manual_seed(0)
    return {f"features.{k}": 0.05 * torch.randn(v.shape, generator=generator) for k, v in shapes.items()}


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def alexnet_file(torch_home, alexnet_state):
    path = torch_home / BACKBONE_FILES["alex"][0]
    torch.save(alexnet_state, path)
    return path, alexnet_state


def test_pixel_losses_by_hand():
    x = torch.zeros(1, 3, 2, 2)
    x_hat = torch.full_like(x, 0.5)
    x_hat[0, 0, 0, 0] = -1.5  # errors: one of 1.5, eleven of 0.5
    assert ReconstructionLoss("mse")(x_hat, x)["rec"].item() == pytest.approx((1.5**2 + 11 * 0.25) / 12)
    assert set(ReconstructionLoss("mse")(x_hat, x)) == {"rec"}


def test_l1_plus_lpips(alexnet_file):
    path, state = alexnet_file
    loss = ReconstructionLoss("l1+lpips", lpips_net="alex")
    # the backbone is the file's, not random or downloaded weights
    assert torch.equal(loss.perceptual.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(loss.perceptual.net.state_dict()["slice5.10.weight"], state["features.10.weight"])
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    same = loss(x.clone(), x)
    assert same["rec"].item() == 0
    assert same["lpips"].item() == pytest.approx(0.0, abs=1e-6)
    x_hat = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_(True)
    terms = loss(x_hat, x)
    assert terms["rec"].item() == pytest.approx((x_hat - x).abs().mean().item())
    assert terms["lpips"].item() > 0
    terms["lpips"].backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in loss.perceptual.parameters())


def test_missing_backbone_names_file_and_folder(torch_home):
    with pytest.raises(HarnessError) as info:
        ReconstructionLoss("mse+lpips", lpips_net="vgg")
    message = str(info.value)
    assert str(torch_home / "vgg16-397923af.pth") in message
    assert "never downloads" in message


def test_too_small_images_are_a_clear_error(alexnet_file):
    loss = ReconstructionLoss("mse+lpips", lpips_net="alex")
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(HarnessError, match="8x8"):
        loss(x, x)


def test_unknown_loss_suggests():
    with pytest.raises(UnknownNameError, match="mse\\+lpips"):
        ReconstructionLoss("mse+lpip")


def test_build_loss_reads_train_config(alexnet_file):
    loss = build_loss({"train": {"loss": "mse+lpips", "lpips_net": "alex"}}, torch.device("cpu"))
    assert loss.pixel == "mse" and loss.perceptual is not None


def test_train_loop_uses_the_configured_loss(alexnet_file):
    """A few steps of the real loop log the LPIPS term, weighted by ``train.lpips_weight``."""
    from harness.host import get_host
    from harness.train import TrainState, train

    host = get_host()
    torch.manual_seed(0)
    model = host.models.get("conv-small").obj(latent_dim=4, hidden=(4, 8))
    quantizer = host.quantizers.get("vq").obj(dim=4, codebook_size=8)
    optimizer = torch.optim.Adam([*model.parameters(), *quantizer.parameters()], lr=1e-3)
    config = {"seed": 0, "train": {"batch_size": 4, "loss": "l1+lpips", "lpips_net": "alex",
                                   "lpips_weight": 0.5, "log_every": 1}}
    state = TrainState(model, quantizer, optimizer, config, torch.device("cpu"), steps_total=2,
                       steps_per_epoch=2)
    data = torch.utils.data.TensorDataset(torch.rand(8, 3, 32, 32) * 2 - 1)  # AlexNet needs >= 32
    logged: list[dict] = []
    train(state, data, [], log=lambda values, step: logged.append(values))
    assert state.loss_weights["lpips"] == 0.5
    last = logged[-1]
    assert "train/lpips" in last and "train/images_per_second" in last
    expected = last["train/rec"] + 0.5 * last["train/lpips"] + last["train/quantizer"]
    assert float(last["train/loss"]) == pytest.approx(float(expected), rel=1e-5)

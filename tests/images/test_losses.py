"""Loss plugins: pixel terms, LPIPS from local backbone files only (one loader with the metric),
``train.loss`` lists and the deprecated string form, and the loop using them."""

from __future__ import annotations

import pytest
import torch
import torchvision

from harness.cell.build import check_losses, loss_config
from harness.cell.losses import LossSet, build_losses, deprecation, loss_specs
from harness.errors import HarnessError, UnknownNameError, UsageError
from harness.host import get_host
from harness.plugins.losses.perceptual import LPIPSLoss
from harness.plugins.losses.pixel import L1, MSE
from harness.plugins.metrics.weights import LPIPS_BACKBONES


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
    path = torch_home / LPIPS_BACKBONES["alex"].filename
    torch.save(alexnet_state, path)
    return path, alexnet_state


class Cpu:
    """The little of a TrainState that LPIPS's setup reads."""

    device = torch.device("cpu")
    loss_weights: dict[str, float] = {}


def test_builtins_are_registered():
    assert {"mse", "l1", "lpips", "patchgan"} <= set(get_host().losses.names())


def test_pixel_losses_by_hand():
    x = torch.zeros(1, 3, 2, 2)
    x_hat = torch.full_like(x, 0.5)
    x_hat[0, 0, 0, 0] = -1.5  # errors: one of 1.5, eleven of 0.5
    assert MSE().terms(None, x, x_hat, None)["rec"].item() == pytest.approx((1.5**2 + 11 * 0.25) / 12)
    assert L1().terms(None, x, x_hat, None)["rec"].item() == pytest.approx((1.5 + 11 * 0.5) / 12)
    assert set(MSE().terms(None, x, x_hat, None)) == {"rec"}


def test_lpips_loss_uses_the_metrics_loader(alexnet_file):
    path, state = alexnet_file
    loss = LPIPSLoss(net="alex")
    loss.setup(Cpu())
    # the backbone is the file's, not random or downloaded weights
    assert torch.equal(loss.perceptual.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(loss.perceptual.net.state_dict()["slice5.10.weight"], state["features.10.weight"])
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert loss.terms(None, x, x.clone(), None)["lpips"].item() == pytest.approx(0.0, abs=1e-6)
    x_hat = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_(True)
    term = loss.terms(None, x, x_hat, None)["lpips"]
    assert term.item() > 0
    term.backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in loss.perceptual.parameters())
    # the lpips metric reads the same file through the same loader
    from harness.plugins.metrics.perceptual import build_lpips

    metric_net = build_lpips(net="alex")
    assert torch.equal(metric_net.net.slice1[0].weight, loss.perceptual.net.slice1[0].weight)


def test_missing_backbone_names_file_and_folder(torch_home):
    with pytest.raises(HarnessError) as info:
        LPIPSLoss(net="vgg").setup(Cpu())
    message = str(info.value)
    assert str(torch_home / "vgg16-397923af.pth") in message
    assert "never downloads" in message


def test_wrong_backbone_file_is_refused(torch_home):
    torch.save({"features.0.weight": torch.zeros(3)}, torch_home / LPIPS_BACKBONES["alex"].filename)
    with pytest.raises(HarnessError, match="features.0.weight"):
        LPIPSLoss(net="alex").setup(Cpu())


def test_too_small_images_are_a_clear_error(alexnet_file):
    loss = LPIPSLoss(net="alex")
    loss.setup(Cpu())
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(HarnessError, match="8x8"):
        loss.terms(None, x, x, None)


def test_unknown_backbone_suggests():
    with pytest.raises(UnknownNameError, match="vgg"):
        LPIPSLoss(net="vgq")


def test_list_form_with_defaults_recorded():
    host = get_host()
    train = {"loss": ["l1", {"name": "lpips", "net": "alex", "weight": 0.5}, {"name": "patchgan", "weight": 0.0}]}
    check_losses(host, train)
    assert loss_config(host, train) == [
        {"name": "l1", "weight": 1.0},
        {"name": "lpips", "weight": 0.5, "net": "alex"},
        {"name": "patchgan", "weight": 0.0, "disc_weight": 0.8, "lr": None, "layers": 3},
    ]
    assert deprecation(train) is None


def test_string_form_translates_with_a_deprecation_message():
    train = {"loss": "l1+lpips", "lpips_weight": 0.5, "lpips_net": "alex", "discriminator": True,
             "disc_weight": 0.6}
    specs = loss_specs(train)
    assert specs == [{"name": "l1"}, {"name": "lpips", "weight": 0.5, "net": "alex"},
                     {"name": "patchgan", "weight": 0.0, "lr": None, "disc_weight": 0.6, "layers": 3}]
    message = deprecation(train)
    assert "deprecated" in message and 'train.loss = ["l1", { name = "lpips"' in message
    assert deprecation({"loss": "mse"}) is not None and deprecation({}) is None


def test_legacy_keys_with_a_list_are_refused():
    with pytest.raises(UsageError, match="lpips_net"):
        deprecation({"loss": ["mse"], "lpips_net": "vgg"})


@pytest.mark.parametrize("train, match", [
    ({"loss": ["mse", "lpip"]}, "did you mean 'lpips'"),
    ({"loss": "mse+lpip"}, "did you mean 'mse\\+lpips'"),
    ({"loss": [{"name": "lpips", "nett": "vgg"}]}, "did you mean 'net'"),
    ({"loss": ["mse", "l1"]}, "both fill the term 'rec'"),
    ({"loss": [{"weight": 1.0}]}, "must be a loss name or a table"),
])
def test_bad_lists_are_clear_errors(train, match):
    with pytest.raises(UsageError, match=match):
        check_losses(get_host(), train)


def test_unknown_loss_in_a_suite_names_file_and_line(tmp_path):
    from harness.cell.build import check_suite
    from harness.suite import load_suite

    path = tmp_path / "s.toml"
    path.write_text('[suite]\nname = "s"\n[dataset]\nname = "two-clusters"\n[model]\nname = "linear2d"\n'
                    '[train]\nsteps = 2\nloss = ["mse", { name = "lpipz" }]\n[methods.vq]\n'
                    '[matrix]\ncodebook_size = [4]\ndim = [2]\nseeds = 1\n')
    suite = load_suite(str(path))
    with pytest.raises(UsageError) as info:
        check_suite(get_host(), suite, suite.cells())
    assert f"{path}:9:" in str(info.value) and "did you mean 'lpips'" in str(info.value)


def test_string_form_in_a_suite_warns_with_the_line(tmp_path, capsys):
    from harness.cell.build import check_suite
    from harness.suite import load_suite

    path = tmp_path / "s.toml"
    path.write_text('[suite]\nname = "s"\n[dataset]\nname = "two-clusters"\n[model]\nname = "linear2d"\n'
                    '[train]\nsteps = 2\nloss = "mse"\n[methods.vq]\n'
                    '[matrix]\ncodebook_size = [4]\ndim = [2]\nseeds = 1\n')
    suite = load_suite(str(path))
    check_suite(get_host(), suite, suite.cells())
    err = capsys.readouterr().err
    assert f"{path}:9:" in err and "deprecated string form" in err and 'train.loss = ["mse"]' in err


def test_weights_scale_terms_and_zero_weight_skips():
    class Count(MSE):
        calls = 0

        def terms(self, state, x, x_hat, out):
            Count.calls += 1
            return super().terms(state, x, x_hat, out)

    class State:
        loss_weights = {"quantizer": 1.0}
        extras: dict = {}

    losses = LossSet([Count(weight=0.5)])
    state = State()
    losses.setup(state)
    assert state.loss_weights["rec"] == 0.5
    x, x_hat = torch.zeros(4), torch.ones(4)
    out = type("Out", (), {"loss": torch.tensor(2.0)})()
    total, terms = losses(state, x, x_hat, out)
    assert total.item() == pytest.approx(0.5 * 1.0 + 2.0) and set(terms) == {"rec", "quantizer"}
    state.loss_weights["rec"] = 0.0  # a schedule switches it off: not even computed
    total, terms = losses(state, x, x_hat, out)
    assert Count.calls == 1 and set(terms) == {"quantizer"} and total.item() == 2.0


def test_the_suite_weight_of_a_pixel_loss_applies():
    """``{ name = "mse", weight = 0.5 }`` halves ``rec``, although the state starts every weight at 1."""
    from harness.cell.train import TrainState

    host = get_host()
    model = host.models.get("linear2d").obj(latent_dim=2)
    quantizer = host.quantizers.get("vq").obj(dim=2, codebook_size=4)
    state = TrainState(model, quantizer, torch.optim.SGD(model.parameters(), lr=0.1),
                       {"seed": 0, "train": {}}, torch.device("cpu"), 1, 1)
    assert state.loss_weights["rec"] == 1.0
    build_losses(host, [{"name": "mse", "weight": 0.5}]).setup(state)
    assert state.loss_weights["rec"] == 0.5


def test_train_loop_uses_the_configured_losses(alexnet_file):
    """A few steps of the real loop log the LPIPS term, weighted by its suite weight."""
    from harness.cell.train import TrainState, train

    host = get_host()
    torch.manual_seed(0)
    model = host.models.get("conv-small").obj(latent_dim=4, hidden=(4, 8))
    quantizer = host.quantizers.get("vq").obj(dim=4, codebook_size=8)
    optimizer = torch.optim.Adam([*model.parameters(), *quantizer.parameters()], lr=1e-3)
    config = {"seed": 0, "train": {"batch_size": 4, "log_every": 1,
                                   "loss": ["l1", {"name": "lpips", "net": "alex", "weight": 0.5}]}}
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


def test_build_losses_passes_params():
    losses = build_losses(get_host(), [{"name": "lpips", "net": "alex", "weight": 0.25}])
    (loss,) = losses.losses
    assert isinstance(loss, LPIPSLoss) and loss.net == "alex" and loss.weight == 0.25

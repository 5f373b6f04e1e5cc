"""The toy2d-drift pieces: the drifting encoder, the cloud, per-method model params, paired claims."""

from __future__ import annotations

import pytest
import torch

from harness.errors import UnknownNameError
from harness.plugins.datasets.drift2d import Drift2dCloud
from harness.plugins.models.drift2d import Drift2d
from harness.plugins.schedules.stages import freeze
from harness.suite import Claim, load_suite
from harness.suite.claims import check_claim

POINTS = torch.tensor([[0.5, -0.5], [-1.0, 0.25]])


def encode_after(demo: str, steps: int, rate: float = 0.5, **kw) -> torch.Tensor:
    """Latents of POINTS after ``steps`` training forwards, encoded in eval mode (no drift)."""
    model = Drift2d(demo=demo, rate=rate, **kw)
    for _ in range(steps):
        model.encode(POINTS)
    model.eval()
    return model.encode(POINTS)


def test_encoder_starts_at_identity_and_moves_each_training_step():
    # rate 0.5: the map covers 1/2, 3/4, ... of the way to the target (hand-derived)
    assert torch.equal(encode_after("translation", 0), POINTS)
    shift = torch.tensor([3.0, 0.0])
    assert torch.allclose(encode_after("translation", 1), POINTS + 0.5 * shift)
    assert torch.allclose(encode_after("translation", 2), POINTS + 0.75 * shift)
    assert torch.allclose(encode_after("expansion", 1), POINTS * (1 + 0.5 * 2.0))
    assert torch.allclose(encode_after("shrink", 1, strength=0.5), POINTS * 0.75)


def test_split_sends_the_halves_to_opposite_quadrants():
    z = encode_after("split", 60, rate=0.5, strength=2.0)
    assert torch.allclose(z[0], POINTS[0] + 2.0) and torch.allclose(z[1], POINTS[1] - 2.0)


def test_drift_stops_in_eval_mode_and_when_the_encoder_is_frozen():
    model = Drift2d(demo="translation", rate=0.5)
    model.eval()
    model.encode(POINTS)
    model.train()
    freeze(model.encoder)  # what nsvq-stages does: a frozen encoder no longer drifts
    model.encode(POINTS)
    assert torch.equal(model.encode(POINTS), POINTS) and int(model.encoder.steps) == 0


def test_drift_state_is_in_the_checkpoint():
    model = Drift2d(demo="expansion", rate=0.5)
    model.encode(POINTS)
    restored = Drift2d(demo="expansion", rate=0.5)
    restored.load_state_dict(model.state_dict())
    restored.eval()
    assert torch.allclose(restored.encode(POINTS), POINTS * 2.0)


def test_bad_demo_and_dim_are_clear_errors():
    with pytest.raises(UnknownNameError, match="did you mean 'shrink'"):
        Drift2d(demo="shrnk")
    with pytest.raises(ValueError, match="latent dim must be 2"):
        Drift2d(latent_dim=3)


def test_cloud_is_fixed_by_data_seed_and_labels_the_split_side():
    a, b = Drift2dCloud(n_train=64, n_val=32), Drift2dCloud(n_train=64, n_val=32)
    x, label = a.build("train").tensors
    assert torch.equal(x, b.build("train").tensors[0]) and x.shape == (64, 2)
    assert x.abs().max() <= 1 and torch.equal(label, (x[:, 0] >= 0).long())
    assert not torch.equal(a.build("val").tensors[0][:32], x[:32])


def test_methods_override_model_params():
    suite = load_suite("toy2d-drift", "smoke")
    demos = {c.method: c.config["model"]["params"]["demo"] for c in suite.cells()}
    assert demos["ema-split"] == "split" and demos["ns-vq-translation"] == "translation"
    assert len({c.config["model"]["params"]["demo"] for c in suite.cells()}) == 4


# -- paired claims (compare) -------------------------------------------------------

def record(method: str, seed: int, dead: float, k: int = 16) -> dict:
    return {"key": {"method": method, "quantizer": method, "codebook_size": k, "dim": 2, "seed": seed},
            "metrics": {"dead_codes": dead}}


def paired(aggregate: str = "all") -> Claim:
    return Claim(id="c", text="", where={"method": "a"}, compare={"method": "b"}, metric="dead_codes",
                 aggregate=aggregate, op="<", value=0)


def test_compare_claim_pairs_cells_by_seed():
    records = [record("a", 0, 1), record("a", 1, 5), record("b", 0, 4), record("b", 1, 6)]
    result = check_claim(paired(), records)
    assert result.values == (-3.0, -1.0) and result.passed and result.n == 2
    assert check_claim(paired("mean"), records).observed == pytest.approx(-2.0)


def test_compare_claim_fails_when_one_seed_does_not_hold():
    records = [record("a", 0, 1), record("a", 1, 6), record("b", 0, 4), record("b", 1, 6)]
    result = check_claim(paired(), records)
    assert result.values == (-3.0, 0.0) and result.passed is False
    assert check_claim(paired("fraction"), records).observed == 0.5


def test_compare_claim_leaves_unpaired_cells_out():
    records = [record("a", 0, 1), record("a", 1, 2), record("b", 0, 4), record("b", 0, 9, k=8)]
    result = check_claim(paired(), records)
    assert result.values == (-3.0,) and result.n == 1
    assert check_claim(paired(), [record("a", 0, 1)]).status == "no data"


def test_compare_claim_parses_from_a_suite_and_describes_itself():
    claim = load_suite("toy2d-drift", "full").claims[0]
    assert claim.compare == {"method": "ema-translation"}
    assert "dead_codes[method=ns-vq-translation] - dead_codes[method=ema-translation]" in claim.describe()

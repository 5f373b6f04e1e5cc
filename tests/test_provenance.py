"""Provenance tags: the plugin digest follows the plugin's code, the rate follows the model and quantizer."""

from __future__ import annotations

import json
import math
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

from harness.cell.provenance import _digest, plugin_digest, rate_tags, source_files, suite_tags
from harness.host import get_host


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A plugin package on sys.path: ``prov_pkg/quantizer.py`` beside a helper module."""
    root = tmp_path / "prov_pkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "helpers.py").write_text("SCALE = 1.0\n")
    (root / "quantizer.py").write_text(textwrap.dedent("""
        from prov_pkg.helpers import SCALE

        class Q:
            scale = SCALE
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    for name in [m for m in sys.modules if m.startswith("prov_pkg")]:
        del sys.modules[name]


def test_the_digest_covers_the_module_and_every_file_of_its_package(package):
    from prov_pkg.quantizer import Q

    entry = SimpleNamespace(obj=Q)
    assert {p.name for p in source_files(Q.__module__)} == {"__init__.py", "helpers.py", "quantizer.py"}
    first = plugin_digest(entry)
    assert len(first) == 64 and plugin_digest(entry) == first

    (package / "helpers.py").write_text("SCALE = 2.0\n")  # a helper, not the quantizer's own module
    _digest.cache_clear()
    changed = plugin_digest(entry)
    assert changed != first
    (package / "helpers.py").write_text("SCALE = 1.0\n")
    _digest.cache_clear()
    assert plugin_digest(entry) == first  # content, not timestamps
    assert _digest(Q.__module__, "0.1.0", "") != _digest(Q.__module__, "0.2.0", "")  # the harness version counts


def test_builtin_quantizers_of_one_package_share_files_but_not_module_names():
    host = get_host()
    vq, fsq = host.quantizers.get("vq"), host.quantizers.get("fsq")
    assert source_files(vq.obj.__module__) == source_files(fsq.obj.__module__)
    assert any(p.name == "codebook_tools.py" for p in source_files(vq.obj.__module__))


@pytest.mark.parametrize(("quantizer", "k", "params", "bits"), [
    ("vq", 256, {}, 8.0),
    ("fsq", 256, {}, math.log2(8 * 6 * 5)),  # the paper's levels for 2^8: 240 codes
    ("residual-vq", 16, {"stages": 2}, 8.0),  # 2 stages x 4 bits
])
def test_rate_tags_of_an_image_model(quantizer, k, params, bits):
    host = get_host()
    model = host.models.get("conv-small").obj(latent_dim=8)
    q = host.quantizers.get(quantizer).obj(dim=8, codebook_size=k, **params)
    data = host.datasets.get("digits").obj().build("val")
    tags = rate_tags(model, q, data, torch.device("cpu"))
    assert float(tags["harness.bits_per_token"]) == pytest.approx(bits, abs=1e-5)
    # conv-small halves 8x8 images once: 4 x 4 = 16 tokens for 64 pixels
    assert (tags["harness.tokens_per_item"], tags["harness.pixels_per_item"]) == ("16", "64")
    assert model.training  # measured in eval mode, and put back


def test_rate_tags_of_points_have_no_pixels():
    host = get_host()
    model = host.models.get("linear2d").obj(latent_dim=2)
    q = host.quantizers.get("vq").obj(dim=2, codebook_size=10)
    data = host.datasets.get("two-clusters").obj().build("val")
    tags = rate_tags(model, q, data, torch.device("cpu"))
    assert tags == {"harness.bits_per_token": f"{math.log2(10):.6g}", "harness.tokens_per_item": "1"}


def test_suite_tags_record_the_primary_metric_and_directions():
    from harness.suite import load_suite

    tags = suite_tags(get_host(), load_suite("digits", "smoke"))
    assert tags["harness.primary_metric"] == "psnr"
    directions = json.loads(tags["harness.metric_directions"])
    assert directions["psnr"] is True and directions["mse"] is False


def test_a_duck_typed_quantizer_and_a_failing_model_still_get_a_rate():
    class Plain(torch.nn.Module):  # no Quantizer base: no bits_per_token property
        codebook_size = 1024

    class Broken(torch.nn.Module):
        def encode(self, x):
            raise RuntimeError("needs a batch of two")

    data = get_host().datasets.get("two-clusters").obj().build("val")
    tags = rate_tags(Broken(), Plain(), data, torch.device("cpu"))
    assert tags["harness.bits_per_token"] == "10"
    assert "harness.tokens_per_item" not in tags and "needs a batch of two" in tags["harness.rate_error"]

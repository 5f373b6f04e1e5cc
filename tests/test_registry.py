"""The plugin host and its registries: duplicates, did-you-mean, sources, broken plugins."""

from __future__ import annotations

import sys
import textwrap
from importlib.metadata import version

import pytest

from harness import hookimpl
from harness.errors import UnknownNameError, UsageError
from harness.host import build_host
from harness.registry import KINDS, Registry, Source


class _Extra:
    """An in-process plugin that registers a quantizer named like a built-in one."""

    @hookimpl
    def harness_register_quantizers(self, register):
        class Impostor:
            """Claims the name vq."""

            name = "vq"

        register(Impostor)


def test_builtin_plugins_come_from_the_distribution():
    host = build_host()
    entry = host.quantizers.get("vq")
    assert entry.source.distribution == "vq-harness"
    assert entry.source.version == version("vq-harness")
    assert entry.source.plugin == "quantizers"
    assert not host.broken


def test_every_kind_has_builtins_listed_sorted():
    host = build_host()
    for kind in KINDS:
        names = host.registries[kind].names()
        assert names, kind
        assert names == sorted(names)


def test_unknown_name_suggests_close_matches():
    host = build_host()
    with pytest.raises(UnknownNameError) as info:
        host.quantizers.get("driftng")
    assert "did you mean 'drifting'" in str(info.value)
    assert info.value.exit_code == 2


def test_duplicate_names_are_a_conflict_naming_both_sources():
    host = build_host(extra_plugins={"impostor": _Extra()})
    assert "vq" not in host.quantizers
    with pytest.raises(UsageError) as info:
        host.quantizers.get("vq")
    message = str(info.value)
    assert "quantizers (vq-harness" in message and "impostor (local" in message
    assert "drifting" in host.quantizers  # the rest still works


def test_registry_rejects_empty_names():
    registry = Registry("quantizers")
    with pytest.raises(UsageError):
        registry.add("", object, Source("p"))


def _install_fake_distribution(root, name, module_source, entry_name):
    """A real installed distribution (dist-info with entry points) on sys.path."""
    (root / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[harness]\n{entry_name} = {name}\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for mod in [m for m in sys.modules if m.startswith("fake_")]:
        del sys.modules[mod]


def test_broken_plugin_is_listed_and_the_rest_load(site):
    _install_fake_distribution(site, "fake_broken", "raise RuntimeError('boom at import')\n", "broken")
    host = build_host()
    assert [b.name for b in host.broken] == ["broken"]
    assert "boom at import" in host.broken[0].error
    assert host.broken[0].source.distribution == "fake_broken"
    assert "vq" in host.quantizers
    statuses = {p["name"]: p["status"] for p in host.plugins()}
    assert statuses["broken"] == "broken" and statuses["quantizers"] == "ok"


def test_external_plugin_registers_with_its_distribution(site):
    _install_fake_distribution(site, "fake_quant", """
        from harness import hookimpl
        from harness.plugins.quantizers.vq import VectorQuantizer

        class Mine(VectorQuantizer):
            '''A test quantizer.'''
            name = "mine"

        @hookimpl
        def harness_register_quantizers(register):
            register(Mine)
    """, "mine")
    host = build_host()
    entry = host.quantizers.get("mine")
    assert (entry.source.distribution, entry.source.version) == ("fake_quant", "1.2.3")


def test_disable_env_blocks_a_plugin(site, monkeypatch):
    _install_fake_distribution(site, "fake_broken2", "raise RuntimeError('never imported')\n", "broken2")
    monkeypatch.setenv("HARNESS_DISABLE_PLUGINS", "broken2, metrics")
    host = build_host()
    assert not host.broken
    assert set(host.disabled) == {"broken2", "metrics"}
    assert len(host.metrics) == 0 and "vq" in host.quantizers

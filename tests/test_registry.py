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


def test_a_name_the_builtins_own_resolves_to_them_with_one_warning_naming_both(capsys):
    host = build_host(extra_plugins={"impostor": _Extra()})
    assert "vq" in host.quantizers and "vq" in host.quantizers.names()
    assert host.quantizers.get("vq").source.distribution == "vq-harness"
    assert host.quantizers.get("vq").obj.__name__ != "Impostor"
    warning = capsys.readouterr().err
    assert warning.count("harness: warning:") == 1  # once per name, however often it is looked up
    assert "quantizers (vq-harness" in warning and "impostor (local" in warning
    assert "'vq-harness:vq'" in warning and "'local:vq'" in warning  # how to choose
    assert "vq" in host.quantizers.conflicts  # the clash stays visible (harness list)
    assert "drifting" in host.quantizers  # the rest still works


def test_qualified_names_choose_a_claimant_without_a_warning(capsys):
    host = build_host(extra_plugins={"impostor": _Extra()})
    assert host.quantizers.get("local:vq").obj.__name__ == "Impostor"
    assert host.quantizers.get("impostor:vq").obj.__name__ == "Impostor"  # the plugin's name works too
    assert host.quantizers.get("vq-harness:vq").source.distribution == "vq-harness"
    assert host.quantizers.get("VQ_Harness:drifting").name == "drifting"  # distribution names compare canonically
    assert "local:vq" in host.quantizers and "nobody:vq" not in host.quantizers
    assert capsys.readouterr().err == ""
    with pytest.raises(UnknownNameError) as info:
        host.quantizers.get("vq-harnes:vq")
    assert "did you mean 'vq-harness:vq'" in str(info.value) and info.value.exit_code == 2


class _Second:
    """Another outside plugin claiming a name the built-ins do not have."""

    def __init__(self, tag):
        self.tag = tag

    @hookimpl
    def harness_register_quantizers(self, register):
        register(type(f"Mine{self.tag}", (), {"__doc__": "mine", "name": "mine"}))


def test_a_name_two_outside_plugins_claim_is_an_error_listing_the_choices():
    host = build_host(extra_plugins={"first": _Second("A"), "second": _Second("B")})
    assert "mine" not in host.quantizers and "mine" not in host.quantizers.names()
    with pytest.raises(UsageError) as info:
        host.quantizers.get("mine")
    message = str(info.value)
    assert "first (local" in message and "second (local" in message
    assert "'first:mine'" not in message and "'local:mine'" in message
    assert host.quantizers.get("first:mine").obj.__name__ == "MineA"
    assert host.quantizers.get("second:mine").obj.__name__ == "MineB"
    with pytest.raises(UsageError, match="names 2 quantizers of one distribution"):
        host.quantizers.get("local:mine")


def test_registry_rejects_qualified_looking_names():
    with pytest.raises(UsageError, match="must not contain ':'"):
        Registry("quantizers").add("a:b", object, Source("p"))


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


SHADOW = """
    from harness import hookimpl
    from harness.plugins.quantizers.vq import VectorQuantizer

    class Shadow(VectorQuantizer):
        '''A third-party quantizer that registers the built-in's name.'''
        name = "vq"

    @hookimpl
    def harness_register_quantizers(register):
        register(Shadow)
"""


@pytest.fixture
def shadowed(site):
    """A real installed distribution ``fake_shadow`` that registers ``vq``; the CLI's host sees it."""
    from harness.host import get_host

    _install_fake_distribution(site, "fake_shadow", SHADOW, "shadow")
    get_host.cache_clear()
    yield
    get_host.cache_clear()


def test_builtin_suites_keep_working_and_qualified_names_pick_the_plugin(shadowed, tiny_suite, tracking_uri,
                                                                         capsys):
    from mlflow.tracking import MlflowClient

    from harness.commands.cli import main

    qualified = tiny_suite.with_name("qualified.toml")
    qualified.write_text(tiny_suite.read_text().replace('[methods.vq]\nquantizer = "vq"',
                                                        '[methods.vq]\nquantizer = "fake-shadow:vq"'))
    common = ["--profile", "smoke", "--seeds", "1", "--no-progress", "--tracking-uri", tracking_uri]
    assert main(["run", str(tiny_suite), "-q", "vq", *common]) == 0  # the bare name: the built-in
    err = capsys.readouterr().err
    assert "harness: warning: two plugins register the quantizer 'vq'" in err
    assert "shadow (fake_shadow 1.2.3)" in err and "'fake_shadow:vq'" in err
    assert main(["run", str(qualified), "-q", "vq", *common]) == 0  # the suite file chooses the plugin
    assert main(["run", str(tiny_suite), "-q", "vq-harness:vq", *common]) == 0  # -q chooses the built-in
    assert "warning" not in capsys.readouterr().err

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("tiny")
    cells = client.search_runs([experiment.experiment_id], "tags.`harness.kind` = 'cell'",
                               order_by=["attributes.start_time ASC"])
    assert [(r.info.run_name, r.data.tags["harness.plugin_distribution"]) for r in cells] == [
        ("vq-K4-d2-s0", "vq-harness"), ("vq-K4-d2-s0", "fake_shadow"), ("vq-harness:vq-K4-d2-s0", "vq-harness")]


def test_a_qualified_name_without_a_clash_selects_the_suites_own_row(tiny_suite):
    """``-q vq-harness:vq`` is the suite's ``vq`` row (same cells, same names, its claims apply);
    the bare label only when the suite's quantizer is that very plugin."""
    from harness.commands.select import select_methods
    from harness.host import build_host
    from harness.suite import load_suite

    host = build_host()
    suite = load_suite(str(tiny_suite), "smoke")
    assert select_methods(suite, ["vq-harness:vq"], host) == ["vq"]
    assert select_methods(suite, ["vq-harness:drifting"], host) == select_methods(suite, ["drifting"], host)

"""Lazy registry entries: described without importing, imported on use, load errors named as such.

The command-line checks run in a fresh interpreter and read ``sys.modules`` after the
command: listing must not import torch (issue: `harness list` took seconds and 650 MB).
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.host import build_host, get_host
from harness.registry import PluginLoadError

HEAVY = ("torch", "mlflow", "matplotlib")

PROBE = """
import json, sys
from harness.commands.cli import main
argv = json.loads(sys.argv[1])
try:
    code = main(argv) if argv else 0
except SystemExit as exc:  # --help
    code = exc.code
if not argv:  # suite validation: every shipped suite, every profile
    from harness.suite import builtin_suites, load_suite
    for name in builtin_suites():
        load_suite(name, "full")  # the schema, values, profiles and claims
print(json.dumps({"code": code, "heavy": sorted(m for m in sys.modules if m in HEAVY)}))
""".replace("HEAVY", repr(HEAVY))


def _probe(argv: list[str], env: dict[str, str] | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["list"], ["list", "quantizers", "--json"], ["plugins"], ["--help"],
                                  ["run", "--help"], [], ["run", "toy2d", "--profile", "all", "--dry-run"],
                                  ["run", "digits", "--dry-run"], ["run", "celebahq256", "--dry-run"]],
                         ids=lambda a: " ".join(a) or "load every suite")
def test_listing_help_and_suite_validation_import_no_torch(argv):
    result = _probe(argv)
    assert result["code"] == 0
    assert result["heavy"] == [], f"harness {' '.join(argv)} imported {result['heavy']}"


def test_every_builtin_entry_is_lazy_and_its_source_text_describes_it():
    """The summary, paper and name `harness list` shows before importing equal the class's own."""
    host = build_host()
    entries = [e for r in host.registries.values() for e in r.entries()
               if e.source.distribution == "vq-harness"]
    eager = [f"{e.kind}:{e.name}" for e in entries if not e.lazy]
    assert not eager, (f"{eager} registered as classes: register a 'module:Class' string "
                       "(harness/plugins/<kind>/__init__.py) so listing imports no torch")
    before = {(e.kind, e.name): (e.summary, e.paper) for e in entries}
    for entry in entries:
        cls = entry.obj
        doc = (inspect.getdoc(cls) or "").strip()
        assert before[entry.kind, entry.name] == (doc.splitlines()[0] if doc else "",
                                                  str(getattr(cls, "paper", "") or "")), entry.name
        assert getattr(cls, "name", entry.name) == entry.name, f"{entry.target}: name is not {entry.name!r}"
        assert not entry.lazy


def test_reading_a_store_imports_no_torch(tiny_suite, tracking_uri, capsys):
    """The leaderboard (table and page) and ``harness diagnose`` read what runs recorded: each
    answers without torch (2 s and 600 MB it would add to every call)."""
    from mlflow.tracking import MlflowClient

    from harness.commands.cli import main

    assert main(["run", str(tiny_suite), "--profile", "smoke", "-q", "vq", "--seeds", "1", "--no-progress"]) == 0
    capsys.readouterr()
    client = MlflowClient(tracking_uri)
    cell = client.search_runs([client.get_experiment_by_name("tiny").experiment_id],
                              "tags.`harness.kind` = 'cell'")[0].info.run_id
    for argv in (["leaderboard", str(tiny_suite), "--profile", "smoke"],
                 ["leaderboard", str(tiny_suite), "--profile", "smoke", "--format", "html", "--output", "t.html"],
                 ["diagnose", cell[:8]]):
        result = _probe([*argv, "--tracking-uri", tracking_uri])
        assert result["code"] == 0, argv
        assert "torch" not in result["heavy"], f"harness {' '.join(argv)} imported torch"


def test_every_builtin_constructor_is_read_from_source_as_python_reads_it():
    """A dry run checks parameters against constructors read from source (harness.lazy): for every
    built-in entry the source settles them, and they equal :func:`inspect.signature`'s."""
    from harness.lazy import parameters_of, static_parameters

    entries = [e for r in build_host().registries.values() for e in r.entries()
               if e.source.distribution == "vq-harness"]
    unsettled = [e.target for e in entries if static_parameters(e.target) is None]
    assert not unsettled, f"the source does not settle these constructors: {unsettled}"
    differ = {e.target: (static_parameters(e.target), parameters_of(e.obj)) for e in entries
              if static_parameters(e.target) != parameters_of(e.obj)}
    assert not differ
    losses = build_host().losses.entries()
    assert {e.name: e.term(load=False) for e in losses} == {e.name: e.obj.term for e in losses}


SHAPES = {"shapes_pkg/__init__.py": "",
          "shapes_pkg/base.py": '''
              class Base:
                  def __init__(self, dim, codebook_size, *, beta=0.25):
                      pass
          ''',
          "shapes_pkg/kinds.py": '''
              from dataclasses import dataclass
              from shapes_pkg.base import Base as Root

              class Inherits(Root):
                  """Takes its base's parameters (imported under another name)."""

              class Open(Root):
                  def __init__(self, dim, codebook_size, *extra, **options):
                      super().__init__(dim, codebook_size)

              @dataclass
              class Written:
                  dim: int
                  codebook_size: int
                  tau: float = 1.0

              class TwoBases(Root, dict):
                  pass
          '''}


def test_source_parameters_follow_bases_and_give_up_where_python_decides(tmp_path, monkeypatch):
    """Settled: an inherited ``__init__``, ``*args`` and ``**kwargs``. Not settled (the class is then
    imported): a decorator that writes ``__init__``, several bases, a name that is not a class."""
    from harness.lazy import Parameters, static_parameters

    _distribution(tmp_path, "shapes", SHAPES, "")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert static_parameters("shapes_pkg.kinds:Inherits") == Parameters(frozenset({"dim", "codebook_size", "beta"}))
    assert static_parameters("shapes_pkg.kinds:Open") == Parameters(
        frozenset({"dim", "codebook_size", "extra", "options"}), open=True)
    for unsettled in ("Written", "TwoBases", "dataclass", "Missing"):
        assert static_parameters(f"shapes_pkg.kinds:{unsettled}") is None, unsettled
    assert "shapes_pkg" not in sys.modules  # read, never imported


# -- plugins that fail to load -------------------------------------------------------------------

def _distribution(root: Path, name: str, files: dict[str, str], entry_points: str) -> None:
    """A real installed distribution (dist-info with entry points) on ``root``."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    info = root / f"{name.replace('-', '_')}-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    (info / "RECORD").write_text("")


COSINE = {"cosine_pkg/__init__.py": "",
          "cosine_pkg/quantizer.py": '''
              import no_such_module_for_the_test

              class CosineVQ:
                  """Cosine nearest code (needs a module that is not installed)."""

                  name = "cosine-vq"
                  paper = "a test"
          '''}


@pytest.fixture
def broken_site(tmp_path, monkeypatch):
    """Two broken plugins: a lazy entry point whose class fails to import, a hook module that fails."""
    _distribution(tmp_path, "harness-cosine", COSINE,
                  "[harness.quantizers]\ncosine-vq = cosine_pkg.quantizer:CosineVQ\n")
    _distribution(tmp_path, "harness-lfq2", {"harness_lfq2.py": "raise ImportError('lfq2 needs CUDA')\n"},
                  "[harness]\nharness_lfq2 = harness_lfq2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    get_host.cache_clear()
    yield tmp_path
    get_host.cache_clear()
    for name in [m for m in sys.modules if m.startswith(("cosine_pkg", "harness_lfq2"))]:
        del sys.modules[name]


def test_a_broken_plugin_lists_without_importing_and_shows_its_error_when_loaded(broken_site, capsys):
    from harness.commands.cli import main

    assert main(["list", "quantizers", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    [cosine] = [q for q in listing["quantizers"] if q["name"] == "cosine-vq"]
    assert (cosine["summary"], cosine["distribution"]) == (
        "Cosine nearest code (needs a module that is not installed).", "harness-cosine")
    assert "cosine_pkg.quantizer" not in sys.modules  # described from its source text
    assert [b["name"] for b in listing["broken"]] == ["harness_lfq2"]

    assert main(["plugins", "--load", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["harness-cosine"]["status"] == "broken"
    assert "No module named 'no_such_module_for_the_test'" in rows["harness-cosine"]["error"]
    assert rows["harness_lfq2"]["status"] == "broken" and "lfq2 needs CUDA" in rows["harness_lfq2"]["error"]


def test_a_broken_plugins_name_says_it_failed_to_load_in_run_suites_and_the_kit(broken_site, tiny_suite,
                                                                                tracking_uri, capsys):
    from harness.commands.cli import main
    from harness.testing import QuantizerCase

    common = ["--profile", "smoke", "--seeds", "1", "--no-progress", "--tracking-uri", tracking_uri]
    expected = ("plugin harness-cosine failed to load: ModuleNotFoundError: "
                "No module named 'no_such_module_for_the_test'")
    assert main(["run", str(tiny_suite), "-q", "cosine-vq", *common]) == 2
    err = capsys.readouterr().err
    assert expected in err and "did you mean" not in err

    suite = tiny_suite.with_name("cosine.toml")
    suite.write_text(tiny_suite.read_text().replace('quantizer = "drifting"', 'quantizer = "cosine-vq"'))
    assert main(["run", str(suite), *common]) == 2
    err = capsys.readouterr().err
    assert f"{suite}:" in err and expected in err and "did you mean" not in err  # file:line, then why

    with pytest.raises(PluginLoadError, match="plugin harness-cosine failed to load"):
        QuantizerCase("cosine-vq").cls  # noqa: B018 - what a conformance test does first

    # a hook plugin that failed before registering: its name (scaffold naming) is tied to it
    assert main(["run", str(tiny_suite), "-q", "lfq2", *common]) == 2
    err = capsys.readouterr().err
    assert "plugin harness_lfq2 failed to load: ImportError: lfq2 needs CUDA" in err
    assert "did you mean" not in err


def test_a_distributions_entry_points_are_blocked_by_its_name(broken_site, monkeypatch):
    monkeypatch.setenv("HARNESS_DISABLE_PLUGINS", "harness_cosine")  # compared as pip compares names
    host = build_host()
    assert "cosine-vq" not in host.quantizers.names() and "harness-cosine" in host.disabled
    assert {"name": "harness-cosine", "status": "disabled"}.items() <= next(
        r for r in host.plugins() if r["name"] == "harness-cosine").items()
    monkeypatch.delenv("HARNESS_DISABLE_PLUGINS")
    assert build_host().quantizers.get("harness-cosine:cosine-vq").lazy  # the qualifier: its distribution

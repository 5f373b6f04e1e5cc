"""`harness new quantizer`: bad names, no overwrites, and the whole road to the leaderboard.

The end-to-end test installs the generated package for real (``pip install -e``)
into a throw-away virtual environment layered over this one, so the shared
environment never sees the probe plugin, then drives the three README commands
and the generated tests as a new user would.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import site
import subprocess
import sys
from pathlib import Path

import pytest

from harness.commands.cli import main
from harness.commands.scaffold import (
    PluginNames,
    default_harness_source,
    render,
    scaffold_quantizer,
)
from harness.errors import UsageError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@pytest.mark.parametrize("name", ["", "MyVQ", "my vq", "9lives", "my--vq", "-vq", "vq-", "naïve",
                                  "class", "x" * 41])
def test_bad_names_exit_2_with_the_rule(name, tmp_path, capsys):
    assert main(["new", "quantizer", "--dir", str(tmp_path / "pkg"), "--", name]) == 2
    err = capsys.readouterr().err
    assert "bad quantizer name" in err
    assert not (tmp_path / "pkg").exists()


def test_a_registered_name_is_refused_naming_its_owner(tmp_path, capsys):
    assert main(["new", "quantizer", "drifting", "--dir", str(tmp_path / "pkg")]) == 2
    assert "already registered by quantizers (vq-harness" in capsys.readouterr().err


def test_an_existing_folder_is_never_overwritten(tmp_path, capsys):
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "mine.py").write_text("keep me\n")
    assert main(["new", "quantizer", "my-vq", "--dir", str(folder)]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["mine.py"]
    assert (folder / "mine.py").read_text() == "keep me\n"


def test_names_derive_distribution_import_and_class():
    names = PluginNames.from_name("cosine_vq-2")
    assert names == PluginNames("cosine_vq-2", "harness-cosine-vq-2", "harness_cosine_vq_2",
                                "CosineVq2Quantizer")


def test_generated_files_are_valid_and_wired(tmp_path):
    folder = scaffold_quantizer("my-vq", tmp_path / "pkg", check_registry=False)
    names = PluginNames.from_name("my-vq")
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == sorted(
        render(names))
    meta = tomllib.loads((folder / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "harness-my-vq"
    assert meta["project"]["entry-points"]["harness"] == {"harness_my_vq": "harness_my_vq"}
    for path in folder.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")  # every generated module parses
    quantizer = (folder / "src/harness_my_vq/quantizer.py").read_text()
    assert 'name = "my-vq"' in quantizer and "nearest_code" in quantizer
    # the base class's float32 template calls quantize(); overriding forward() would bypass it
    assert "def quantize(self, z: Tensor)" in quantizer and "def forward(" not in quantizer
    assert 'quantizer = "my-vq"' in (folder / "tests/test_conformance.py").read_text()
    readme = (folder / "README.md").read_text()
    for command in ('pip install -e ".[test]"', "harness run toy2d -q my-vq --profile smoke",
                    "harness leaderboard toy2d --profile smoke"):
        assert command in readme
    ignored = (folder / ".gitignore").read_text().splitlines()
    assert {"mlflow.db", "mlartifacts/", "mlruns/", ".harness/", "__pycache__/", "*.pt"} <= set(ignored)


def test_the_harness_dependency_resolves_somewhere(tmp_path, monkeypatch):
    """No index serves vq-harness: the default is where this harness came from (its git checkout
    here); the option and env var choose another."""
    monkeypatch.delenv("HARNESS_SOURCE", raising=False)

    def dependency(folder, **kwargs):
        scaffold_quantizer("my-vq", tmp_path / folder, check_registry=False, **kwargs)
        return tomllib.loads((tmp_path / folder / "pyproject.toml").read_text())["project"]["dependencies"][0]

    here = default_harness_source()
    assert here.startswith("git+") and dependency("a") == f"vq-harness @ {here}"
    assert dependency("b", harness_source="git+https://example.org/me/vq-harness.git@v0.2") == (
        "vq-harness @ git+https://example.org/me/vq-harness.git@v0.2")
    wheel = tmp_path / "vq_harness-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert dependency("c", harness_source=str(wheel)) == f"vq-harness @ {wheel.resolve().as_uri()}"
    monkeypatch.setenv("HARNESS_SOURCE", "vq-harness>=0.2")
    assert dependency("d") == "vq-harness>=0.2"
    with pytest.raises(UsageError, match="neither a requirement"):
        scaffold_quantizer("my-vq", tmp_path / "e", check_registry=False, harness_source="no/such/thing")
    assert not (tmp_path / "e").exists()  # a bad source writes nothing


# -- the whole road, for real ------------------------------------------------------------

NAME = "authoring-probe"
DIST = "harness-authoring-probe"


def _layered_venv(folder: Path) -> Path:
    """A venv whose site-packages chain to this environment's (with their .pth files).

    ``--system-site-packages`` would miss this environment when it is itself a venv.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    parents = [p for p in [*site.getsitepackages(), site.getusersitepackages()] if Path(p).is_dir()]
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in parents)
    (Path(purelib) / "_parent_environment.pth").write_text(lines)
    return python


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(argv)} -> {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def test_scaffold_install_run_rank_and_generated_tests_pass(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "HARNESS_DISABLE_PLUGINS") and not k.startswith("PYTEST_")}
    env["MPLBACKEND"] = "Agg"
    package = tmp_path / DIST
    assert main(["new", "quantizer", NAME, "--dir", str(package)]) == 0
    python = str(_layered_venv(tmp_path / "venv"))
    harness = [python, "-m", "harness.commands.cli"]

    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(package)],
         tmp_path, env)

    listing = json.loads(_run([*harness, "list", "quantizers", "--json"], tmp_path, env).stdout)
    mine = [q for q in listing["quantizers"] if q["name"] == NAME]
    assert len(mine) == 1, listing["quantizers"]
    assert (mine[0]["distribution"], mine[0]["version"]) == (DIST, "0.1.0")
    assert mine[0]["summary"]  # the docstring's first line
    # the generated README's switch: the plugin is blocked before it is imported
    blocked = json.loads(_run([*harness, "plugins", "--json"], tmp_path,
                              {**env, "HARNESS_DISABLE_PLUGINS": "harness_authoring_probe"}).stdout)
    assert {"name": "harness_authoring_probe", "status": "disabled"}.items() <= next(
        r for r in blocked if r["name"] == "harness_authoring_probe").items()

    # the README's run command (fewer steps: the road is the same, the clock is shorter)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = _run([*harness, "run", "toy2d", "-q", NAME, "--profile", "smoke", "--seeds", "1",
                "--set", "train.steps=100", "--no-progress", "--tracking-uri", uri], tmp_path, env)
    assert f"{NAME}-K2-d2-s0" in run.stdout and f"{NAME}-K10-d2-s0" in run.stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("toy2d")
    cells = client.search_runs([experiment.experiment_id], "tags.`harness.kind` = 'cell'")
    assert sorted(r.info.run_name for r in cells) == [f"{NAME}-K10-d2-s0", f"{NAME}-K2-d2-s0"]
    assert {r.info.status for r in cells} == {"FINISHED"}
    assert {(r.data.tags["harness.plugin_distribution"], r.data.tags["harness.plugin_version"])
            for r in cells} == {(DIST, "0.1.0")}

    board = _run([*harness, "leaderboard", "toy2d", "--profile", "smoke", "--format", "csv",
                  "--tracking-uri", uri], tmp_path, env).stdout
    rows = [r for r in csv.DictReader(io.StringIO(board)) if r["status"] == "ok"]
    assert sorted((r["method"], r["codebook_size"], r["n"]) for r in rows) == [
        (NAME, "10", "1"), (NAME, "2", "1")]
    assert all(r["utilization_mean"] for r in rows)

    tests = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], package, env)
    assert " passed" in tests.stdout and "failed" not in tests.stdout


def test_an_editable_harness_is_kept_by_the_printed_install_step(tmp_path, capsys, monkeypatch):
    """A URL dependency makes `pip install -e ".[test]"` swap an editable harness for the git one:
    beside an editable harness, `harness new` prints the --no-deps install and says why."""
    from harness.commands.scaffold import editable_checkout, editable_warning

    monkeypatch.delenv("HARNESS_SOURCE", raising=False)
    checkout = editable_checkout()
    if checkout is None:
        pytest.skip("the harness is not an editable install here")
    assert main(["new", "quantizer", "my-vq", "--dir", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert "next: cd" in out and "pip install --no-deps -e ." in out and '".[test]"' not in out
    assert f"editable install of {checkout}" in err and "--no-deps" in err
    assert "pip install --no-deps -e ." in (tmp_path / "a/README.md").read_text()
    assert main(["new", "quantizer", "my-vq", "--dir", str(tmp_path / "b"), "--harness-source", "vq-harness"]) == 0
    out, err = capsys.readouterr()
    assert 'pip install -e ".[test]"' in out and "editable" not in err  # a bare name keeps any harness
    assert editable_warning("vq-harness>=0.1") is None


def test_the_printed_install_step_keeps_an_editable_harness(tmp_path):
    """In a venv whose harness is an editable checkout, the `next:` line's pip step installs the
    package and leaves that checkout installed as it was: pip's dry-run report first, then for real."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k not in (
        "MLFLOW_TRACKING_URI", "HARNESS_DISABLE_PLUGINS", "HARNESS_SOURCE")}
    python = str(_layered_venv(tmp_path / "venv"))
    origin = ("from importlib.metadata import distribution; "
              "print(distribution('vq-harness').read_text('direct_url.json'))")
    before = _run([python, "-c", origin], tmp_path, env).stdout
    if not json.loads(before).get("dir_info", {}).get("editable"):
        pytest.skip("the harness is not an editable install here")
    new = _run([python, "-m", "harness.commands.cli", "new", "quantizer", "keep-vq", "--dir", "pkg"], tmp_path, env)
    [line] = [x for x in new.stdout.splitlines() if x.startswith("next: ")]
    steps = line.removeprefix("next: ").split(" && ")
    assert steps[0] == "cd pkg" and steps[-1] == "harness run toy2d -q keep-vq --profile smoke"
    installs = [shlex.split(s) for s in steps if s.startswith("pip install")]
    assert installs
    offline = ["--no-build-isolation", "--no-index"]  # nothing may be fetched: all it needs is here
    for argv in installs:
        report = tmp_path / "report.json"
        _run([python, "-m", *argv, *offline, "--dry-run", "--report", str(report)], tmp_path / "pkg", env)
        assert [i["metadata"]["name"] for i in json.loads(report.read_text())["install"]] == ["harness-keep-vq"]
        _run([python, "-m", *argv, *offline], tmp_path / "pkg", env)
    assert _run([python, "-c", origin], tmp_path, env).stdout == before  # the same editable checkout
    listing = json.loads(_run([python, "-m", "harness.commands.cli", "list", "quantizers", "--json"],
                              tmp_path, env).stdout)
    assert [q["distribution"] for q in listing["quantizers"] if q["name"] == "keep-vq"] == ["harness-keep-vq"]


def test_rescaffolding_an_existing_folder_says_what_to_do(tmp_path, capsys):
    folder = tmp_path / "pkg"
    assert main(["new", "quantizer", "my-vq", "--dir", str(folder)]) == 0
    before = {p: p.read_text() for p in folder.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["new", "quantizer", "my-vq", "--dir", str(folder), "--harness-source", "vq-harness"]) == 2
    err = capsys.readouterr().err
    assert f"{folder} already exists" in err and "never overwrites" in err
    assert f"{folder / 'pyproject.toml'}" in err and f"rm -r {folder}" in err and "--dir" in err
    assert {p: p.read_text() for p in folder.rglob("*") if p.is_file()} == before

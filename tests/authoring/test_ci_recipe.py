"""docs/ci.md's recipe for a plugin package, end to end: the harness comes from its git repository.

The scaffold is written with ``--harness-source git+file://<a clone of this repository>``
(docs/ci.md uses the https URL of the same repository), installed with the recipe's
``pip install -e ".[test]"`` into a throw-away venv layered over this environment, and
then checked the way its CI would: the harness it imports is the one pip built from
git, its tests pass, the suite route runs its quantizer, and everything those wrote
is covered by the package's .gitignore.

Offline on purpose: ``PIP_NO_INDEX`` (every other dependency is already in the
parent environment) and ``--no-build-isolation`` (setuptools from this
environment, not downloaded); the recipe is otherwise the documented one.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import harness
from harness.commands.scaffold import PluginNames, scaffold_quantizer
from tests.authoring.test_scaffold import _layered_venv, _run

NAME = "ci-probe"
REPO = Path(harness.__file__).resolve().parents[1]


def _git(*argv: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=ci", "-c", "user.email=ci@example.invalid", *argv],
                          cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def harness_git_url(tmp_path) -> str:
    """A clone of this repository (its committed HEAD), as the git URL pip installs from."""
    if not (REPO / ".git").exists():
        pytest.skip("the harness is not a git checkout here (installed from a wheel or sdist)")
    clone = tmp_path / "vq-harness.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(REPO), str(clone)], check=True)
    # file://localhost/...: pip before 24 rejects a git+file:/// URL without a host
    return f"git+file://localhost{clone.as_posix()}"


def test_the_ci_recipe_installs_the_harness_from_git_and_the_package_passes(tmp_path, harness_git_url):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "HARNESS_DISABLE_PLUGINS", "HARNESS_SOURCE")
           and not k.startswith("PYTEST_")}
    env.update(MPLBACKEND="Agg", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    package = scaffold_quantizer(NAME, tmp_path / "harness-ci-probe", check_registry=False,
                                 harness_source=harness_git_url)
    assert f'"vq-harness @ {harness_git_url}"' in (package / "pyproject.toml").read_text()
    _git("init", "-q", cwd=package)
    _git("add", ".", cwd=package)
    _git("commit", "-q", "-m", "scaffold", cwd=package)
    python = str(_layered_venv(tmp_path / "venv"))

    # docs/ci.md: pip install -e ".[test]" (the dependency on vq-harness resolves from git)
    _run([python, "-m", "pip", "install", "-q", "--no-build-isolation", "-e", ".[test]"], package, env)
    probe = _run([python, "-c", "import json, harness, importlib.metadata as m; "
                  "d = m.distribution('vq-harness'); "
                  "print(json.dumps([harness.__file__, json.loads(d.read_text('direct_url.json'))]))"],
                 tmp_path, env)
    location, direct_url = json.loads(probe.stdout)
    assert Path(location).is_relative_to(tmp_path / "venv"), location  # not this checkout
    assert direct_url["url"].endswith("/vq-harness.git") and direct_url["vcs_info"]["vcs"] == "git"

    listing = json.loads(_run([python, "-m", "harness.commands.cli", "list", "quantizers", "--json"], tmp_path,
                              env).stdout)
    assert [q["distribution"] for q in listing["quantizers"] if q["name"] == NAME] == [
        PluginNames.from_name(NAME).distribution]

    # docs/ci.md: pytest (the conformance kit), then the suite route with the package's quantizer
    tests = _run([python, "-m", "pytest", "-q"], package, env)
    assert " passed" in tests.stdout and "failed" not in tests.stdout
    suite = _run([python, "-m", "pytest", "-q", "--harness-suite", "toy2d", "--harness-method", NAME,
                  "--harness-seeds", "1", "--harness-set", "train.steps=50", "-n", "0"], package, env)
    assert "2 passed" in suite.stdout, suite.stdout[-2000:]
    assert (package / "mlflow.db").exists()  # the store landed in the package folder ...
    assert _git("status", "--porcelain", "--untracked-files=all", cwd=package) == ""  # ... and is ignored

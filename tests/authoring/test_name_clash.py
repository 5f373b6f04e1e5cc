"""A name two installed plugins register: never resolved silently, and a package tests its own code.

Two real distributions are installed (``pip install -e``) into a throw-away virtual
environment layered over this one: ``harness-ibq`` registers ``ibq`` (the built-in's
name, with a parameter the built-in lacks) and ``twin`` through ``harness.quantizers``
entry points; ``harness-other`` registers ``twin`` through a hook. The package's own
tests and its own suite must run its ``ibq``; elsewhere the console says which claimant
a bare name took and how to write the other.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

from harness.testing.sandbox import TINY_SUITE
from tests.authoring.test_scaffold import _layered_venv, _run

IBQ_PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "harness-ibq"
version = "0.2.0"

[project.entry-points."harness.quantizers"]
ibq = "harness_ibq.quantizer:IBQ"
twin = "harness_ibq.quantizer:Twin"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""

IBQ_MODULE = '''\
from harness.plugins.quantizers.vq import VectorQuantizer


class IBQ(VectorQuantizer):
    """The package's own ibq: nearest code with a temperature the built-in does not take."""

    name = "ibq"
    paper = "a test package"

    def __init__(self, dim, codebook_size, tau=1.0, beta=0.25):
        super().__init__(dim, codebook_size, beta=beta)
        self.tau = tau


class Twin(VectorQuantizer):
    """harness-ibq's twin."""

    name = "twin"
'''

IBQ_TESTS = '''\
from harness.testing import QuantizerCase, QuantizerConformance


class TestIBQ(QuantizerConformance):
    quantizer = "ibq"
    params = {"tau": 0.5}
    train_steps = 10


def test_the_bare_name_is_this_package():
    assert QuantizerCase("ibq").cls.__module__ == "harness_ibq.quantizer"
    assert QuantizerCase("twin").cls.__module__ == "harness_ibq.quantizer"
'''

OTHER_PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "harness-other"
version = "1.0.0"

[project.entry-points.harness]
harness_other = "harness_other"
"""

OTHER_MODULE = '''\
from harness import hookimpl


@hookimpl
def harness_register_quantizers(register):
    register("harness_other.quantizer:Twin", name="twin")
'''

OTHER_QUANTIZER = '''\
from harness.plugins.quantizers.vq import VectorQuantizer


class Twin(VectorQuantizer):
    """harness-other's twin."""

    name = "twin"
'''

CONSOLE = """
from harness.errors import UsageError
from harness.host import get_host
quantizers = get_host().quantizers
print(quantizers.get("ibq").source.distribution)
try:
    quantizers.get("twin")
except UsageError as exc:
    print("error:", exc)
"""


def _write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _packages(tmp_path: Path) -> tuple[Path, Path]:
    suite = TINY_SUITE.replace('name = "sandbox"', 'name = "ibq-own"').replace(
        '[methods.vq]\nquantizer = "vq"', '[methods.ibq]\nquantizer = "ibq"\nparams = { tau = 0.5 }')
    assert 'quantizer = "ibq"' in suite
    ibq = _write(tmp_path / "harness-ibq", {
        "pyproject.toml": IBQ_PYPROJECT, "src/harness_ibq/__init__.py": "",
        "src/harness_ibq/quantizer.py": IBQ_MODULE, "src/harness_ibq/suites/ibq.toml": suite,
        "tests/test_conformance.py": IBQ_TESTS})
    other = _write(tmp_path / "harness-other", {
        "pyproject.toml": OTHER_PYPROJECT, "src/harness_other/__init__.py": OTHER_MODULE,
        "src/harness_other/quantizer.py": OTHER_QUANTIZER})
    (other / "pyproject.toml").write_text(OTHER_PYPROJECT + '\n[tool.setuptools.packages.find]\nwhere = ["src"]\n')
    return ibq, other


def test_a_clash_is_said_and_a_package_tests_and_runs_its_own_code(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k not in (
        "MLFLOW_TRACKING_URI", "HARNESS_DISABLE_PLUGINS", "HARNESS_UNDER_TEST")}
    env["MPLBACKEND"] = "Agg"
    ibq, other = _packages(tmp_path)
    python = str(_layered_venv(tmp_path / "venv"))
    for package in (ibq, other):
        _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(package)],
             tmp_path, env)

    # the package's own tests: its ibq (the built-in takes no `tau`), and the output says so
    tests = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"], ibq, env)
    out = tests.stdout
    assert " passed" in out and "failed" not in out
    assert "harness: distribution under test: harness-ibq" in out
    assert "'ibq' means 'harness-ibq:ibq' (the distribution under test" in out
    assert "write 'vq-harness:ibq' for the other" in out
    assert "'twin' means 'harness-ibq:twin'" in out and "write 'harness-other:twin' for the other" in out
    assert "NameClashWarning" in out  # pytest's warnings summary, where the lookup happened

    # the package's own suite, run from anywhere: its ibq, said on the console
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = _run([python, "-m", "harness.commands.cli", "run", str(ibq / "src/harness_ibq/suites/ibq.toml"),
                "--profile", "smoke", "--no-progress", "--tracking-uri", uri, "-q", "ibq"], tmp_path, env)
    assert "harness: warning: two plugins register the quantizer 'ibq'" in run.stderr
    assert "'ibq' means 'harness-ibq:ibq'" in run.stderr and "'vq-harness:ibq' for the other" in run.stderr
    tags = _run([python, "-c", textwrap.dedent(f"""
        import json
        from mlflow.tracking import MlflowClient
        client = MlflowClient({uri!r})
        experiment = client.get_experiment_by_name("ibq-own")
        runs = client.search_runs([experiment.experiment_id], "tags.`harness.kind` = 'cell'")
        print(json.dumps([[r.data.tags["harness.plugin_distribution"], r.info.status] for r in runs]))
    """)], tmp_path, env)
    assert json.loads(tags.stdout.strip().splitlines()[-1]) == [["harness-ibq", "FINISHED"]]

    # anywhere else: the built-in, with the warning; two outside claimants: an error naming both
    console = _run([python, "-c", CONSOLE], tmp_path, env)
    assert console.stdout.splitlines()[0] == "vq-harness"
    assert "'ibq' means 'vq-harness:ibq' (the built-in); write 'harness-ibq:ibq' for the other" in console.stderr
    error = console.stdout.splitlines()[1]
    assert "two plugins register the quantizer 'twin'" in error
    assert "'harness-ibq:twin'" in error and "'harness-other:twin'" in error and "to choose" in error

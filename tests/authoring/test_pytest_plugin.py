"""`pytest --harness-suite`: cells and claims as test items, one store, the same leaderboard.

The parallel test runs pytest in a subprocess with two xdist workers on a tiny
suite and checks the store afterwards: every cell recorded once, all under one
parent run, claims judged, and `harness leaderboard` equal to the one built from
`harness run` of the same suite in a separate store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch  # noqa: F401 - imported before any in-process run (the pytester fixture below says why)
from mlflow.tracking import MlflowClient

from harness.host import get_host

pytest_plugins = ["pytester"]

SUITE = """
[suite]
name = "authoring-tiny"
version = 1
primary_metric = "utilization"

[dataset]
name = "two-clusters"
params = { n_train = 256, n_val = 128 }

[model]
name = "linear2d"

[train]
steps = 10
batch_size = 64
lr = 1e-2
log_every = 5

[eval]
metrics = ["mse", "utilization"]

[methods.vq]
quantizer = "vq"

[methods.drifting]
quantizer = "drifting"

[matrix]
codebook_size = [4]
dim = [2]
seeds = 2

[[claims]]
id = "drifting-uses-codes"
text = "drifting uses at least one code"
where = { method = "drifting" }
metric = "utilization"
aggregate = "min"
op = ">"
value = 0.0

[[claims]]
id = "vq-impossible"
text = "utilization above 1 cannot happen: this claim must fail"
where = { method = "vq" }
metric = "utilization"
aggregate = "max"
op = ">"
value = 1.0

[[claims]]
id = "mse-report"
text = "the reconstruction error, reported"
where = {}
metric = "mse"
aggregate = "mean"
op = "<"
value = 1.0
kind = "report"
"""

CELLS = ["drifting-K4-d2-s0", "drifting-K4-d2-s1", "vq-K4-d2-s0", "vq-K4-d2-s1"]
CLAIMS = ["drifting-uses-codes", "vq-impossible", "mse-report"]


def _env() -> dict[str, str]:
    # a clean slate: no store or plugin switches, no outer pytest(-xdist) settings
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "HARNESS_DISABLE_PLUGINS") and not k.startswith("PYTEST_")}
    env["MPLBACKEND"] = "Agg"
    return env


def test_plugin_import_is_cheap():
    code = ("import sys, harness.testing.pytest_plugin; "
            "heavy = [m for m in ('torch', 'mlflow', 'harness.plugins') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())


@pytest.fixture
def pytester(pytester: pytest.Pytester) -> pytest.Pytester:
    """In-process runs drop the modules they import first; load the plugins before. Torch is
    imported with this module, before pytester's snapshot of ``sys.modules``: collecting a suite
    imports torch, numpy and the Cython runtime SQLAlchemy's compiled modules share, and those,
    dropped and imported again, crashed this process in a later MLflow client's garbage collection."""
    get_host()
    return pytester


def test_collection_is_cells_in_suite_order_then_claims(pytester: pytest.Pytester):
    pytester.makefile(".toml", tiny=SUITE)
    pytester.makepyfile(test_other="def test_other():\n    pass\n")
    result = pytester.runpytest("--harness-suite", "tiny.toml", "--collect-only", "-q", "-p", "no:cacheprovider")
    ids = [line for line in result.outlines if line.startswith("harness:")]
    assert ids == [f"harness:tiny.toml::{c}" for c in ["vq-K4-d2-s0", "vq-K4-d2-s1", "drifting-K4-d2-s0",
                                                       "drifting-K4-d2-s1"]] + [
        f"harness:tiny.toml::claim:{c}" for c in CLAIMS]
    # the suite alone: the folder's own tests are not collected unless named
    assert not any("test_other" in line for line in result.outlines)
    result = pytester.runpytest("--harness-suite", "tiny.toml", "test_other.py", "--collect-only", "-q",
                                "-p", "no:cacheprovider")
    assert any("test_other.py::test_other" in line for line in result.outlines)
    assert not (pytester.path / "mlflow.db").exists()  # collecting records nothing


def test_unknown_suite_is_a_usage_error_with_close_matches(pytester: pytest.Pytester):
    result = pytester.runpytest("--harness-suite", "toy2", "--collect-only", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "did you mean 'toy2d'" in result.stderr.str()


def _junit(path: Path) -> dict[str, str]:
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        status = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                status = child.tag
        outcomes[case.get("name")] = status
    return outcomes


def test_suite_runs_on_two_workers_into_one_store(tmp_path: Path):
    (tmp_path / "tiny.toml").write_text(SUITE)
    (tmp_path / "conftest.py").write_text(  # each worker says, as it exits, whether it was frozen
        "import atexit, gc, os\n"
        "def pytest_configure(config):\n"
        "    if hasattr(config, 'workerinput'):\n"
        "        atexit.register(lambda: open(f'exit-{os.getpid()}.txt', 'w').write(str(gc.get_freeze_count() > 0)))\n")
    uri = f"sqlite:///{tmp_path / 'pytest.db'}"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--rootdir", str(tmp_path),
         "--harness-suite", "tiny.toml", "--harness-tracking-uri", uri, "-n", "2",
         "--junitxml", str(tmp_path / "report.xml")],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stdout[-4000:] + out.stderr[-2000:]  # the impossible claim
    assert "database is locked" not in out.stdout + out.stderr
    outcomes = _junit(tmp_path / "report.xml")
    assert outcomes == {**dict.fromkeys(CELLS, "passed"), "claim:drifting-uses-codes": "passed",
                        "claim:mse-report": "passed", "claim:vq-impossible": "failure"}, outcomes
    assert "claim vq-impossible does not hold" in out.stdout
    # the controller kept each cell's duration for the next session's longest-first order
    durations = json.loads((tmp_path / ".pytest_cache" / "v" / "vq-harness" / "durations").read_text())
    assert sorted(durations) == sorted(f"harness:tiny.toml::{c}" for c in CELLS)
    assert all(seconds > 0 for seconds in durations.values())
    # the workers exited without the final garbage collection (harness.testing.pytest_plugin._FrozenExit)
    assert sorted(p.read_text() for p in tmp_path.glob("exit-*.txt")) == ["True", "True"]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("authoring-tiny")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("harness.kind") == "suite"]
    cells = [r for r in runs if r.data.tags.get("harness.kind") == "cell"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in cells) == CELLS  # each cell once, none lost
    assert {r.info.status for r in cells} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in cells} == {parents[0].info.run_id}
    tags = parents[0].data.tags
    assert (tags["harness.claim.drifting-uses-codes"], tags["harness.claim.vq-impossible"],
            tags["harness.claim.mse-report"]) == ("holds", "FAILS", "reported")

    # the same suite through `harness run`, into its own store: the same leaderboard
    reference = f"sqlite:///{tmp_path / 'run.db'}"
    run = subprocess.run([sys.executable, "-m", "harness.commands.cli", "run", "tiny.toml", "--profile", "smoke",
                          "--no-progress", "--tracking-uri", reference],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 1 and "vq-impossible" in run.stderr, run.stderr[-2000:]

    def board(store: str) -> str:
        out = subprocess.run([sys.executable, "-m", "harness.commands.cli", "leaderboard", "authoring-tiny",
                              "--format", "csv", "--tracking-uri", store],
                             cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout

    from_pytest = board(uri)
    assert len(from_pytest.strip().splitlines()) == 3  # header + vq + drifting
    assert from_pytest == board(reference)

"""The executor seam: built-ins through the entry-point group, option checking, the layers that
choose an executor, cell specs, record_lost, and real runs on ``local``, ``processes`` and ``--jobs``."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest
from mlflow.tracking import MlflowClient

from harness.commands.cli import main
from harness.errors import HarnessError, SuiteError, UsageError
from harness.host import build_host, get_host
from harness.plugins.executors.processes import ProcessesExecutor, cores
from harness.run.executors import (
    Executor,
    ProcessTracker,
    build_executor,
    check_tracking_uri,
    load_cell,
    record_lost,
)
from harness.run.options import RunOptions, executor_choice
from harness.run.specs import cell_specs
from harness.suite import load_suite


def runs_of(uri: str, experiment: str = "tiny", kind: str = "cell") -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], f"tags.`harness.kind` = '{kind}'") if exp else []


def test_builtin_executors_are_plugins_of_the_entry_point_group(capsys):
    assert main(["list", "executors", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["executors"]}
    assert {"local", "processes"} <= set(rows)
    assert {rows[n]["distribution"] for n in ("local", "processes")} == {"vq-harness"}
    assert {rows[n]["plugin"] for n in ("local", "processes")} == {"executors"}  # the entry point's name


@pytest.mark.parametrize("argv, needle", [
    (["--executor", "proceses"], "did you mean 'processes'"),
    (["--executor-option", "jbos=2"], "did you mean 'jobs'"),
    (["--executor-option", "jobs=two"], "jobs must be int"),
    (["--executor-option", "jobs"], "KEY=VALUE"),
    (["--executor", "local", "--jobs", "2"], "--jobs runs the processes executor"),
])
def test_bad_executor_input_exits_2_before_anything_is_recorded(argv, needle, tiny_suite, workdir, capsys):
    assert main(["run", str(tiny_suite), "--no-progress", *argv]) == 2
    assert needle in capsys.readouterr().err
    assert not (workdir / "mlflow.db").exists()


class FakeRemote(Executor):
    """Pretends to send cells to other machines (never runs)."""

    name: ClassVar[str] = "fake-remote"
    remote: ClassVar[bool] = True
    option_types: ClassVar[dict[str, type]] = {"partition": str}


def test_a_remote_executor_refuses_a_local_store_unless_forced():
    import types

    from harness import hookimpl

    plugin = types.ModuleType("fake_remote")
    plugin.harness_register_executors = hookimpl(lambda register: register(FakeRemote))  # type: ignore[attr-defined]
    host = build_host(extra_plugins={"fake": plugin})
    executor = build_executor(host, "fake-remote", {"partition": "gpu"})
    with pytest.raises(UsageError, match="other machines"):
        check_tracking_uri(executor, "sqlite:////tmp/mlflow.db")
    check_tracking_uri(executor, "http://127.0.0.1:5000")
    forced = build_executor(host, "fake-remote", {"allow_sqlite": "true"})
    assert forced.options == {"allow_sqlite": True}
    check_tracking_uri(forced, "sqlite:////nfs/team/mlflow.db")
    with pytest.raises(UsageError, match="did you mean 'partition'"):
        build_executor(host, "fake-remote", {"partiton": "gpu"})


def test_executor_layers_suite_then_harness_toml_then_jobs_then_the_command_line(workdir):
    suite = {"name": "processes", "options": {"jobs": 2, "watchdog": 60}}
    assert executor_choice(None, RunOptions()) == ("processes", {})
    assert executor_choice(suite, RunOptions()) == ("processes", {"jobs": 2, "watchdog": 60})
    assert executor_choice(suite, RunOptions(jobs=3)) == ("processes", {"jobs": 3, "watchdog": 60})
    assert executor_choice(suite, RunOptions(jobs=1)) == ("processes", {"jobs": 1, "watchdog": 60})
    (workdir / "harness.toml").write_text('[executor]\nname = "local"\n')
    assert executor_choice(suite, RunOptions()) == ("local", {})  # this machine's choice wins
    assert executor_choice(suite, RunOptions(executor="processes", executor_options={"jobs": "4"})) == (
        "processes", {"jobs": "4"})
    (workdir / "harness.toml").write_text('[executor]\nname = "local"\nopts = {}\n')
    with pytest.raises(SuiteError, match=r"harness.toml:3: unknown key 'executor.opts'; did you mean 'options'"):
        executor_choice(None, RunOptions())


def test_processes_gives_each_worker_its_share_of_the_cores():
    assert ProcessesExecutor().threads == cores()
    assert ProcessesExecutor(jobs=2).threads == max(1, cores() // 2)
    assert ProcessesExecutor(jobs=2, threads=cores()).threads == cores()  # an explicit count wins
    with pytest.raises(UsageError, match="threads must be between 1 and"):
        ProcessesExecutor(jobs=2, threads=cores() + 1)  # more than the cores: refused (robustness.md)
    with pytest.raises(UsageError):
        ProcessesExecutor(jobs=0)


def test_specs_rebuild_the_same_cells_from_their_data_without_the_file(tiny_suite):
    suite = load_suite(str(tiny_suite), "smoke", overrides=["train.lr=0.5", "dataset.params.n_train=128"],
                       seeds=3)
    cells = suite.cells(["vq"])
    specs = cell_specs(suite, [(c, None) for c in cells], "parent", "sqlite:////x.db", {})
    tiny_suite.unlink()  # the worker never reads the file: the resolved suite travels in the spec
    specs = pickle.loads(pickle.dumps(specs))  # plain data, as multiprocessing, submitit and Ray send it
    rebuilt = [load_cell(s) for s in specs]
    assert [s.cell_hash for s in specs] == [c.config_hash for _, c in rebuilt] == [c.config_hash for c in cells]
    assert [c.config for _, c in rebuilt] == [c.config for c in cells]
    assert rebuilt[0][0].origins[("train", "lr")] == "--set train.lr=0.5"  # errors still name the option
    assert rebuilt[0][0].locator.line(("train", "lr")) == suite.locator.line(("train", "lr"))
    assert Path(specs[0].suite).is_absolute() and specs[0].suite_name == "tiny"


@pytest.mark.parametrize("tamper", [
    lambda spec: spec.suite_data["data"]["train"].update(lr=0.9) or spec,
    lambda spec: replace(spec, cell_key=("vq", 4, 2, 1)),
    lambda spec: spec.suite_data["data"].pop("train") and spec,
], ids=["changed value", "other cell", "malformed"])
def test_a_spec_whose_data_no_longer_gives_its_hash_is_refused(tiny_suite, tamper):
    suite = load_suite(str(tiny_suite), "smoke")
    [spec] = cell_specs(suite, [(suite.cells(["vq"])[0], None)], "parent", "sqlite:////x.db", {})
    spec = tamper(spec)
    with pytest.raises(HarnessError, match=r"vq-K4-d2-s0: (the suite data in its CellSpec gives config hash "
                                           r"\w+, not the spec's|its CellSpec carries no usable suite data)"):
        load_cell(spec)


def test_record_lost_closes_the_cells_run_or_creates_one(tiny_suite, tracking_uri):
    suite = load_suite(str(tiny_suite), "smoke")
    tracker = ProcessTracker(tracking_uri)
    parent = tracker.start_run("tiny", "tiny-smoke", {"harness.kind": "suite"})
    a, b, c = suite.cells(["vq", "drifting"])[:3]
    specs = cell_specs(suite, [(a, None), (b, None), (c, None)], parent, tracking_uri, {})
    from harness.cell.record import cell_tags
    from harness.cell.runner import resolve_device

    running = tracker.start_run("tiny", b.run_name, cell_tags(get_host(), suite, b, resolve_device("cpu")),
                                parent=parent)
    done = tracker.start_run("tiny", c.run_name, cell_tags(get_host(), suite, c, resolve_device("cpu")),
                             parent=parent)
    tracker.end_run(done, "FINISHED")

    created = record_lost(specs[0], "FAILED", "the worker process exited with code 1", "/logs/a.log")
    assert record_lost(specs[1], "KILLED", "node lost") == running
    assert record_lost(specs[2], "FAILED", "too late") == done

    runs = {r.info.run_id: r for r in runs_of(tracking_uri)}
    assert runs[created].info.status == "FAILED" and runs[created].info.run_name == a.run_name
    assert runs[created].data.tags["harness.error"] == "the worker process exited with code 1"
    assert runs[created].data.tags["harness.log"] == "/logs/a.log"
    assert runs[created].data.tags["harness.config_hash"] == a.config_hash
    assert runs[created].data.tags["mlflow.parentRunId"] == parent
    assert runs[running].info.status == "KILLED" and runs[running].data.tags["harness.error"] == "node lost"
    assert runs[done].info.status == "FINISHED" and "harness.error" not in runs[done].data.tags


def test_cells_run_in_workers_by_default_and_inline_with_local(tiny_suite, tracking_uri):
    """--jobs 2: two worker processes, neither the control process; local: the control process."""
    args = ["run", str(tiny_suite), "--profile", "smoke", "-q", "vq", "--no-progress"]
    assert main([*args, "--jobs", "2"]) == 0
    [parent] = runs_of(tracking_uri, kind="suite")
    workers = {r.data.tags["harness.pid"] for r in runs_of(tracking_uri)}
    assert len(workers) == 2 and parent.data.tags["harness.pid"] not in workers
    assert parent.data.tags["harness.executor"] == "processes"

    assert main([*args, "--executor", "local", "--seeds", "1"]) == 0
    local = next(r for r in runs_of(tracking_uri, kind="suite") if r.data.tags["harness.executor"] == "local")
    cells = [r for r in runs_of(tracking_uri) if r.data.tags["mlflow.parentRunId"] == local.info.run_id]
    assert [r.data.tags["harness.pid"] for r in cells] == [local.data.tags["harness.pid"]]
    assert {r.info.status for r in runs_of(tracking_uri)} == {"FINISHED"}


@pytest.mark.parametrize("executor", ["local", "processes"])
def test_harness_run_parses_the_suite_once_and_no_worker_reads_it(executor, tiny_suite, tracking_uri, monkeypatch):
    """One parse per `harness run`, whatever the number of cells: the resolved suite travels in each
    CellSpec. The file is deleted once the specs are built, so a worker that read it would fail."""
    from harness.run import specs as specs_module
    from harness.suite import tomlsource

    parsed: list[Path] = []
    load_toml, cell_specs_of = tomlsource.load_toml, specs_module.cell_specs
    monkeypatch.setattr(tomlsource, "load_toml", lambda path: parsed.append(Path(path)) or load_toml(path))

    def specs_then_delete(*args, **kwargs):
        built = cell_specs_of(*args, **kwargs)
        tiny_suite.unlink()
        return built

    monkeypatch.setattr(specs_module, "cell_specs", specs_then_delete)
    assert main(["run", str(tiny_suite), "--profile", "smoke", "-q", "vq", "--no-progress",
                 "--executor", executor]) == 0
    assert not tiny_suite.exists()
    cells = runs_of(tracking_uri)
    assert len(cells) == 2 and {r.info.status for r in cells} == {"FINISHED"}
    assert [p.name for p in parsed] == ["tiny.toml"]


def test_signal_handlers_wait_for_the_end_of_a_store_call():
    """A Ctrl-C inside a store call would abandon an SQLite transaction: it is held until the call ends,
    even with other threads running (where the kernel may deliver it)."""
    import os
    import signal
    import threading
    import time

    from harness.recovery.signals import deferred, guarded

    seen: list[str] = []
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    other.start()
    previous = signal.signal(signal.SIGUSR1, guarded(lambda signum, frame: seen.append("handled")))
    try:
        with deferred():
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(100):  # Python would run an unguarded handler at the next bytecode
                time.sleep(0.001)
            seen.append("call ended")
        assert seen == ["call ended", "handled"]
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.01)
        assert seen[-1] == "handled" and len(seen) == 3  # outside a call: at once
    finally:
        signal.signal(signal.SIGUSR1, previous)
        stop.set()


def test_pytest_items_go_through_the_same_lifecycle_and_isolate_with_processes(tmp_path):
    """`pytest --harness-suite --harness-executor processes`: a cell calling os._exit fails its item only,
    its run is closed FAILED by the same lifecycle as `harness run`, and the parent run ends closed."""
    import os
    import subprocess
    import sys
    import xml.etree.ElementTree as ET

    from tests.conftest import TINY_SUITE
    from tests.executors.evil import install

    site = install(tmp_path / "site")
    evil = '[methods.crash]\nquantizer = "evil-vq"\nparams = { mode = "os_exit" }\n\n'
    (tmp_path / "evil.toml").write_text(TINY_SUITE.replace("[methods.vq]", evil + "[methods.vq]"))
    uri = f"sqlite:///{tmp_path / 'p.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "MLFLOW_TRACKING_URI"}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-n", "0",
         "--harness-suite", "evil.toml", "--harness-method", "crash", "--harness-method", "vq",
         "--harness-seeds", "1", "--harness-tracking-uri", uri, "--harness-executor", "processes",
         "--junitxml", str(tmp_path / "report.xml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    outcomes = {c.get("name"): next((x.tag for x in c if x.tag in ("failure", "error", "skipped")), "passed")
                for c in ET.parse(tmp_path / "report.xml").getroot().iter("testcase")}
    assert outcomes["crash-K4-d2-s0"] == "failure" and outcomes["vq-K4-d2-s0"] == "passed"
    assert "exited with code 1" in done.stdout

    cells = {r.info.run_name: r for r in runs_of(uri)}
    assert cells["crash-K4-d2-s0"].info.status == "FAILED" and cells["vq-K4-d2-s0"].info.status == "FINISHED"
    [parent] = runs_of(uri, kind="suite")
    assert parent.info.status == "FAILED" and parent.data.tags["harness.executor"] == "processes"
    assert parent.data.tags["harness.runner"] == "pytest"


def test_ray_shuts_down_with_its_garbage_collected_first_and_none_collected_during():
    """An ObjectRef freed while Ray stops its core worker ends the process (Ray's quick_exit)."""
    import gc
    import weakref

    from harness.plugins.executors.ray import shutdown

    class Garbage:
        pass

    cycle = Garbage()
    cycle.self = cycle
    freed = weakref.ref(cycle)
    del cycle
    seen: dict[str, bool] = {}

    class FakeRay:
        @staticmethod
        def shutdown() -> None:
            seen["garbage left"] = freed() is not None
            seen["collecting"] = gc.isenabled()

    assert gc.isenabled()
    shutdown(FakeRay)
    assert seen == {"garbage left": False, "collecting": False}
    assert gc.isenabled()

"""Errors a user can act on (issue 21): each test does the user's step for real, in a ``harness``
process, and reads what the user would read."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.robustness.conftest import run as run_bounded


def run(args: list[str], cwd: Path, timeout: float = 900, **env: str) -> tuple[int, str, str]:
    """A real ``harness`` process; the bound only stops a hang (a loaded 2-core CI box is slow)."""
    return run_bounded(args, cwd, timeout=timeout, **env)


def closed_port() -> int:
    """A local port nothing listens on (a stopped tracking server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_leaderboard_against_a_stopped_server_is_one_line(workdir: Path):
    port = closed_port()
    rc, out, err = run(["leaderboard", "toy2d", "--tracking-uri", f"http://127.0.0.1:{port}"], workdir)
    assert rc == 1 and out == ""
    assert err.strip().splitlines() == [
        f"harness: error: cannot reach the MLflow tracking server http://127.0.0.1:{port} (connection "
        "refused). Check that the server is running (`harness server` starts one) and that the host and "
        "port are right, or pass --tracking-uri (or set MLFLOW_TRACKING_URI) to another store"]


def test_ui_on_a_taken_port_exits_non_zero_and_names_a_free_port(workdir: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, out, err = run(["ui", "--port", str(port)], workdir)
        rc_server, _, err_server = run(["server", "--port", str(port)], workdir)
    assert rc == 2 and rc_server == 2
    assert "at http://" not in out  # no address is announced that does not answer
    for text in (err, err_server):
        assert f"harness: error: port {port} on 127.0.0.1 is already in use" in text
        free = int(text.split("pass --port ")[1].split()[0])
        assert free != port
    assert not (workdir / "mlflow.db").exists()  # nothing was started


def test_a_server_that_stops_by_itself_is_a_failure(capsys):
    """The race the port check cannot close (taken between check and bind): still not exit 0."""
    import sys

    from harness.commands.server import serve

    assert serve([sys.executable, "-c", "print('Address already in use')"]) == 1
    assert "the server stopped by itself" in capsys.readouterr().err
    assert serve([sys.executable, "-c", "raise SystemExit(3)"]) == 3


def test_leaderboard_with_no_store_names_where_it_looked(workdir: Path):
    rc, out, _ = run(["leaderboard", "toy2d"], workdir)
    assert rc == 0
    store = f"sqlite:///{(workdir / 'mlflow.db').resolve()}"
    assert (f"no run of suite 'toy2d' is recorded in {store} (no store there yet); `harness run toy2d` "
            "records them there; to read another store pass --tracking-uri URI or set "
            "MLFLOW_TRACKING_URI") in out
    other = workdir / "elsewhere" / "x.db"
    rc, out, _ = run(["leaderboard", "toy2d", "--tracking-uri", f"sqlite:///{other}"], workdir)
    assert rc == 0 and f"recorded in sqlite:///{other} (no store there yet)" in out
    assert not (workdir / "mlflow.db").exists() and not other.parent.exists()  # reading created nothing


def test_ctrl_c_prints_the_exact_resume_command_and_a_wrong_resume_is_refused(workdir: Path, store: str,
                                                                                suite_file):
    import shlex
    import signal

    from tests.conftest import TINY_SUITE
    from tests.robustness.conftest import (
        cell_runs,
        finish,
        interrupt,
        running_cell_with_metric,
        start,
        suite_runs,
        wait_for,
    )

    path = suite_file(TINY_SUITE.replace("train.steps = 10", "train.steps = 1000\ntrain.log_every = 5"))
    args = ["run", str(path), "-q", "vq", "--profile", "smoke", "--seeds", "1", "--no-progress"]
    proc = start(args, workdir)
    wait_for(lambda: running_cell_with_metric(store), "a RUNNING cell with a train metric", proc=proc)
    interrupt(proc, signal.SIGINT)
    rc, _, err = finish(proc)
    assert rc == 130, err
    command = f"harness run {path} -q vq --profile smoke --seeds 1 --no-progress --resume"
    assert f"to continue: {command}" in err

    # --resume without the original --profile smoke: refused, naming what the store holds
    rc, _, err = finish(start(["run", str(path), "-q", "vq", "--seeds", "1", "--resume"], workdir))
    assert rc == 2
    assert (f"--resume matches no recorded cell of suite 'tiny' with profile 'full' (suite version 1) in "
            f"{store}; the store holds profile 'smoke' (suite version 1): 1 unfinished run. To continue "
            "those, pass --profile smoke") in err
    assert len(suite_runs(store)) == 1  # nothing was started

    # the printed command, as printed, continues the cell
    rc, _, err = finish(start(shlex.split(command)[1:], workdir))
    assert rc == 0, err
    resumed = [r for r in cell_runs(store) if r.info.status == "FINISHED"]
    assert len(resumed) == 1 and "harness.resumed_from" in resumed[0].data.tags

    # the same run again without --resume: allowed, but it says what it redoes and how to skip it
    rc, _, err = finish(start(args, workdir))
    assert rc == 0, err
    assert ("harness: note: of the 1 cells of this run (suite 'tiny', profile 'smoke'), 1 already "
            f"finished and 0 were interrupted or failed in {store}; without --resume they run again") in err
    assert "Add --resume to skip the finished ones" in err


TOY2D = Path(__file__).resolve().parents[2] / "harness" / "suites" / "toy2d.toml"


def test_a_metric_typo_in_eval_is_blamed_on_eval_not_on_a_claim(workdir: Path):
    text = TOY2D.read_text()
    old = '"separated", "cluster_codes"]'
    assert old in text, "toy2d's [eval] metrics changed"
    path = workdir / "typo.toml"
    path.write_text(text.replace(old, '"separated", "cluster_code"]'))
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("metrics = ") and old in ln)
    rc, _, err = run(["run", str(path)], workdir)
    assert rc == 2
    assert (f"{path}:{line}: unknown metric 'cluster_code' in [eval] metrics; did you mean "
            "'cluster_codes'?") in err
    assert "claim 'drifting" not in err


def test_bad_command_line_values_name_the_option_not_a_suite_line(workdir: Path):
    cases = [(["--set", "train.steps=-3"], "--set train.steps=-3: train.steps must be positive, got -3"),
             (["--seeds", "0"], "--seeds 0: matrix.seeds must be positive, got 0"),
             (["--seeds", "100000"], "--seeds 100000: matrix.seeds = 100000 is more than 1000 seeds"),
             (["--set", "methods.vq.params.bogus=1"],
              "--set methods.vq.params.bogus=1: unknown parameter of quantizer 'vq' 'bogus'")]
    for extra, message in cases:
        rc, _, err = run(["run", "toy2d", *extra], workdir)
        assert rc == 2 and f"harness: error: {message}" in err, err
        assert "toy2d.toml:" not in err
    assert not (workdir / "mlflow.db").exists()


def test_a_primary_metric_no_cell_records_is_refused_at_load(workdir: Path):
    text = TOY2D.read_text()
    assert 'primary_metric = "utilization"' in text
    path = workdir / "primary.toml"
    path.write_text(text.replace('primary_metric = "utilization"', 'primary_metric = "utilisation"'))
    line = text.splitlines().index('primary_metric = "utilization"') + 1
    for command in (["run", str(path)], ["leaderboard", str(path)]):
        rc, out, err = run(command, workdir)
        assert rc == 2 and out == ""
        assert (f"{path}:{line}: suite.primary_metric 'utilisation' is not recorded by any [eval] metric, so "
                "nothing would be ranked; did you mean 'utilization'?") in err
    assert not (workdir / "mlflow.db").exists()


def test_a_codebook_no_machine_holds_is_refused_before_any_cell(workdir: Path, store: str, tiny):
    from tests.robustness.conftest import cell_runs, suite_runs

    path = tiny()
    text = path.read_text()
    path.write_text(text.replace("codebook_size = [4]", "codebook_size = [1000000000000]"))
    line = text.splitlines().index("codebook_size = [4]") + 1
    rc, _, err = run(["run", str(path), "-q", "vq", "--seeds", "1"], workdir)
    assert rc == 2
    assert (f"{path}:{line}: method 'vq' (quantizer 'vq') at codebook_size 1000000000000, dim 2 needs 8 TB "
            "for its parameters and buffers alone, more than the ") in err
    assert "lower codebook_size or dim" in err and "Traceback" not in err
    # a size the method itself refuses (LFQ: K = 2^bits), given with --set: the option is named
    rc, _, err = run(["run", str(path), "-q", "lfq", "--seeds", "1", "--set", "matrix.codebook_size=[6]"],
                     workdir)
    assert rc == 2
    assert ("--set matrix.codebook_size=[6]: method 'lfq' (quantizer 'lfq') at codebook_size 6, dim 2 cannot "
            "be built: lfq: codebook_size must be a power of two") in err
    assert cell_runs(store) == [] and suite_runs(store) == []  # nothing was started


def test_a_set_value_nested_50000_deep_is_refused_cleanly(workdir: Path):
    deep = "[" * 50_000 + "]" * 50_000
    rc, _, err = run(["run", "toy2d", "--set", f"train.betas={deep}"], workdir)
    assert rc == 2 and "Traceback" not in err and "RecursionError" not in err
    assert "harness: error: --set value [[[[[[[[[[[[[[[[[[[[... is nested too deeply to be a suite value" in err
    rc, _, err = run(["run", "toy2d", "--set", "train.betas=" + "[" * 300 + "]" * 300], workdir)
    assert rc == 2 and "values nested more than 16 levels deep" in err and "toy2d.toml:" not in err


def test_executor_options_and_environment_values_are_range_checked(workdir: Path, tiny, capsys,
                                                                    monkeypatch):
    """The options in-process (the same ``main`` the command runs); the import crash in a real process."""
    import os

    from harness.commands.cli import main

    path = tiny()
    cores = len(os.sched_getaffinity(0))
    cases = [(["--executor-option", "watchdog=nan"],
              "executor processes: option watchdog must be a finite number, got 'nan'"),
             (["--executor-option", "watchdog=-1"], "executor processes: watchdog must be a finite number"),
             (["--executor-option", "threads=-4"],
              f"executor processes: threads must be between 1 and the {cores} cores this process may use"),
             (["--executor-option", "threads=100000"], "(0 or unset: cores / jobs), got 100000"),
             (["--set", "train.threads=100000"],
              "--set train.threads=100000: train.threads must be at most 1024")]
    for extra, message in cases:
        assert main(["run", str(path), "-q", "vq", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err, err
    for value in ("nan", "-5"):
        monkeypatch.setenv("HARNESS_STORE_LOCK_TIMEOUT", value)
        assert main(["run", str(path), "-q", "vq"]) == 2
        assert (f"harness: error: HARNESS_STORE_LOCK_TIMEOUT must be a finite number of seconds >= 0, got "
                f"{value!r}; unset it for the default (120)") in capsys.readouterr().err
    rc, out, _ = run(["list", "suites"], workdir, HARNESS_STORE_LOCK_TIMEOUT="soon")  # import is fine
    assert rc == 0 and "toy2d" in out
    rc, _, err = run(["run", str(path), "-q", "vq"], workdir, HARNESS_STORE_LOCK_TIMEOUT="soon")
    assert rc == 2 and "Traceback" not in err
    assert "HARNESS_STORE_LOCK_TIMEOUT must be a finite number of seconds >= 0, got 'soon'" in err
    assert not (workdir / "mlflow.db").exists()


def _bind_read_only(source: Path, target: Path) -> None:
    """``target``: ``source`` through a read-only bind mount (root ignores chmod, not a ro mount)."""
    import subprocess

    import pytest

    target.mkdir()
    for args in (["mount", "--bind", str(source), str(target)],
                 ["mount", "-o", "remount,bind,ro", str(target)]):
        done = subprocess.run(args, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)
            pytest.skip(f"cannot bind-mount read-only here: {done.stderr.strip()}")


def test_leaderboard_reads_a_store_on_a_read_only_mount(workdir: Path, tiny):
    import subprocess

    from harness.commands.cli import main

    path = tiny()
    store = workdir / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    assert main(["run", str(path), "-q", "vq", "--seeds", "1", "--no-progress", "--tracking-uri", uri,
                 "--executor", "local"]) == 0
    mounted = workdir / "ro"
    _bind_read_only(store, mounted)
    try:
        assert not os_access_w(mounted)
        rc, out, err = run(["leaderboard", str(path), "--tracking-uri", f"sqlite:///{mounted / 'mlflow.db'}"],
                           workdir)
        assert rc == 0, err
        assert "| vq" in out and "No run recorded" not in out and "read-only" not in err
        rc, _, err = run(["leaderboard", str(path), "--tracking-uri", f"sqlite:///{mounted / 'mlflow.db'}",
                          "--format", "html", "--output", str(workdir / "page.html")], workdir)
        assert rc == 0, err
        assert "vq" in (workdir / "page.html").read_text()
    finally:
        subprocess.run(["umount", "-l", str(mounted)], capture_output=True, timeout=30)


def os_access_w(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK)


def test_the_store_lock_is_beside_the_store_and_a_foreign_lock_file_does_not_block(workdir: Path,
                                                                                  monkeypatch):
    """A lock file this process may not write (another user's; here made immutable, since root
    ignores modes) is still locked read-only; a held lock's timeout names the file's owner."""
    import subprocess
    import sys

    import pytest

    from harness.errors import HarnessError
    from harness.tracking import Tracker
    from harness.tracking.store import lock_file
    from tests.robustness.conftest import child_env

    uri = f"sqlite:///{workdir / 'new.db'}"
    lock = lock_file(uri)
    assert lock.parent == workdir
    lock.write_text("pid 1 on another-host (harness run toy2d), since yesterday\n")
    if subprocess.run(["chattr", "+i", str(lock)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    try:
        Tracker(uri).check()  # opened (and created) the store: the foreign lock file did not block it
        hold = ("import sys, time\nfrom harness.tracking.store import init_lock\n"
                "with init_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n")
        holder = subprocess.Popen([sys.executable, "-c", hold, uri], env=child_env(), stdout=subprocess.PIPE,
                                  text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            monkeypatch.setenv("HARNESS_STORE_LOCK_TIMEOUT", "1")
            with pytest.raises(HarnessError) as info:
                Tracker(uri)
        finally:
            holder.kill()
            holder.wait(timeout=30)
        assert f"its lock ({lock}, created by user root (uid 0)) was not released within 1 s" in str(info.value)
    finally:
        subprocess.run(["chattr", "-i", str(lock)], capture_output=True)


def test_code_metrics_from_nan_distances_are_marked_not_numbers():
    """A quantizer whose eval distances are NaN (a NaN code): the indices argmin picks from them
    mean nothing, so utilization and the other eval numbers are recorded NaN (the page marks them)."""
    import math

    import torch

    from harness.cell.evaluate import evaluate
    from harness.host import get_host
    from harness.plugins.datasets.toy2d import TwoClusters
    from harness.plugins.models.linear2d import Linear2d
    from harness.plugins.quantizers.vq import VectorQuantizer

    torch.manual_seed(0)
    host, model = get_host(), Linear2d(latent_dim=2)
    dataset = TwoClusters(n_train=64, n_val=64).build("val")
    config = {"eval": {"metrics": ["mse", "utilization", "perplexity", "dead_codes"], "batch_size": 32},
              "train": {"precision": "fp32"}}
    healthy = VectorQuantizer(2, 4)
    good = evaluate(host, model, healthy, dataset, config, torch.device("cpu"))
    assert all(math.isfinite(v) for v in good.values.values())
    broken = VectorQuantizer(2, 4)
    with torch.no_grad():
        next(p for p in broken.parameters() if p.shape == (4, 2))[1] = math.nan  # one NaN code
    bad = evaluate(host, model, broken, dataset, config, torch.device("cpu"))
    assert set(bad.values) == set(good.values)
    assert all(math.isnan(v) for v in bad.values.values()), bad.values


def test_a_worker_that_dies_at_start_up_fails_its_cells_without_a_traceback(workdir: Path, store: str, tiny):
    from tests.robustness.conftest import cell_runs, suite_runs

    site = workdir / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(  # only the spawned workers die, before any cell
        "import os, sys\nif '--multiprocessing-fork' in sys.argv:\n    os._exit(7)\n")
    rc, _, err = run(["run", str(tiny()), "-q", "vq", "--seeds", "1", "--no-progress"], workdir,
                     PYTHONPATH=str(site))
    assert rc == 1, err
    assert "BrokenPipeError" not in err and "Traceback" not in err
    [cell] = cell_runs(store)
    assert cell.info.status == "FAILED"
    assert "exited with code 7" in cell.data.tags["harness.error"]
    assert [r.info.status for r in suite_runs(store)] == ["FAILED"]


def test_a_plugin_keyboard_interrupt_never_charges_the_next_cell(workdir: Path, store: str, suite_file):
    from tests.conftest import TINY_SUITE
    from tests.executors.evil import install
    from tests.robustness.conftest import cell_runs

    site = install(workdir / "site")
    evil = '[methods.ki]\nquantizer = "evil-vq"\nparams = { mode = "keyboard_interrupt" }\n\n'
    path = suite_file(TINY_SUITE.replace("[methods.vq]", evil + "[methods.vq]"), "evil.toml")
    rc, _, err = run(["run", str(path), "-q", "ki", "-q", "vq", "--seeds", "1", "--no-progress"], workdir,
                     PYTHONPATH=str(site))
    status = {r.info.run_name: r.info.status for r in cell_runs(store)}
    assert status["ki-K4-d2-s0"] in ("KILLED", "FAILED"), err
    assert status["vq-K4-d2-s0"] == "FINISHED", err  # the healthy cell ran, in a worker that stayed
    assert "while running the cell" not in err


def test_mlflow_prints_no_view_run_lines_between_the_progress(capsys):
    """MLflow writes "View run ... / View experiment ..." on stdout for every run it ends on a
    tracking server; the harness switches that off (its summary says where the runs are)."""
    from mlflow.entities import Run, RunData, RunInfo
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    import harness.tracking  # noqa: F401 - sets the switch on import

    client = TrackingServiceClient("http://127.0.0.1:5000")
    info = RunInfo("r1", "1", "user", "FINISHED", 0, 0, "active", run_name="vq-K4-d2-s0")
    client.get_run = lambda run_id: Run(info, RunData())  # the run MLflow would look up after ending it
    client._log_url("r1")
    assert "View run" not in capsys.readouterr().out


def test_repair_leaves_another_programs_run_alone(workdir: Path, store: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    exp = client.create_experiment("not-the-harness")
    other = client.create_run(exp, run_name="someone-elses-training").info.run_id  # no harness tags
    rc, out, _ = run(["runs", "repair"], workdir)  # no --suite: every experiment
    assert rc == 0 and "left: not a harness run" in out
    run_after = client.get_run(other)
    assert run_after.info.status == "RUNNING"
    assert not any(k.startswith("harness.") for k in run_after.data.tags)


def test_resume_after_the_plugin_code_changed_says_so_and_does_not_continue_old_checkpoints(
        workdir: Path, store: str, suite_file):
    import signal

    from tests.conftest import TINY_SUITE
    from tests.executors.evil import install
    from tests.robustness.conftest import (
        cell_runs,
        finish,
        interrupt,
        running_cell_with_metric,
        start,
        wait_for,
    )

    site = install(workdir / "site")
    methods = ('[methods.ok]\nquantizer = "evil-vq"\n\n[methods.slow]\nquantizer = "evil-vq"\n'
               'params = { mode = "slow", delay = 0.01 }\n\n')
    text = TINY_SUITE.replace("train.steps = 10", "train.steps = 600\ntrain.log_every = 5")
    path = suite_file(text.replace("[methods.vq]", methods + "[methods.vq]"), "tiny.toml")
    args = ["run", str(path), "--profile", "smoke", "--seeds", "1", "--no-progress"]
    rc, _, err = finish(start([*args, "-q", "ok"], workdir, PYTHONPATH=str(site)))
    assert rc == 0, err
    proc = start([*args, "-q", "slow"], workdir, PYTHONPATH=str(site))
    killed = wait_for(lambda: running_cell_with_metric(store), "a RUNNING cell with a train metric",
                      proc=proc)
    interrupt(proc, signal.SIGINT)
    rc, _, err = finish(proc)
    assert rc == 130, err
    assert any(workdir.rglob(f"*{killed.data.tags['harness.config_hash']}*")), "no checkpoint was saved"

    plugin = site / "evil_plugin.py"  # the user edits the quantizer's code
    plugin.write_text(plugin.read_text() + "\n# tuned the codebook update\n")
    rc, _, err = finish(start([*args, "-q", "ok", "-q", "slow", "--resume"], workdir, PYTHONPATH=str(site)))
    assert rc == 0, err
    assert ("harness: note: the plugin code changed since these cells finished, so --resume keeps their "
            "old-code numbers: ok-K4-d2-s0 (was ") in err
    assert "run again without --resume (-q ok and the same options)" in err
    assert ("harness: note: the plugin code of slow-K4-d2-s0 changed since it was interrupted (was "
            in err)
    assert "starts from step 0 instead of continuing the old code's checkpoint" in err
    runs = {r.info.run_id: r for r in cell_runs(store)}
    ok = [r for r in runs.values() if r.info.run_name == "ok-K4-d2-s0"]
    assert len(ok) == 1  # skipped, not rerun
    [new] = [r for r in runs.values() if r.info.run_name == "slow-K4-d2-s0" and r.info.status == "FINISHED"]
    assert "harness.resumed_at_step" not in new.data.tags and "harness.resumed_from" not in new.data.tags
    assert new.data.tags["harness.plugin_digest"] != killed.data.tags["harness.plugin_digest"]



def _alive(pid: int) -> bool:
    """Whether ``pid`` is a living process (a zombie waiting to be reaped is dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_processes_a_plugin_starts_end_with_its_cell(workdir: Path, store: str, suite_file):
    from tests.conftest import TINY_SUITE
    from tests.executors.evil import install
    from tests.robustness.conftest import cell_runs

    site = install(workdir / "site")
    pids = workdir / "pids.txt"
    forker = f'[methods.fork]\nquantizer = "evil-vq"\nparams = {{ mode = "child", pid_file = "{pids}" }}\n\n'
    path = suite_file(TINY_SUITE.replace("[methods.vq]", forker + "[methods.vq]"), "fork.toml")
    rc, _, err = run(["run", str(path), "-q", "fork", "-q", "vq", "--seeds", "1", "--no-progress"], workdir,
                     PYTHONPATH=str(site))
    assert rc == 0, err
    assert {r.info.status for r in cell_runs(store)} == {"FINISHED"}, err
    child, orphan = (int(p) for p in pids.read_text().split())
    assert not _alive(child) and not _alive(orphan)


def test_two_resumes_at_once_never_train_the_same_cell_twice(workdir: Path, store: str, suite_file):
    import signal

    from tests.conftest import TINY_SUITE
    from tests.executors.evil import install
    from tests.robustness.conftest import (
        cell_runs,
        finish,
        interrupt,
        running_cell_with_metric,
        start,
        wait_for,
    )

    site = install(workdir / "site")
    slow = '[methods.slow]\nquantizer = "evil-vq"\nparams = { mode = "slow", delay = 0.03 }\n\n'
    text = TINY_SUITE.replace("train.steps = 10", "train.steps = 600\ntrain.log_every = 5")
    path = suite_file(text.replace("[methods.vq]", slow + "[methods.vq]"), "tiny.toml")
    args = ["run", str(path), "-q", "slow", "--profile", "smoke", "--seeds", "1", "--no-progress"]
    proc = start(args, workdir, PYTHONPATH=str(site))
    wait_for(lambda: running_cell_with_metric(store), "a RUNNING cell with a train metric", proc=proc)
    interrupt(proc, signal.SIGINT)
    assert finish(proc)[0] == 130

    both = [start([*args, "--resume"], workdir, PYTHONPATH=str(site)) for _ in range(2)]
    outcomes = [finish(p) for p in both]
    assert [rc for rc, _, _ in outcomes] == [0, 0], [err for _, _, err in outcomes]
    finished = [r for r in cell_runs(store) if r.info.status == "FINISHED"]
    assert len(finished) == 1, [err for _, _, err in outcomes]  # trained once, by one of them
    assert "harness.resumed_from" in finished[0].data.tags

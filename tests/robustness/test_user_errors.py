"""Errors a user can act on (issue 21): each test does the user's step for real, in a ``harness``
process, and reads what the user would read."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.robustness.conftest import run


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
        rc, out, err = run(["ui", "--port", str(port)], workdir, timeout=120)
        rc_server, _, err_server = run(["server", "--port", str(port)], workdir, timeout=120)
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


def test_executor_options_and_environment_values_are_range_checked(workdir: Path, tiny):
    import os

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
        rc, _, err = run(["run", str(path), "-q", "vq", *extra], workdir)
        assert rc == 2 and message in err and "Traceback" not in err, err
    for value in ("nan", "soon", "-5"):
        rc, _, err = run(["run", str(path), "-q", "vq"], workdir, HARNESS_STORE_LOCK_TIMEOUT=value)
        assert rc == 2 and "Traceback" not in err
        assert (f"harness: error: HARNESS_STORE_LOCK_TIMEOUT must be a finite number of seconds >= 0, got "
                f"{value!r}; unset it for the default (120)") in err
    rc, out, _ = run(["list", "suites"], workdir, HARNESS_STORE_LOCK_TIMEOUT="soon")  # import is fine
    assert rc == 0 and "toy2d" in out
    assert not (workdir / "mlflow.db").exists()

"""``harness tune``: the [tuning] table, selection splits, trials, choices, tuned rows (issue 19, section 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.errors import SuiteError, UsageError
from harness.suite import load_suite
from harness.suite import tuning as spec

TINY = """\
[suite]
name = "tunebox"
version = 1
primary_metric = "mse"

[dataset]
name = "two-clusters"
params = { n_train = 256, n_val = 128 }

[model]
name = "linear2d"

[train]
steps = 20
batch_size = 64
lr = 1e-2
log_every = 10
threads = 1

[eval]
metrics = ["mse", "utilization"]

[methods.vq]
quantizer = "vq"

[matrix]
codebook_size = [4]
dim = [2]
seeds = 2
"""

TUNING = """
[tuning]
budget = 2
space = { "train.lr" = [1e-3, 3e-2] }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tunebox.toml"
    path.write_text(text)
    return path


# -- the [tuning] table -----------------------------------------------------------------------------

@pytest.mark.parametrize(("table", "message", "line"), [
    ("[tuning]\nbudgte = 3\n", "did you mean 'budget'", 2),
    ("[tuning]\nspace = { \"train.lrr\" = [1e-3] }\n", "did you mean 'train.lr'", 2),
    ("[tuning]\nspace = { \"trian.lr\" = [1e-3] }\n", "did you mean 'train.lr'", 2),
    ("[tuning]\ndirection = \"maxx\"\n", "did you mean 'max'", 2),
    ("[tuning]\nbudget = 0\n", "must be positive", 2),
    ("[tuning]\nspace = { \"train.lr\" = { low = 1e-2, high = 1e-3 } }\n", "low <= high", 2),
    ("[tuning]\nspace = { \"train.lr\" = { low = 1e-3, hihg = 1e-2 } }\n", "did you mean 'high'", 2),
    ("[tuning]\nspace = { \"train.lr\" = [] }\n", "non-empty list", 2),
])
def test_bad_tuning_tables_are_usage_errors_with_file_and_line(tmp_path: Path, table: str, message: str,
                                                               line: int) -> None:
    path = write(tmp_path, TINY + "\n" + table)
    first = len(TINY.splitlines()) + 2  # the line of [tuning] (after one empty line)
    with pytest.raises(SuiteError) as err:
        load_suite(str(path))
    assert message in str(err.value)
    assert f"{path}:{first + line - 1}:" in str(err.value)


def test_default_space_is_the_learning_rate_on_a_log_grid_around_the_suites() -> None:
    data = {"train": {"lr": 2e-3}}
    tuning = spec.read_tuning(data, "psnr", lambda m: True)
    assert (tuning.budget, tuning.metric, tuning.direction, tuning.split) == (3, "psnr", "max", "select")
    assert spec.trials(tuning.space, 3) == [{"train.lr": 5e-4}, {"train.lr": 2e-3}, {"train.lr": 8e-3}]
    assert spec.read_tuning(data, "mse", lambda m: False).direction == "min"


def test_several_knobs_draw_budget_points_the_same_way_every_time() -> None:
    space = {"train.lr": {"low": 1e-4, "high": 1e-2}, "quantizer.beta": [0.1, 0.25, 0.5, 1.0]}
    drawn = spec.trials(space, 3)
    assert len(drawn) == 3 and len({tuple(sorted(d.items())) for d in drawn}) == 3
    assert drawn == spec.trials(space, 3)
    assert all(d["quantizer.beta"] in (0.1, 0.25, 0.5, 1.0) and 1e-4 <= d["train.lr"] <= 1e-2 for d in drawn)
    assert len(spec.trials({"train.lr": [1e-3, 1e-2]}, 5)) == 2  # a space smaller than the budget: all of it


def test_plugin_knobs_join_the_space_and_the_suites_win() -> None:
    tuning = spec.Tuning(2, "mse", "min", "select", {"quantizer.beta": [0.5]}, plugin_knobs=True)
    space = spec.method_space(tuning, {"beta": (0.1, 1.0, "log"), "temperature": (0.01, 1.0, "log")})
    assert space["quantizer.beta"] == [0.5]
    assert space["quantizer.temperature"] == {"low": 0.01, "high": 1.0, "scale": "log"}
    assert spec.method_space(spec.Tuning(2, "mse", "min", "select", {}), {"beta": (0.1, 1.0, "log")}) == {}


# -- selection splits ---------------------------------------------------------------------------------

def test_digits_selection_split_is_a_fixed_part_of_train_and_never_val() -> None:
    pytest.importorskip("sklearn")
    from harness.plugins.datasets.digits import Digits

    data = Digits()
    parts = {s: data.build(s).tensors[0] for s in ("train", "fit", "select", "val")}
    assert len(parts["fit"]) + len(parts["select"]) == len(parts["train"])
    assert torch.equal(torch.cat([parts["fit"], parts["select"]]), parts["train"])
    assert torch.equal(Digits().build("select").tensors[0], parts["select"])  # fixed by data_seed
    assert len(parts["select"]) == 200 and len(parts["val"]) == 300
    assert Digits.selection_splits == {"select": "fit"}


@pytest.mark.parametrize("name", ["two-clusters", "drift2d"])
def test_synthetic_selection_split_is_an_independent_sample(name: str) -> None:
    from harness.host import get_host

    data = get_host().datasets.get(name).obj()
    train, val, select = (data.build(s).tensors[0] for s in ("train", "val", "select"))
    assert select.shape == val.shape and not torch.equal(select, val)
    assert not any(torch.equal(select[:4], train[i:i + 4]) for i in range(0, len(train) - 4, 4))
    assert type(data).selection_splits == {"select": "train"}


def test_image_folder_selection_split_is_every_50th_training_file(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from harness.plugins.datasets.celebahq import CelebAHQ
    from harness.plugins.datasets.imagenet import ImageNet
    from tests.images.test_datasets import write_celebahq, write_imagenet

    write_celebahq(tmp_path / "celeba", n=200)
    faces = CelebAHQ(root=tmp_path / "celeba", resolution=8)
    train, fit, select = (faces.split_files(s) for s in ("train", "fit", "select"))
    assert len(train) == 150 and select == [train[49], train[99], train[149]]
    assert sorted(fit + select) == sorted(train) and not set(select) & set(faces.split_files("val"))
    write_imagenet(tmp_path / "inet", {"train": 30, "val": 2})
    inet = ImageNet(root=tmp_path / "inet", resolution=8)
    (files, labels), (chosen, chosen_labels) = inet.files("train"), inet.files("select")
    assert chosen == files[49::50] and chosen_labels == labels[49::50]
    assert len(inet.files("fit")[0]) + len(chosen) == len(files)
    assert CelebAHQ.selection_splits == ImageNet.selection_splits == {"select": "fit"}


def test_selection_on_val_or_an_unknown_metric_is_refused(tmp_path: Path) -> None:
    from harness.host import get_host
    from harness.run.tune import check_tuning

    host = get_host()
    for table, message in (("split = \"val\"", "leaderboard reports"),
                           ("split = \"selct\"", "did you mean 'select'"),
                           ("metric = \"msee\"", "did you mean 'mse'"),
                           ("space = { \"quantizer.betaa\" = [1.0] }", "did you mean 'beta'")):
        suite = load_suite(str(write(tmp_path, TINY + f"\n[tuning]\n{table}\n")))
        with pytest.raises(UsageError, match=message) as err:
            check_tuning(host, suite, suite.cells())
        assert str(tmp_path / "tunebox.toml") in str(err.value)


# -- end to end -----------------------------------------------------------------------------------------

def test_tune_runs_trials_chooses_on_select_then_runs_tuned_rows_and_resumes(tmp_path: Path) -> None:
    from harness.leaderboard.build import build_leaderboard
    from harness.run.options import RunOptions
    from harness.run.tune import tune_suite
    from harness.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = write(tmp_path, TINY + TUNING)
    options = RunOptions(tracking_uri=uri, progress=False, executor="local")
    result = tune_suite(load_suite(str(path)), None, options)
    tracker = Tracker(uri)
    trials = tracker.runs("tunebox", "tags.`harness.tuning` = 'trial'")
    assert len(trials) == 2 and {r.data.params["train.lr"] for r in trials} == {"0.001", "0.03"}
    parent = tracker.runs("tunebox", "tags.`harness.kind` = 'tuning'")[0]
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    scores = {float(r.data.params["train.lr"]): r.data.metrics["eval/mse"] for r in trials}
    best = min(scores, key=scores.get)  # mse: lower is better
    choice = result.choices[("vq", 4, 2)]
    assert choice.values == {"train.lr": best}
    assert choice.cost == pytest.approx(sum(t.seconds for t in choice.trials)) and choice.cost > 0
    assert parent.data.tags["harness.tuning.vq-K4-d2"] == f"lr={best:g}"
    tuned = tracker.runs("tunebox", "tags.`harness.tuning` = 'tuned'")
    assert sorted(r.data.tags["harness.seed"] for r in tuned) == ["0", "1"]
    assert all(float(r.data.params["train.lr"]) == best for r in tuned)
    assert all(float(r.data.tags["harness.tuned.cost_s"]) == pytest.approx(choice.cost, abs=1e-3) for r in tuned)
    tuned_parent = tracker.client.get_run(tuned[0].data.tags["mlflow.parentRunId"])
    assert tuned_parent.data.tags["harness.kind"] == "tuned"  # never a page's source of claims or rules
    assert tuned_parent.data.tags["harness.tuning_run"] == parent.info.run_id

    again = tune_suite(load_suite(str(path)), None, RunOptions(tracking_uri=uri, progress=False,
                                                              executor="local", resume=True))
    assert {r.status for r in again.trials} == {"SKIPPED"} and {r.status for r in again.tuned.cells} == {"SKIPPED"}
    assert again.choices[("vq", 4, 2)].values == choice.values

    from harness.run.lifecycle import run_suite

    run_suite(load_suite(str(path)), None, RunOptions(tracking_uri=uri, progress=False, executor="local"))
    board = build_leaderboard("tunebox", tracker=tracker)
    rows = {r.tuning: r for r in board.measured}
    assert set(rows) == {"tuned", "shared"} and len(board.measured) == 2  # trials are never rows
    assert rows["tuned"].label == f"vq (tuned: lr={best:g}; 2 trials, {choice.cost:.0f} s)"
    assert rows["shared"].label == "vq (shared recipe)"
    from harness.leaderboard.render import to_csv

    csv = to_csv(board).splitlines()
    head = csv[0].split(",")
    recipes = {line.split(",")[head.index("recipe")] for line in csv[1:]}
    assert recipes == {"tuned", "shared"}


def test_bits_keeps_one_rate_group_and_dry_run_counts_it(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.commands.cli import main
    from harness.host import get_host
    from harness.run.selection import select_cells

    suite = load_suite("digits")
    cells = select_cells(get_host(), suite, None, bits=8)
    # every method has an 8-bit row but leech-sq, whose one size is 17.58 bits per token
    assert {c.method for c in suite.cells()} - {c.method for c in cells} == {"leech-sq"}
    assert {c.codebook_size for c in cells if c.method == "residual-vq"} == {16}
    assert {c.codebook_size for c in cells if c.method == "vq"} == {256}
    with pytest.raises(UsageError, match="rates: .*8.*10.*12"):
        select_cells(get_host(), suite, ["vq"], bits=9)
    assert main(["run", "digits", "--bits", "8", "--seeds", "3", "--dry-run"]) == 0
    assert f"{len(cells) // 2 * 3} cells of suite 'digits'" in capsys.readouterr().out
    assert main(["tune", "digits", "--bits", "8", "-q", "vq", "-q", "ibq", "--dry-run"]) == 0
    assert "6 trials (3 per configuration, max psnr on the 'select' split), then 4 cells" in capsys.readouterr().out


def test_shards_split_the_trials_and_a_final_resume_chooses_and_runs_the_rest(tmp_path: Path) -> None:
    from harness.run.options import RunOptions
    from harness.run.tune import tune_suite
    from harness.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = write(tmp_path, TINY + TUNING)

    def tune(**kw: object) -> object:
        return tune_suite(load_suite(str(path)), None, RunOptions(tracking_uri=uri, progress=False,
                                                                 executor="local", **kw))

    first = tune(shard=(1, 2))
    assert len(first.trials) == 1 and first.choices[("vq", 4, 2)].values is None and first.tuned is None
    assert first.notes and "--resume" in first.notes[0]
    second = tune(shard=(2, 2))
    assert len(second.trials) == 1 and second.choices[("vq", 4, 2)].values is not None
    assert len(second.tuned.cells) == 1  # its slice of the two seeds
    last = tune(resume=True)
    assert {r.status for r in last.trials} == {"SKIPPED"}
    tuned = Tracker(uri).runs("tunebox", "tags.`harness.tuning` = 'tuned' and attributes.status = 'FINISHED'")
    assert sorted(r.data.tags["harness.seed"] for r in tuned) == ["0", "1"]  # each seed once
    assert len(Tracker(uri).runs("tunebox", "tags.`harness.tuning` = 'trial'")) == 2


def test_every_trial_and_tuned_cell_rebuilds_from_its_spec_on_any_executor(tmp_path: Path) -> None:
    """Workers, SLURM jobs and Ray tasks rebuild a cell from its CellSpec: trials and tuned cells too."""
    from harness.host import get_host
    from harness.run.executors import load_cell
    from harness.run.specs import cell_specs
    from harness.run.tune import Choice, Trial, check_tuning, trial_groups, tuned_groups

    host = get_host()
    suite = load_suite(str(write(tmp_path, TINY + TUNING)))
    cells = suite.cells()
    tuning = check_tuning(host, suite, cells)
    trial = trial_groups(host, suite, tuning, cells)
    choice = Choice(("vq", 4, 2), [Trial({"train.lr": 0.03})], {"train.lr": 0.03}, 0.1)
    tuned = tuned_groups(suite, tuning, {choice.slot: choice}, cells)
    assert [len(g.cells) for g in trial] == [1, 1] and [len(g.cells) for g in tuned] == [2]
    for group in [*trial, *tuned]:
        specs = cell_specs(group.suite, [(c, None) for c in group.cells], "parent",
                           "sqlite:///x.db", {})
        for spec_, cell in zip(specs, group.cells, strict=True):
            _, rebuilt = load_cell(spec_)
            assert rebuilt.config == cell.config
    assert trial[0].cells[0].config["dataset"]["splits"] == {"train": "train", "eval": "select"}
    assert tuned[0].cells[0].config["tuned"]["values"] == {"train.lr": 0.03}
    assert tuned[0].cells[0].config["train"]["lr"] == 0.03
    shared = {c.group_hash for c in cells}
    assert not shared & {c.group_hash for g in [*trial, *tuned] for c in g.cells}  # rows of their own


def test_harness_tune_command_in_worker_processes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command line, on the default executor (each cell in a worker process): one trial, one tuned cell."""
    from harness.commands.cli import main
    from harness.tracking import Tracker

    path = write(tmp_path, TINY.replace("seeds = 2", "seeds = 1") + "\n[tuning]\nbudget = 1\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["tune", str(path), "--jobs", "1", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "tuning (1 trials per configuration, min mse on the 'select' split" in out
    assert "| vq     | 4 | 2   | lr=0.01" in out  # budget 1: the one grid point, the suite's own lr
    runs = Tracker(uri).runs("tunebox", "tags.`harness.kind` = 'cell' and attributes.status = 'FINISHED'")
    assert sorted(r.data.tags["harness.tuning"] for r in runs) == ["trial", "tuned"]


def test_tune_resume_says_when_the_plugin_code_changed(tmp_path: Path, monkeypatch, capsys) -> None:
    """``harness tune --resume`` keeps a finished cell of old code as ``harness run --resume`` does,
    and says so: the trials and tuned rows are planned through the same code-change check."""
    from harness.run import codechange
    from harness.run.options import RunOptions
    from harness.run.tune import tune_suite

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = write(tmp_path, TINY + TUNING)
    tune_suite(load_suite(str(path)), None, RunOptions(tracking_uri=uri, progress=False, executor="local"))
    capsys.readouterr()
    monkeypatch.setattr(codechange, "plugin_digest", lambda entry: "edited-code")  # the user edits vq
    again = tune_suite(load_suite(str(path)), None, RunOptions(tracking_uri=uri, progress=False,
                                                              executor="local", resume=True))
    err = capsys.readouterr().err
    assert "the plugin code changed since these cells finished, so --resume keeps their old-code numbers" in err
    assert all(r.status == "SKIPPED" for r in again.trials)

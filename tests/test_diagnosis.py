"""The per-cell collapse diagnosis (harness.cell.diagnosis): what it measures, that it leaves training alone,
and that a real cell records it at step 0 and at its last step."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
import torch

from harness.cell.callbacks import UsageWindow
from harness.cell.diagnosis import Diagnosis, explicit_codebook, measure
from harness.cell.diagnosis_file import ARTIFACT
from harness.cell.losses import build_losses
from harness.cell.train import run, standard_callbacks
from harness.contracts import QuantizeOutput, Quantizer
from harness.host import get_host
from harness.leaderboard.collapse import UTILIZATION_BELOW
from harness.ops import nearest_code
from harness.run.lifecycle import RunOptions, run_suite
from harness.suite import load_suite
from harness.tracking import Tracker
from tests.test_train_loop import points, toy_state


class Shrink(torch.nn.Module):
    """An "encoder" that maps every input to one short vector plus a little noise: a collapsed start."""

    def __init__(self, direction: torch.Tensor, noise: float) -> None:
        super().__init__()
        self.direction, self.noise = direction, noise

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.direction + self.noise * x


def test_measure_sees_short_aligned_latents_and_long_codes() -> None:
    quantizer = get_host().quantizers.get("ibq").obj(dim=8, codebook_size=256)  # the authors' N(0, 1) codes
    direction = torch.full((8,), 0.1)
    x = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    values, unavailable = measure(Shrink(direction, 0.005), quantizer, x)
    assert unavailable == {}
    assert values["latent_norm"].item() == pytest.approx(direction.norm().item(), rel=0.05)
    assert values["latent_cosine"].item() > 0.99
    assert values["code_to_latent"].item() == pytest.approx(
        quantizer.embedding.norm(dim=1).mean().item() / values["latent_norm"].item(), rel=1e-5)
    assert values["codes_won"].item() <= 3  # a dot product with one direction: one code (or two) wins
    spread, _ = measure(Shrink(torch.zeros(8), 1.0), quantizer, x)  # latents in every direction
    assert spread["latent_cosine"].item() < 0.2 and spread["codes_won"].item() > 50


@pytest.mark.parametrize("name", ["fsq", "lfq", "bsq", "residual-vq"])
def test_methods_without_a_stored_codebook_report_the_code_norm_unavailable(name: str) -> None:
    quantizer = get_host().quantizers.get(name).obj(dim=8, codebook_size=256)
    codes, why = explicit_codebook(quantizer)
    assert codes is None and why
    values, unavailable = measure(Shrink(torch.zeros(8), 1.0), quantizer, torch.randn(64, 8))
    assert set(unavailable) == {"code_norm", "code_to_latent"} and "code_norm" not in values
    assert {"latent_norm", "latent_cosine", "codes_won"} <= set(values)


class Jitter(Quantizer):
    """Nearest code of a jittered token, in training and in eval: any draw the diagnosis took would show."""

    name = "jitter"

    def __init__(self, dim: int = 2, codebook_size: int = 4) -> None:
        super().__init__(dim, codebook_size)
        self.embedding = torch.nn.Parameter(torch.randn(codebook_size, dim))

    def codebook(self) -> torch.Tensor:
        return self.embedding

    def quantize(self, z: torch.Tensor) -> QuantizeOutput:
        indices = nearest_code(z.detach() + 0.1 * torch.randn_like(z), self.embedding.detach())
        e = self.embedding[indices]
        return QuantizeOutput(z + (e - z).detach(), indices, torch.nn.functional.mse_loss(e, z.detach()))


def train_toy(with_diagnosis: bool) -> tuple[dict[str, torch.Tensor], list, dict]:
    """A random quantizer on toy points, with or without the diagnosis callback."""
    torch.manual_seed(0)  # the quantizer is built before toy_state seeds the model
    state = toy_state(Jitter(), steps=12, log_every=4)
    losses = build_losses(get_host(), ["mse"])
    losses.setup(state)
    logged, saved = [], {}
    callbacks = standard_callbacks(state, [], lambda values, step: logged.append((step, dict(values))))
    if with_diagnosis:
        diagnosis = Diagnosis(points(16).tensors[0], (4,), lambda v, s: logged.append((s, v)), saved.update)
        callbacks.insert(len(callbacks) - 1, diagnosis)
    data = points(96).tensors[0]
    run(state, iter(data[i:i + 8] for i in range(0, 96, 8)), losses, callbacks)
    weights = {**state.model.state_dict(), **{f"q.{k}": v for k, v in state.quantizer.state_dict().items()}}
    return weights, logged, saved


def test_the_diagnosis_leaves_training_exactly_as_it_was() -> None:
    plain, _, _ = train_toy(False)
    diagnosed, logged, saved = train_toy(True)
    assert plain.keys() == diagnosed.keys()
    assert all(torch.equal(plain[k], diagnosed[k]) for k in plain)
    assert saved["init"]["step"] == 0 and saved["final"]["step"] == 12
    assert [step for step, _ in saved["dead_codes"]] == [4, 8, 12]
    steps_with_dead = [step for step, values in logged if "diag/dead_codes" in values]
    assert steps_with_dead == [4, 8, 12]


def test_dead_codes_come_from_the_usage_window_per_stage() -> None:
    window = UsageWindow((4, 8), torch.device("cpu"))
    window.update(torch.tensor([[0, 7], [1, 7]]))
    logs = window.flush()
    diagnosis = Diagnosis(torch.zeros(1, 2), (4, 8), lambda v, s: None, lambda r: None)
    diagnosis.on_log(type("S", (), {"step": 5})(), logs)
    assert logs["diag/dead_codes"].item() == 2 + 7


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """IBQ (its authors' defaults) and FSQ on digits at 8 bits, 30 steps, in a real store."""
    folder = tmp_path_factory.mktemp("diagnosis")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    suite = load_suite("digits", "smoke", overrides=["train.steps=30", "train.log_every=10",
                                                     "eval.max_items=300"])
    result = run_suite(suite, ["ibq", "fsq"], RunOptions(device="cpu", tracking_uri=uri, progress=False,
                                                          executor="local"))
    assert all(c.status == "FINISHED" for c in result.cells), [c.error for c in result.cells]
    return uri, {c.cell.method: c.run_id for c in result.cells}


def test_a_real_cell_records_its_diagnosis_at_step_0_and_at_the_end(digits_runs) -> None:
    uri, runs = digits_runs
    client = Tracker(uri).client
    history = {m.step: m.value for m in client.get_metric_history(runs["ibq"], "diag/init/code_to_latent")}
    assert list(history) == [0] and history[0] > 1
    assert [m.step for m in client.get_metric_history(runs["ibq"], "diag/final/codes_won")] == [30]
    assert [m.step for m in client.get_metric_history(runs["ibq"], "diag/dead_codes")] == [10, 20, 30]
    report = json.loads(Path(client.download_artifacts(runs["ibq"], ARTIFACT)).read_text())
    assert report["init"]["step"] == 0 and report["final"]["step"] == 30
    assert report["tokens"] == 300 * 16 and report["codebook_sizes"] == [256]
    fsq = json.loads(Path(client.download_artifacts(runs["fsq"], ARTIFACT)).read_text())
    assert "code_norm" in fsq["unavailable"] and "code_norm" not in fsq["init"]


def diagnose(uri: str, run_id: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    from harness.commands.cli import main

    code = main(["diagnose", run_id, "--tracking-uri", uri, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command_names_ibqs_collapse_from_its_initial_scale(digits_runs, capsys) -> None:
    uri, runs = digits_runs
    code, out, _ = diagnose(uri, runs["ibq"][:10], capsys)  # a unique prefix is enough
    assert code == 0
    verdict = out.strip().splitlines()[-1]
    assert re.search(r"codes are \d+x longer than latents", verdict)
    assert re.search(r"only [1-9] codes win at init", verdict)
    assert "codebook collapse from initialization scale" in verdict and "collapsed:" in verdict
    assert "latent cosine to their mean" in out and "dead codes per log window" in out


def test_the_command_does_not_flag_a_healthy_run(digits_runs, capsys) -> None:
    uri, runs = digits_runs
    client = Tracker(uri).client
    usage = client.get_run(runs["fsq"]).data.metrics["eval/utilization"]
    assert usage >= UTILIZATION_BELOW  # the premise: FSQ uses its grid on digits
    code, out, _ = diagnose(uri, runs["fsq"], capsys, "--json")
    data = json.loads(out)
    assert code == 0 and data["verdict"].startswith("no collapse")
    assert "code_norm" in data["diagnosis"]["unavailable"]


def test_an_unknown_run_is_a_usage_error_naming_a_close_one(digits_runs, capsys) -> None:
    uri, runs = digits_runs
    typo = runs["ibq"][:-1] + ("0" if runs["ibq"][-1] != "0" else "1")
    code, _, err = diagnose(uri, typo, capsys)
    assert code == 2 and f"did you mean {runs['ibq']!r}" in err


def test_the_leaderboard_flags_the_collapsed_row_only(digits_runs) -> None:
    from harness.leaderboard import build_leaderboard
    from harness.leaderboard.render import to_csv, to_html, to_json, to_markdown

    uri, _ = digits_runs
    board = build_leaderboard("digits", tracker=Tracker(uri), profile="smoke")
    page = to_markdown(board).splitlines()
    lines = {r.method: next(line for line in page if line.startswith(f"| {r.method} ") and "| 256 |" in line)
             for r in board.rows}
    assert re.search(r"collapsed: [\d.]+% of codes used", lines["ibq"])
    assert "collapsed" not in lines["fsq"]
    assert 'class="text status collapsed">collapsed: ' in to_html(board)
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(to_csv(board)))}
    assert rows["ibq"]["collapse"].startswith("collapsed: ") and rows["fsq"]["collapse"] == ""
    data = {r["method"]: r["collapse"] for r in json.loads(to_json(board))["rows"]}
    assert data["ibq"].startswith("collapsed: ") and data["fsq"] == ""


def test_a_collapse_in_one_seed_of_two_is_said_so(tracking_uri: str) -> None:
    """Hand-made runs: the rule per seed, the row's mean when every seed collapsed."""
    from harness.leaderboard import build_leaderboard
    from harness.leaderboard.collapse import collapse_text
    from tests.test_leaderboard import record

    tracker = Tracker(tracking_uri)
    for seed, (used, perplexity) in enumerate([(0.004, 1.0), (0.60, 120.0)]):
        record(tracker, "half", seed, {"psnr": 15.0, "utilization": used, "perplexity": perplexity}, k=256)
    for seed, used in enumerate([0.02, 0.04]):
        record(tracker, "both", seed, {"psnr": 14.0, "utilization": used, "perplexity": 9.0}, k=256)
    for seed in range(2):  # most codes touched once, the tokens on one or two: perplexity says it
        record(tracker, "peaked", seed, {"psnr": 14.0, "utilization": 0.5, "perplexity": 1.5}, k=256)
        record(tracker, "fine", seed, {"psnr": 20.0, "utilization": 0.06, "perplexity": 15.0}, k=256)
    rows = {r.method: collapse_text(r) for r in build_leaderboard("board", tracker=tracker).rows}
    assert rows == {"half": "collapsed in 1 of 2 seeds: 0.4% of codes used",
                    "both": "collapsed: 3% of codes used",
                    "peaked": "collapsed: usage perplexity 1.5 of 256 codes", "fine": ""}


@pytest.mark.parametrize("init, final, expected", [
    ({"code_to_latent": 40.0, "latent_cosine": 0.99, "codes_won": 3, "codes_won_fraction": 3 / 256},
     {"utilization": 0.01}, "codes are 40x longer than latents, the latents point one way"),
    ({"code_to_latent": 1.0, "latent_cosine": 0.2, "codes_won": 200, "codes_won_fraction": 200 / 256},
     {"utilization": 0.02}, "200 codes won at init, yet the run ended collapsed"),
    ({"latent_cosine": 0.2, "codes_won": 2, "codes_won_fraction": 2 / 256},  # implicit: no code norm
     {"utilization": 0.02}, "only 2 codes win at init: the other codes get little or no gradient"),
    ({"code_to_latent": 40.0, "latent_cosine": 0.99, "codes_won": 3, "codes_won_fraction": 3 / 256},
     {"utilization": 0.6}, "no collapse: 60% of codes used"),
    (None, {"utilization": 0.6, "perplexity": 1.2}, "collapsed (usage perplexity 1.2 of 256 codes)"),
])
def test_each_sentence_follows_its_threshold(init, final, expected) -> None:
    from harness.commands.diagnose import verdict

    report = {"init": init, "final": {}, "dead_codes": [[10, 250], [20, 253]], "unavailable": {}}
    assert expected in verdict(report, final, 256)


def test_the_rescaling_option_is_named_recorded_and_seen_by_the_diagnosis(digits_runs, tmp_path) -> None:
    """``codebook-init-scale`` (a schedule the suite names) starts IBQ from 0.1 x its authors' codebook."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    suite = load_suite("digits", "smoke", overrides=[
        "train.steps=2", "train.log_every=1", "eval.max_items=300",
        'methods.ibq.schedules=[{name="codebook-init-scale", params={scale=0.1}}]'])
    result = run_suite(suite, ["ibq"], RunOptions(device="cpu", tracking_uri=uri, progress=False,
                                                  executor="local"))
    assert result.cells[0].status == "FINISHED", result.cells[0].error
    run = Tracker(uri).client.get_run(result.cells[0].run_id)
    assert "codebook-init-scale" in json.dumps([v for k, v in run.data.params.items() if "schedules" in k])
    authors = Tracker(digits_runs[0]).client.get_run(digits_runs[1]["ibq"]).data.metrics
    scaled = run.data.metrics["diag/init/code_norm"] / authors["diag/init/code_norm"]
    assert scaled == pytest.approx(0.1, rel=1e-5)  # same seed, same N(0, 1) draw, scaled once
    assert run.data.metrics["diag/init/latent_norm"] == pytest.approx(authors["diag/init/latent_norm"])


def test_the_rescaling_option_refuses_a_codebook_it_cannot_scale() -> None:
    from harness.plugins.schedules.codebook import CodebookInitScale

    state = toy_state(get_host().quantizers.get("ema").obj(dim=2, codebook_size=4))
    with pytest.raises(ValueError, match="no codebook stored as a trained parameter"):
        CodebookInitScale(0.1).on_train_start(state)
    with pytest.raises(ValueError, match="scale must be positive"):
        CodebookInitScale(0.0)


def test_the_rule_is_judged_against_the_codes_the_split_can_reach(tracking_uri: str) -> None:
    """A codebook larger than the eval split (Leech's 196,560 codes over 4,800 tokens) is not
    flagged for the usage the split cannot exceed, and is flagged below 5% of what it can reach."""
    from harness.leaderboard import build_leaderboard
    from harness.leaderboard.collapse import collapse_text, seed_collapse
    from tests.test_leaderboard import record

    k, tokens = 196_560, 4_800
    assert seed_collapse({"utilization": 2_000 / k, "perplexity": 900.0}, k, tokens) == ""
    low = seed_collapse({"utilization": 100 / k, "perplexity": 60.0}, k, tokens)
    assert low == "0.1% of codes used (the 4,800 eval tokens reach at most 2.4%)"
    assert seed_collapse({"utilization": 2_000 / k, "perplexity": 900.0}, k) != ""  # old runs: against K

    tracker = Tracker(tracking_uri)
    for seed in range(2):
        record(tracker, "lattice", seed, {"psnr": 20.0, "utilization": 2_000 / k, "perplexity": 900.0}, k=k,
               tags={"harness.eval_tokens": str(tokens)})
    rows = {r.method: collapse_text(r) for r in build_leaderboard("board", tracker=tracker).rows}
    assert rows == {"lattice": ""}

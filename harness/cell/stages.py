"""The four stages of a cell: build -> train -> evaluate -> record, each with one job.

:class:`harness.cell.runner.CellRunner` calls them in order; each takes what the one
before returned. Rank 0 alone evaluates and records under torchrun.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.cell import distributed
from harness.cell.build import (
    build_dataset,
    build_model,
    build_quantizer,
    build_schedules,
    codebook_vs_data,
    complete_config,
)
from harness.cell.callbacks import FlushThenCheckpoint, latent_snapshot
from harness.cell.losses import LossSet, build_losses
from harness.cell.optim import build_optimizer
from harness.cell.provenance import rate_tags
from harness.cell.train import TrainState, cell_inputs, run, standard_callbacks, total_steps
from harness.recovery.checkpoint import Checkpointer, checkpoint_path
from harness.suite import Cell
from harness.tracking import as_floats, flatten

CURVES = ("train/loss", "train/rec", "train/utilization")


@dataclass
class Built:
    """A cell ready to train: its resolved config, data, state, schedules, losses and checkpointer."""

    cell: Cell
    run_id: str
    config: dict[str, Any]
    train_set: Any
    val_set: Any
    modality: str
    state: TrainState
    schedules: list[Any]
    losses: LossSet
    checkpointer: Checkpointer
    #: (step, value) of the curves the training-curves plot shows
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    snapshots: list[dict[str, Any]] = field(default_factory=list)


# -- build ----------------------------------------------------------------------------

def build(runner: Any, cell: Cell, run_id: str) -> Built:
    """Config recorded, data, nets, optimizer, schedules, losses (set up), checkpointer."""
    host, tracker, device = runner.host, runner.tracker, runner.device
    config = complete_config(host, cell)
    tracker.log_params(run_id, flatten(config))
    tracker.log_json(run_id, config, "config.json")
    seed_everything(cell.seed)
    data = build_dataset(host, config, runner.options.data_root)
    splits = config["dataset"].get("splits") or {}  # a tuning trial: fit and select (harness.run.tune)
    train_set, val_set = data.build(splits.get("train", "train")), data.build(splits.get("eval", "val"))
    model = build_model(host, config).to(device)
    quantizer = build_quantizer(host, config).to(device)
    tracker.set_tags(run_id, rate_tags(model, quantizer, val_set, device))  # harness.cell.provenance
    state = new_state(config, model, quantizer, device, len(train_set))
    losses = build_losses(host, config["train"]["loss"])
    losses.setup(state)
    distributed.wrap(state)  # DDP under torchrun, else nothing
    warn_codebook(runner, cell, run_id, state, train_set)
    schedules = build_schedules(host, config)
    every = config["train"].get("checkpoint_every") if distributed.is_main() else None
    checkpointer = Checkpointer(checkpoint_path(runner.checkpoint_root, runner.suite.name, cell.config_hash),
                                cell.config_hash, schedules, every)
    return Built(cell, run_id, config, train_set, val_set, getattr(data, "modality", "points"), state,
                 schedules, losses, checkpointer)


def new_state(config: dict[str, Any], model: Any, quantizer: Any, device: torch.device,
              train_size: int) -> TrainState:
    optimizer = build_optimizer([*model.parameters(), *quantizer.parameters()], config["train"])
    steps, per_epoch = total_steps(config, train_size)
    return TrainState(model, quantizer, optimizer, config, device, steps, per_epoch)


def warn_codebook(runner: Any, cell: Cell, run_id: str, state: TrainState, train_set: Any) -> None:
    warning = codebook_vs_data(state.model, state.quantizer, train_set, state.device)
    if warning:
        print(f"harness: warning: {cell.run_name}: {warning}", file=sys.stderr)
        runner.tracker.set_tags(run_id, {"harness.warning.codebook_vs_data": warning})


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- train ----------------------------------------------------------------------------

def resume_into(runner: Any, built: Built, resume: Any) -> None:
    """Continue from the cell's checkpoint (``--resume``): state restored, earlier curves copied."""
    from harness.recovery.resume import continue_from

    if resume is None or resume.checkpoint is None:
        return
    points = continue_from(runner.tracker, built.run_id, built.state, built.schedules, resume,
                           built.cell.config_hash)
    for m in points:
        if m.key in CURVES:
            built.history.setdefault(m.key, []).append((m.step, m.value))


def train(runner: Any, built: Built) -> None:
    """Run the loop with the cell's callbacks; a signal stops it between steps."""
    tracker, state = runner.tracker, built.state
    progress = progress_bar(runner, built)
    callbacks = [FlushThenCheckpoint(built.checkpointer, tracker.flush), *built.schedules]
    callbacks = standard_callbacks(state, callbacks, TrackerLog(tracker, built.run_id, built.history),
                                   on_snapshot=snapshot_taker(built), progress=progress)
    if distributed.is_main():  # after the usage window, before the logger (harness.cell.diagnosis)
        callbacks.insert(len(callbacks) - 1, diagnosis_for(tracker, built))
    runner.guard.watch(state)  # a signal now stops the loop between steps
    try:
        run(state, cell_inputs(state, built.train_set), built.losses, callbacks)
    finally:
        runner.guard.unwatch()
        if progress is not None:
            progress.close()


def diagnosis_for(tracker: Any, built: Built) -> Any:
    """The cell's collapse diagnosis, logged as ``diag/*`` metrics and ``diagnosis.json``."""
    from harness.cell.diagnosis import ARTIFACT, diagnosis_callback

    run_id = built.run_id
    return diagnosis_callback(built.state, built.val_set,
                              lambda values, step: tracker.log_metrics(run_id, values, step),
                              lambda report: tracker.log_json(run_id, report, ARTIFACT))


class TrackerLog:
    """A log step's values: read from the device in one transfer, queued for the tracker, kept for plots."""

    def __init__(self, tracker: Any, run_id: str, history: dict[str, list[tuple[int, float]]]) -> None:
        self.tracker, self.run_id, self.history = tracker, run_id, history

    def __call__(self, values: dict[str, Any], step: int) -> None:
        numbers = as_floats(values)
        self.tracker.log_metrics(self.run_id, numbers, step)
        for key in CURVES:
            if key in numbers:
                self.history.setdefault(key, []).append((step, numbers[key]))


def progress_bar(runner: Any, built: Built) -> Any:
    """A tqdm bar over the cell's steps, starting at the resumed step."""
    if not runner.options.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=built.state.steps_total, initial=built.state.step, desc=built.cell.run_name,
                unit="step", leave=False, dynamic_ncols=True)


def snapshot_taker(built: Built) -> Any:
    """Latent snapshots (toy suites with ``eval.plots = ["latent"]`` at dim 2), else ``None``."""
    if "latent" not in built.config["eval"]["plots"] or built.cell.dim != 2:
        return None
    return lambda state: built.snapshots.append(latent_snapshot(state, built.val_set))


def keep_trained_state(runner: Any, built: Built) -> None:
    """Checkpoint before evaluating when asked to stop (or checkpointing); then stop if asked."""
    if runner.guard.requested or built.checkpointer.every:
        runner.tracker.flush(built.run_id)
        built.checkpointer.save(built.state)
    if runner.guard.requested:
        runner.tracker.set_tags(built.run_id, {"harness.checkpoint": str(built.checkpointer.path),
                                               "harness.checkpoint_step": str(built.state.step)})
        runner.guard.raise_if_requested()


# -- evaluate and record -----------------------------------------------------------------

def evaluate(runner: Any, built: Built) -> Any:
    """Metrics over the val split, logged at the last step; unavailable ones and stacks as tags."""
    from harness.cell.evaluate import evaluate as evaluate_split

    state, tracker, run_id = built.state, runner.tracker, built.run_id
    result = evaluate_split(runner.host, state.model, state.quantizer, built.val_set, built.config,
                            state.device, modality=built.modality)
    tracker.log_metrics(run_id, {f"eval/{k}": v for k, v in result.values.items()}, state.steps_total)
    if result.unavailable:
        tracker.set_tags(run_id, {f"harness.unavailable.{k}": v[:5000] for k, v in result.unavailable.items()})
        tracker.log_json(run_id, result.unavailable, "unavailable_metrics.json")
    if result.stacks:
        tracker.set_tags(run_id, {f"harness.metric_stack.{k}": v for k, v in result.stacks.items()})
    return result


def record(runner: Any, built: Built, result: Any) -> None:
    """Plots (built now, after training), the final weights, and the checkpoint file removed."""
    from harness.cell import plots

    tracker, run_id = runner.tracker, built.run_id
    title = f"{runner.suite.name}: {built.cell.run_name}"
    if built.snapshots:
        tracker.log_figure(run_id, plots.latent_snapshots(built.snapshots, title), "plots/latent.png")
    tracker.log_figure(run_id, plots.usage_histogram(result.counts, title), "plots/code_usage.png")
    tracker.log_figure(run_id, plots.training_curves(built.history, title), "plots/training_curves.png")
    if result.samples is not None:
        tracker.log_figure(run_id, plots.reconstruction_grid(*result.samples, title), "plots/reconstructions.png")
    log_final_weights(tracker, run_id, built.state)
    built.checkpointer.discard()


def log_final_weights(tracker: Any, run_id: str, state: TrainState) -> None:
    import io

    buffer = io.BytesIO()
    torch.save({"model": state.model.state_dict(), "quantizer": state.quantizer.state_dict(),
                "step": state.step, "epoch": state.epoch}, buffer)
    tracker.log_bytes(run_id, buffer.getvalue(), "checkpoint/final.pt")

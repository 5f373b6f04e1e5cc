"""The four stages of a cell: build -> train -> evaluate -> record, each with one job.

:class:`harness.cell.runner.CellRunner` calls them in order; each takes what the one
before returned. Rank 0 alone evaluates and records under torchrun. What each stage
writes to MLflow is said in :mod:`harness.cell.record`, through the cell's
:class:`~harness.cell.record.CellRecord`.
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
from harness.cell.record import CURVES, CellRecord, TrackerLog
from harness.cell.train import TrainState, cell_inputs, run, standard_callbacks, total_steps
from harness.recovery.checkpoint import Checkpointer, checkpoint_path
from harness.suite import Cell


@dataclass
class Built:
    """A cell ready to train: its resolved config, data, state, schedules, losses and checkpointer."""

    cell: Cell
    record: CellRecord
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

    @property
    def run_id(self) -> str:
        return self.record.run_id


# -- build ----------------------------------------------------------------------------

def build(runner: Any, cell: Cell, record: CellRecord) -> Built:
    """Config recorded, data, nets, optimizer, schedules, losses (set up), checkpointer."""
    host, device = runner.host, runner.device
    config = complete_config(host, cell)
    record.config(config)
    seed_everything(cell.seed)
    data = build_dataset(host, config, runner.options.data_root)
    splits = config["dataset"].get("splits") or {}  # a tuning trial: fit and select (harness.run.tune)
    train_set, val_set = data.build(splits.get("train", "train")), data.build(splits.get("eval", "val"))
    model = build_model(host, config).to(device)
    quantizer = build_quantizer(host, config).to(device)
    record.rate(model, quantizer, val_set, device)
    state = new_state(config, model, quantizer, device, len(train_set))
    losses = build_losses(host, config["train"]["loss"])
    losses.setup(state)
    distributed.wrap(state)  # DDP under torchrun, else nothing
    warn_codebook(cell, record, state, train_set)
    schedules = build_schedules(host, config)
    every = config["train"].get("checkpoint_every") if distributed.is_main() else None
    checkpointer = Checkpointer(checkpoint_path(runner.checkpoint_root, runner.suite.name, cell.config_hash),
                                cell.config_hash, schedules, every)
    return Built(cell, record, config, train_set, val_set, getattr(data, "modality", "points"), state,
                 schedules, losses, checkpointer)


def new_state(config: dict[str, Any], model: Any, quantizer: Any, device: torch.device,
              train_size: int) -> TrainState:
    optimizer = build_optimizer([*model.parameters(), *quantizer.parameters()], config["train"])
    steps, per_epoch = total_steps(config, train_size)
    return TrainState(model, quantizer, optimizer, config, device, steps, per_epoch)


def warn_codebook(cell: Cell, record: CellRecord, state: TrainState, train_set: Any) -> None:
    warning = codebook_vs_data(state.model, state.quantizer, train_set, state.device)
    if warning:
        print(f"harness: warning: {cell.run_name}: {warning}", file=sys.stderr)
        record.codebook_warning(warning)


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
    continue_from(built.state, built.schedules, resume, built.cell.config_hash)
    for m in built.record.resumed(resume, built.state.step):
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
        callbacks.insert(len(callbacks) - 1, diagnosis_for(built))
    runner.guard.watch(state)  # a signal now stops the loop between steps
    try:
        run(state, cell_inputs(state, built.train_set), built.losses, callbacks)
    finally:
        runner.guard.unwatch()
        if progress is not None:
            progress.close()


def diagnosis_for(built: Built) -> Any:
    """The cell's collapse diagnosis, logged as ``diag/*`` metrics and ``diagnosis.json``."""
    from harness.cell.diagnosis import diagnosis_callback

    return diagnosis_callback(built.state, built.val_set, built.record.diagnosis_metrics,
                              built.record.diagnosis_report)


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
        built.record.checkpointed(built.checkpointer.path, built.state.step)
        runner.guard.raise_if_requested()


# -- evaluate and record -----------------------------------------------------------------

def evaluate(runner: Any, built: Built) -> Any:
    """Metrics over the val split, logged at the last step; unavailable ones and stacks as tags."""
    from harness.cell.evaluate import evaluate as evaluate_split

    state = built.state
    result = evaluate_split(runner.host, state.model, state.quantizer, built.val_set, built.config,
                            state.device, modality=built.modality)
    built.record.evaluation(result, state.steps_total)
    return result


def record(runner: Any, built: Built, result: Any) -> None:
    """Plots (built now, after training), the final weights, and the checkpoint file removed."""
    built.record.outputs(f"{runner.suite.name}: {built.cell.run_name}", built, result)
    built.checkpointer.discard()

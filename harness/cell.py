"""One cell: build, train, evaluate and record it into one MLflow run.

The suite lifecycle (:mod:`harness.runner`) decides which cells run and where;
this module is what runs a single cell wherever it is sent.
"""

from __future__ import annotations

import random
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness import __version__, distributed, plots
from harness.adversarial import install as install_adversarial
from harness.build import (
    build_dataset,
    build_model,
    build_quantizer,
    build_schedules,
    codebook_vs_data,
    complete_config,
)
from harness.checkpoint import Checkpointer, checkpoint_path, checkpoint_root
from harness.errors import UsageError
from harness.evaluate import evaluate
from harness.host import Host
from harness.interrupt import InterruptGuard
from harness.options import RunOptions
from harness.provenance import provenance_tags, rate_tags
from harness.resume import Resume, continue_from
from harness.suite import Cell, Suite
from harness.tracking import Tracker, flatten, git_commit, tags_for
from harness.train import TrainState, total_steps, train


@dataclass
class CellResult:
    cell: Cell
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    run_id: str | None = None
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        return {"key": self.cell.key, "metrics": self.metrics, "status": self.status}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is available")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


@contextmanager
def intra_op_threads(threads: int, device: torch.device) -> Iterator[None]:
    """Run a cell with ``train.threads`` CPU threads (0: PyTorch's default), then restore.

    The toy suites set 1: their 2D batches gain nothing from a thread pool, and
    on a busy machine (pytest-xdist workers, ``--jobs``) idle pool threads spin
    and slow every step many times over.
    """
    previous = torch.get_num_threads()
    if threads and device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cell_tags(host: Host, suite: Suite, cell: Cell, device: torch.device) -> dict[str, str]:
    entry = host.quantizers.get(cell.quantizer)
    source = entry.source
    return {**provenance_tags(entry), **tags_for([
        ("kind", "cell"), ("suite", suite.name), ("suite_version", suite.version),
        ("profile", suite.profile), ("version", __version__), ("git_commit", git_commit()),
        ("method", cell.method), ("quantizer", cell.quantizer),
        ("codebook_size", cell.codebook_size), ("dim", cell.dim), ("seed", cell.seed),
        ("plugin", source.plugin), ("plugin_distribution", source.distribution),
        ("plugin_version", source.version), ("device", str(device)),
        ("config_hash", cell.config_hash), ("group_hash", group_hash(cell)),
    ])}


def group_hash(cell: Cell) -> str:
    """Hash of the config without the seed: the cells one leaderboard row averages."""
    import hashlib
    import json

    config = {k: v for k, v in cell.config.items() if k != "seed"}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


class CellRunner:
    """Trains and evaluates one cell into one MLflow run."""

    def __init__(self, host: Host, suite: Suite, tracker: Tracker, options: RunOptions) -> None:
        self.host, self.suite, self.tracker, self.options = host, suite, tracker, options
        self.device = distributed.local_device(resolve_device(options.device))
        self.guard = InterruptGuard()  # run_suite enters it; unentered it never fires
        self.checkpoint_root = checkpoint_root(tracker.uri)

    def run(self, cell: Cell, parent: str | None = None, resume: Resume | None = None) -> CellResult:
        start = time.perf_counter()
        tags = cell_tags(self.host, self.suite, cell, self.device)
        run_id = self.tracker.start_run(self.suite.name, cell.run_name, tags, parent=parent)
        try:
            with intra_op_threads(cell.config["train"].get("threads", 0), self.device):
                result = self._train_and_evaluate(cell, run_id, resume)
        except KeyboardInterrupt:
            self.tracker.end_run(run_id, "KILLED")
            raise
        except Exception as exc:
            text = traceback.format_exc()
            self.tracker.log_text(run_id, text, "traceback.txt")
            self.tracker.set_tags(run_id, {"harness.error": f"{type(exc).__name__}: {exc}"[:5000]})
            self.tracker.end_run(run_id, "FAILED")
            return CellResult(cell, "FAILED", error=f"{type(exc).__name__}: {exc}", run_id=run_id,
                              seconds=time.perf_counter() - start)
        self.tracker.end_run(run_id, "FINISHED")
        result.run_id, result.seconds = run_id, time.perf_counter() - start
        return result

    def _train_and_evaluate(self, cell: Cell, run_id: str, resume: Resume | None = None) -> CellResult:
        host, tracker, device = self.host, self.tracker, self.device
        config = complete_config(host, cell)
        tracker.log_params(run_id, flatten(config))
        tracker.log_json(run_id, config, "config.json")

        seed_everything(cell.seed)
        data = build_dataset(host, config, self.options.data_root)
        train_set, val_set = data.build("train"), data.build("val")
        modality = getattr(data, "modality", "points")
        model = build_model(host, config).to(device)
        quantizer = build_quantizer(host, config).to(device)
        tracker.set_tags(run_id, rate_tags(model, quantizer, val_set, device))  # harness.provenance
        schedules = build_schedules(host, config)
        cfg = config["train"]
        params = [*model.parameters(), *quantizer.parameters()]
        optimizer = torch.optim.Adam(params, lr=cfg["lr"], betas=tuple(cfg["betas"]),
                                     weight_decay=cfg["weight_decay"])
        steps, per_epoch = total_steps(config, len(train_set))
        state = TrainState(model, quantizer, optimizer, config, device, steps, per_epoch)
        if cfg.get("discriminator"):
            install_adversarial(state)  # harness.adversarial: active while loss_weights["adv"] > 0
        distributed.wrap(state)  # DDP under torchrun, else nothing
        warning = codebook_vs_data(model, quantizer, train_set, device)
        if warning:
            print(f"harness: warning: {cell.run_name}: {warning}", file=sys.stderr)
            tracker.set_tags(run_id, {"harness.warning.codebook_vs_data": warning})
        checkpointer = Checkpointer(checkpoint_path(self.checkpoint_root, self.suite.name, cell.config_hash),
                                    cell.config_hash, schedules,
                                    cfg.get("checkpoint_every") if distributed.is_main() else None)

        history: dict[str, list[tuple[int, Any]]] = {}
        if resume is not None and resume.checkpoint is not None:
            for m in continue_from(tracker, run_id, state, schedules, resume, cell.config_hash):
                if m.key in ("train/loss", "train/rec", "train/utilization"):
                    history.setdefault(m.key, []).append((m.step, m.value))

        def log(values: dict[str, Any], step: int) -> None:
            tracker.log_metrics(run_id, values, step)
            for key in ("train/loss", "train/rec", "train/utilization"):
                if key in values:
                    history.setdefault(key, []).append((step, values[key]))

        snapshots: list[dict[str, Any]] = []
        want_latent = "latent" in config["eval"]["plots"] and cell.dim == 2
        on_snapshot = (lambda s: snapshots.append(latent_snapshot(s, val_set))) if want_latent else None

        progress = None
        if self.options.progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=steps, desc=cell.run_name, unit="step", leave=False, dynamic_ncols=True)
        self.guard.watch(state)  # a signal now stops the loop between steps
        try:
            train(state, train_set, [checkpointer, *schedules], log=log, on_snapshot=on_snapshot,
                  progress=progress)
        finally:
            self.guard.unwatch()
            if progress is not None:
                progress.close()
        if not distributed.is_main():  # rank 0 checkpoints, evaluates and records
            self.guard.raise_if_requested()
            return CellResult(cell, "FINISHED")
        if self.guard.requested or checkpointer.every:  # keep the trained state if eval is interrupted
            tracker.flush(run_id)
            checkpointer.save(state)
        if self.guard.requested:
            tracker.set_tags(run_id, {"harness.checkpoint": str(checkpointer.path),
                                      "harness.checkpoint_step": str(state.step)})
            self.guard.raise_if_requested()

        result = evaluate(host, model, quantizer, val_set, config, device, modality=modality)
        tracker.log_metrics(run_id, {f"eval/{k}": v for k, v in result.values.items()}, steps)
        if result.unavailable:
            tracker.set_tags(run_id, {f"harness.unavailable.{k}": v[:5000] for k, v in result.unavailable.items()})
            tracker.log_json(run_id, result.unavailable, "unavailable_metrics.json")
        if result.stacks:
            tracker.set_tags(run_id, {f"harness.metric_stack.{k}": v for k, v in result.stacks.items()})

        title = f"{self.suite.name}: {cell.run_name}"
        if snapshots:
            tracker.log_figure(run_id, plots.latent_snapshots(snapshots, title), "plots/latent.png")
        tracker.log_figure(run_id, plots.usage_histogram(result.counts, title), "plots/code_usage.png")
        curves = {k: [(s, float(v)) for s, v in pts] for k, pts in history.items()}
        tracker.log_figure(run_id, plots.training_curves(curves, title), "plots/training_curves.png")
        if result.samples is not None:
            tracker.log_figure(run_id, plots.reconstruction_grid(*result.samples, title),
                               "plots/reconstructions.png")
        self._log_checkpoint(run_id, state)
        checkpointer.discard()
        return CellResult(cell, "FINISHED", result.values, result.unavailable)

    def _log_checkpoint(self, run_id: str, state: TrainState) -> None:
        import io

        buffer = io.BytesIO()
        torch.save({"model": state.model.state_dict(), "quantizer": state.quantizer.state_dict(),
                    "step": state.step, "epoch": state.epoch}, buffer)
        self.tracker.log_bytes(run_id, buffer.getvalue(), "checkpoint/final.pt")


@torch.no_grad()
def latent_snapshot(state: TrainState, val_set: Any, max_points: int = 2000) -> dict[str, Any]:
    """Encoded val points, their labels and the codebook at this step (toy suites)."""
    from harness.ops import nearest_code
    from harness.train import split_batch

    n = min(len(val_set), max_points)
    items = [val_set[i] for i in range(n)]
    if isinstance(items[0], (tuple, list)):
        x = torch.stack([it[0] for it in items])
        labels = torch.as_tensor([int(it[1]) for it in items])
    else:
        x, labels = torch.stack(items), None
    x, _ = split_batch(x, state.device)
    was = state.model.training
    state.model.eval()
    z = state.model.encode(x).float()
    state.model.train(was)
    codes = state.quantizer.codebook() if hasattr(state.quantizer, "codebook") else None
    used = None
    if codes is not None:
        codes = codes.detach().float().clone()  # on CPU .cpu() would alias the live parameter
        used = torch.zeros(codes.shape[0], dtype=torch.bool)
        used[nearest_code(z, codes).cpu()] = True
        codes = codes.cpu()
    return {"step": state.step, "z": z.cpu(), "labels": labels, "codes": codes, "used": used}

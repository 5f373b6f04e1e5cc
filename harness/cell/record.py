"""Everything a cell records in MLflow, assembled here: "what does a cell record?" has this answer.

A cell's run is nested under the suite's parent run. In the order the cell writes it:

- opened (:meth:`CellRecord.open`) with :func:`cell_tags`: ``harness.kind = cell``, ``harness.suite``,
  ``suite_version``, ``profile``, ``version``, ``git_commit``, ``method``, ``quantizer``,
  ``codebook_size``, ``dim``, ``seed``, ``plugin``, ``plugin_distribution``, ``plugin_version``,
  ``device``, ``config_hash``, ``group_hash``, ``tuning`` (``shared``, ``trial`` or ``tuned``) and
  ``harness.plugin_digest`` (:mod:`harness.cell.provenance`); a worker process adds
  ``harness.pid``, ``harness.hostname`` and ``harness.pid_start`` to every run it starts
  (:class:`harness.run.executors.ProcessTracker`), so a dead one can be told from a live one;
- built (:meth:`~CellRecord.config`, :meth:`~CellRecord.rate`, :meth:`~CellRecord.codebook_warning`):
  params = the resolved config flattened (``quantizer.beta``) and ``config.json``; the rate
  tags ``harness.bits_per_token``, ``harness.tokens_per_item``, ``harness.pixels_per_item``
  (or ``harness.rate_error``); ``harness.warning.codebook_vs_data`` when the data is too small;
- resumed (:meth:`~CellRecord.resumed`): ``harness.resumed_at_step``, ``harness.resumed_from`` and
  the earlier run's ``train/*`` points up to the checkpoint's step; the earlier run gets
  ``harness.resumed_by`` and, if still RUNNING, is closed KILLED;
- trained (:class:`TrackerLog`, :meth:`~CellRecord.diagnosis_metrics`,
  :meth:`~CellRecord.diagnosis_report`): ``train/*`` metrics at each log step, ``diag/*``
  metrics and ``diagnosis.json`` (:mod:`harness.cell.diagnosis`);
- stopped by a signal (:meth:`~CellRecord.checkpointed`): ``harness.checkpoint``, ``harness.checkpoint_step``;
- evaluated (:meth:`~CellRecord.evaluation`): ``eval/*`` at the last step; ``harness.eval_tokens`` (the
  tokens the eval split fed the quantizer); ``harness.unavailable.<metric>``
  and ``unavailable_metrics.json`` for a metric that could not run; ``harness.metric_stack.<metric>``;
  ``harness.metric_directions`` (each metric's direction, JSON);
- recorded (:meth:`~CellRecord.outputs`): ``plots/figures.pt`` (what the figures are drawn from)
  and ``checkpoint/final.pt``; the suite's process then draws ``plots/latent.png`` (when asked for),
  ``plots/code_usage.png``, ``plots/training_curves.png`` and ``plots/reconstructions.png`` (images)
  from it (:func:`harness.cell.plots.draw_recorded`);
- closed: FINISHED; KILLED on an interrupt; FAILED with ``harness.error`` and ``traceback.txt``
  (:meth:`~CellRecord.failed`).

Written about a cell afterwards, by the layers that learn it, through the functions at the
end of this module: a cell whose worker was lost (:func:`close_lost`: ``harness.error``,
``harness.log``, the engine's job tags), a run still RUNNING when its suite ended
(:func:`close_orphan`), a tuned cell's cost (:func:`tuning_cost`: ``harness.tuned.*``).
The recovery layer, a floor below this one, writes its own repairs on runs whose process is
gone: ``harness runs repair`` (``harness.repaired``), a full store (``harness.error``), a
``--resume`` that gives way (deletes its own run). Every write goes through
:class:`harness.tracking.Tracker`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from harness import __version__
from harness.cell.provenance import DIRECTIONS_TAG, provenance_tags, rate_tags
from harness.host import Host
from harness.suite import Cell, Suite
from harness.tracking import (
    Tracker,
    as_floats,
    close_guarded,
    flatten,
    git_commit,
    guarded,
    tags_for,
)

#: the curves the training-curves plot shows (kept from the log steps, and from a resumed run)
CURVES = ("train/loss", "train/rec", "train/utilization")


def cell_tags(host: Host, suite: Suite, cell: Cell, device: torch.device) -> dict[str, str]:
    """What produced the cell's numbers: suite, method, plugin and its code, device, config hash."""
    entry = host.quantizers.get(cell.quantizer)
    source = entry.source
    return {**provenance_tags(entry), **tags_for([
        ("kind", "cell"), ("suite", suite.name), ("suite_version", suite.version),
        ("profile", suite.profile), ("version", __version__), ("git_commit", git_commit()),
        ("method", cell.method), ("quantizer", cell.quantizer),
        ("codebook_size", cell.codebook_size), ("dim", cell.dim), ("seed", cell.seed),
        ("plugin", source.plugin), ("plugin_distribution", source.distribution),
        ("plugin_version", source.version), ("device", str(device)),
        ("config_hash", cell.config_hash), ("group_hash", cell.group_hash),
        ("tuning", tuning_role(cell.config)),
    ])}


def tuning_role(config: dict[str, Any]) -> str:
    """``trial`` (a `harness tune` trial, scored on the selection split: never on a page),
    ``tuned`` (at a setting `harness tune` chose) or ``shared`` (the suite's own recipe)."""
    if config["dataset"].get("splits"):
        return "trial"
    return "tuned" if config.get("tuned") else "shared"


@dataclass(frozen=True)
class CellRecord:
    """The writes of one cell into its run; ``tracker`` records nothing on ranks other than 0."""

    tracker: Any
    run_id: str

    @classmethod
    def open(cls, tracker: Any, host: Host, suite: Suite, cell: Cell, device: torch.device,
             parent: str | None) -> CellRecord:
        """Start the cell's run under ``parent``, tagged with :func:`cell_tags`."""
        tags = cell_tags(host, suite, cell, device)
        return cls(tracker, tracker.start_run(suite.name, cell.run_name, tags, parent=parent))

    # -- build ----------------------------------------------------------------------------
    def config(self, config: dict[str, Any]) -> None:
        """The resolved config: flattened as params, whole as ``config.json``."""
        self.tracker.log_params(self.run_id, flatten(config))
        self.tracker.log_json(self.run_id, config, "config.json")

    def rate(self, model: Any, quantizer: Any, val_set: Any, device: torch.device) -> None:
        """Bits per token, tokens and pixels per item (harness.cell.provenance)."""
        self.tracker.set_tags(self.run_id, rate_tags(model, quantizer, val_set, device))

    def codebook_warning(self, warning: str) -> None:
        self.tracker.set_tags(self.run_id, {"harness.warning.codebook_vs_data": warning})

    # -- resume and train -----------------------------------------------------------------
    def resumed(self, resume: Any, step: int) -> list[Any]:
        """A run continued from a checkpoint at ``step``: both runs tagged, earlier curves copied.

        Returns the copied ``train/*`` points (the training-curves plot starts from them).
        """
        tracker, tags = self.tracker, {"harness.resumed_at_step": str(step)}
        points: list[Any] = []
        if resume.previous_run_id:
            tags["harness.resumed_from"] = resume.previous_run_id
            points = tracker.copy_metrics(resume.previous_run_id, self.run_id, "train/", step) or []
            tracker.set_tags(resume.previous_run_id, {"harness.resumed_by": self.run_id})
            if resume.run.info.status == "RUNNING":  # its process died unhandled (SIGKILL, power cut)
                tracker.end_run(resume.previous_run_id, "KILLED")
        tracker.set_tags(self.run_id, tags)
        return points

    def diagnosis_metrics(self, values: dict[str, Any], step: int) -> None:
        self.tracker.log_metrics(self.run_id, values, step)

    def diagnosis_report(self, report: dict[str, Any]) -> None:
        from harness.cell.diagnosis_file import ARTIFACT

        self.tracker.log_json(self.run_id, report, ARTIFACT)

    def checkpointed(self, path: Any, step: int) -> None:
        """Where a cell stopped by a signal left its checkpoint (``--resume`` continues from it)."""
        self.tracker.set_tags(self.run_id, {"harness.checkpoint": str(path), "harness.checkpoint_step": str(step)})

    # -- evaluate and record --------------------------------------------------------------
    def evaluation(self, result: Any, step: int) -> None:
        """``eval/*`` at ``step``; as tags, in one write: the split's token count (it bounds the
        codes it can show in use), metrics that could not run, each metric's stack and direction
        (the page ranks by what the cell recorded, not by installed plugins)."""
        tracker, run_id = self.tracker, self.run_id
        tracker.log_metrics(run_id, {f"eval/{k}": v for k, v in result.values.items()}, step)
        tags = {f"harness.unavailable.{k}": v[:5000] for k, v in result.unavailable.items()}
        tags.update({f"harness.metric_stack.{k}": v for k, v in result.stacks.items()})
        if result.counts:
            tags["harness.eval_tokens"] = str(int(result.counts[0].sum()))
        if result.directions:
            tags[DIRECTIONS_TAG] = json.dumps(result.directions, sort_keys=True)
        if tags:
            tracker.set_tags(run_id, tags)
        if result.unavailable:
            tracker.log_json(run_id, result.unavailable, "unavailable_metrics.json")

    def outputs(self, title: str, built: Any, result: Any) -> None:
        """What the figures are drawn from, and the final weights.

        The figures themselves are drawn after the cell, by the process that ran the suite
        (:func:`harness.cell.plots.draw_recorded`): matplotlib and its drawing time stay out of
        the worker and out of the cell's timed span."""
        import io

        from harness.cell.figure_data import FIGURE_DATA, figure_data

        buffer = io.BytesIO()
        torch.save(figure_data(title, built.snapshots, result.counts, built.history, result.samples), buffer)
        self.tracker.log_bytes(self.run_id, buffer.getvalue(), FIGURE_DATA)
        self.final_weights(built.state)

    def final_weights(self, state: Any) -> None:
        import io

        buffer = io.BytesIO()
        torch.save({"model": state.model.state_dict(), "quantizer": state.quantizer.state_dict(),
                    "step": state.step, "epoch": state.epoch}, buffer)
        self.tracker.log_bytes(self.run_id, buffer.getvalue(), "checkpoint/final.pt")

    # -- close ----------------------------------------------------------------------------
    def finished(self) -> None:
        self.tracker.end_run(self.run_id, "FINISHED")

    def killed(self) -> None:
        self.tracker.end_run(self.run_id, "KILLED")

    def failed(self, error: str, text: str) -> None:
        """FAILED with the error and its traceback; each write guarded, as the one that failed
        the cell (read-only artifacts, full disk) may fail here too."""
        run_id = self.run_id
        guarded("tagging the error", lambda: self.tracker.set_tags(run_id, {"harness.error": error[:5000]}))
        guarded("saving traceback.txt", lambda: self.tracker.log_text(run_id, text, "traceback.txt"))
        close_guarded(self.tracker, run_id, "FAILED")


class TrackerLog:
    """A log step's ``train/*`` values: read from the device in one transfer, queued for the
    tracker, the :data:`CURVES` kept for the plot."""

    def __init__(self, tracker: Any, run_id: str, history: dict[str, list[tuple[int, float]]]) -> None:
        self.tracker, self.run_id, self.history = tracker, run_id, history

    def __call__(self, values: dict[str, Any], step: int) -> None:
        numbers = as_floats(values)
        self.tracker.log_metrics(self.run_id, numbers, step)
        for key in CURVES:
            if key in numbers:
                self.history.setdefault(key, []).append((step, numbers[key]))


# -- written about a cell afterwards ------------------------------------------------------------

def close_lost(tracker: Tracker, run_id: str, status: str, reason: str, log_path: str | None = None,
               engine_tags: Mapping[str, str] | None = None) -> None:
    """A cell whose worker died: why (``harness.error``), its log, the engine's job or task id."""
    tags = {"harness.error": reason[:5000], **({"harness.log": log_path} if log_path else {})}
    tracker.set_tags(run_id, {**tags, **dict(engine_tags or {})})
    tracker.end_run(run_id, status)


def close_orphan(tracker: Tracker, run_id: str, status: str) -> None:
    """A cell run still RUNNING when its suite ended: its process stopped without closing it."""
    tracker.set_tags(run_id, {"harness.error": "still RUNNING when the suite ended: its process "
                                               "stopped without closing it"})
    tracker.end_run(run_id, status)


def tuning_cost(tracker: Tracker, run_id: str, cost_s: float, trials: int, values: str) -> None:
    """What a tuned cell's setting cost: its configuration's trials and their total wall time."""
    tracker.set_tags(run_id, {"harness.tuned.cost_s": f"{cost_s:.3f}", "harness.tuned.trials": str(trials),
                              "harness.tuned.values": values})

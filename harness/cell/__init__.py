"""The cell pipeline in layers: build -> train -> evaluate -> record.

- :mod:`~harness.cell.forward`: the forward pass and the batch sources;
- :mod:`~harness.cell.losses`: ``train.loss`` specs and the loss plugins of a cell;
- :mod:`~harness.cell.optim`: ``train.optimizer`` and ``train.lr_decay``;
- :mod:`~harness.cell.callbacks`: what runs around the steps (logging, usage, snapshots);
- :mod:`~harness.cell.contract`: the run-time check of the quantizer's output;
- :mod:`~harness.cell.stages`: the four stages of :class:`harness.cell.runner.CellRunner`.

The loop itself is :func:`harness.cell.train.run`.
"""

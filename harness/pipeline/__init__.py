"""The cell pipeline in layers: build -> train -> evaluate -> record.

- :mod:`~harness.pipeline.forward`: the forward pass and the batch sources;
- :mod:`~harness.pipeline.losses`: ``train.loss`` specs and the loss plugins of a cell;
- :mod:`~harness.pipeline.optim`: ``train.optimizer`` and ``train.lr_decay``;
- :mod:`~harness.pipeline.callbacks`: what runs around the steps (logging, usage, snapshots);
- :mod:`~harness.pipeline.contract`: the run-time check of the quantizer's output;
- :mod:`~harness.pipeline.stages`: the four stages of :class:`harness.cell.CellRunner`.

The loop itself is :func:`harness.train.run`.
"""

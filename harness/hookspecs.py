"""The hooks a harness plugin can implement; each receives a ``register`` callable."""

import pluggy

hookspec = pluggy.HookspecMarker("harness")


@hookspec
def harness_register_quantizers(register):
    """Register quantizer classes (``torch.nn.Module`` built as ``Q(dim=, codebook_size=, **params)``)."""


@hookspec
def harness_register_datasets(register):
    """Register dataset classes that build a ``torch.utils.data.Dataset`` for a split."""


@hookspec
def harness_register_models(register):
    """Register encoder/decoder model classes built with the cell's latent dimension."""


@hookspec
def harness_register_schedules(register):
    """Register schedule classes that act on the training state during a cell."""


@hookspec
def harness_register_metrics(register):
    """Register metric classes streamed over the eval split (``update`` then ``compute``)."""


@hookspec
def harness_register_losses(register):
    """Register training loss classes (:class:`harness.contracts.Loss`) a suite lists in ``train.loss``."""


@hookspec
def harness_register_executors(register):
    """Register executor classes (:class:`harness.run.executors.Executor`) that run a suite's cells somewhere."""

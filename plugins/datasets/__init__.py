"""Dataset plugins: one module per dataset, registered here."""

from harness import hookimpl


@hookimpl
def harness_register_datasets(register):
    from harness.plugins.datasets.toy2d import TwoClusters

    register(TwoClusters)

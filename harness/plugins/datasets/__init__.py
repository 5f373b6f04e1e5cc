"""Dataset plugins: one module per dataset, registered here."""

from harness import hookimpl


@hookimpl
def harness_register_datasets(register):
    from harness.plugins.datasets.drift2d import Drift2dCloud
    from harness.plugins.datasets.toy2d import TwoClusters

    register(TwoClusters)
    register(Drift2dCloud)

    from harness.plugins.datasets.celebahq import CelebAHQ
    from harness.plugins.datasets.digits import Digits
    from harness.plugins.datasets.imagenet import ImageNet

    for dataset in (Digits, CelebAHQ, ImageNet):
        register(dataset)

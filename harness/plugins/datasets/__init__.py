"""Dataset plugins: one module per dataset, registered here.

Each entry is lazy: ``name: "module:Class"``, imported the first time a cell, a check or
a kit uses it, so ``harness list`` imports no torch (docs/hooks.md). Adding one is one line
here, beside its module.
"""

from harness import hookimpl

#: registry name -> the class, as a lazy ``"module:Class"`` target
DATASETS = {
    "two-clusters": "harness.plugins.datasets.toy2d:TwoClusters",
    "drift2d":      "harness.plugins.datasets.drift2d:Drift2dCloud",
    "digits":       "harness.plugins.datasets.digits:Digits",
    "celebahq":     "harness.plugins.datasets.celebahq:CelebAHQ",
    "imagenet":     "harness.plugins.datasets.imagenet:ImageNet",
}


@hookimpl
def harness_register_datasets(register):
    for name, target in DATASETS.items():
        register(target, name=name)

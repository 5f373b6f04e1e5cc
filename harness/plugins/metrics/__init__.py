"""Metric plugins: one module per family, registered here.

Each entry is lazy: ``name: "module:Class"``, imported the first time a cell, a check or
a kit uses it, so ``harness list`` imports no torch (docs/hooks.md). Adding one is one line
here, beside its module.
"""

from harness import hookimpl

#: registry name -> the class, as a lazy ``"module:Class"`` target
METRICS = {
    "utilization":   "harness.plugins.metrics.codes:Utilization",
    "perplexity":    "harness.plugins.metrics.codes:Perplexity",
    "dead_codes":    "harness.plugins.metrics.codes:DeadCodes",
    "mse":           "harness.plugins.metrics.reconstruction:MSE",
    "separated":     "harness.plugins.metrics.toy:Separated",
    "cluster_codes": "harness.plugins.metrics.toy:ClusterCodes",
    "psnr":          "harness.plugins.metrics.pixel:PSNR",
    "ssim":          "harness.plugins.metrics.pixel:SSIM",
    "lpips":         "harness.plugins.metrics.perceptual:LPIPS",
    "rfid":          "harness.plugins.metrics.fid:RFID",
}


@hookimpl
def harness_register_metrics(register):
    for name, target in METRICS.items():
        register(target, name=name)

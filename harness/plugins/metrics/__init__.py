"""Metric plugins: one module per family, registered here."""

from harness import hookimpl


@hookimpl
def harness_register_metrics(register):
    from harness.plugins.metrics.codes import DeadCodes, Perplexity, Utilization
    from harness.plugins.metrics.fid import RFID
    from harness.plugins.metrics.perceptual import LPIPS
    from harness.plugins.metrics.pixel import PSNR, SSIM
    from harness.plugins.metrics.reconstruction import MSE
    from harness.plugins.metrics.toy import ClusterCodes, Separated

    for metric in (Utilization, Perplexity, DeadCodes, MSE, Separated, ClusterCodes, PSNR, SSIM, LPIPS, RFID):
        register(metric)

"""Loss plugins: the training loss terms a suite composes in ``train.loss``, registered here."""

from harness import hookimpl


@hookimpl
def harness_register_losses(register):
    from harness.plugins.losses.patchgan import PatchGAN
    from harness.plugins.losses.perceptual import LPIPSLoss
    from harness.plugins.losses.pixel import L1, MSE

    for loss in (MSE, L1, LPIPSLoss, PatchGAN):
        register(loss)

    from harness.plugins.losses.gaussian_mle import GaussianMLE

    register(GaussianMLE)

"""Quantizer plugins: one module per method, registered here."""

from harness import hookimpl


@hookimpl
def harness_register_quantizers(register):
    from harness.plugins.quantizers.drifting import DriftingVQ
    from harness.plugins.quantizers.vq import VectorQuantizer

    register(VectorQuantizer)
    register(DriftingVQ)

    from harness.plugins.quantizers.fsq import FSQ
    from harness.plugins.quantizers.gumbel import GumbelQuantizer
    from harness.plugins.quantizers.lfq import LFQ
    from harness.plugins.quantizers.residual import ResidualVQ
    from harness.plugins.quantizers.rotation import RotationTrickVQ

    for cls in (GumbelQuantizer, RotationTrickVQ, FSQ, LFQ, ResidualVQ):
        register(cls)

    from harness.plugins.quantizers.ema import EMAQuantizer
    from harness.plugins.quantizers.ns_vq import NonStationaryVQ
    from harness.plugins.quantizers.nsvq import NSVQ
    from harness.plugins.quantizers.simvq import SimVQ
    from harness.plugins.quantizers.transvq import TransVQ, TransVQMLP
    from harness.plugins.quantizers.vqgan_fc import VQGANFC

    for cls in (EMAQuantizer, SimVQ, VQGANFC, NonStationaryVQ, TransVQ, TransVQMLP, NSVQ):
        register(cls)

    from harness.plugins.quantizers.bsq import BSQ
    from harness.plugins.quantizers.gsq import GSQ
    from harness.plugins.quantizers.ibq import IBQ
    from harness.plugins.quantizers.optvq import OptVQ

    for cls in (IBQ, BSQ, GSQ, OptVQ):
        register(cls)

    from harness.plugins.quantizers.cvq import CVQ
    from harness.plugins.quantizers.sqvae import SQVAE

    for cls in (CVQ, SQVAE):
        register(cls)

    from harness.plugins.quantizers.diveq import DiVeQ, SFDiVeQ

    for cls in (DiVeQ, SFDiVeQ):
        register(cls)

    from harness.plugins.quantizers.residual_fsq import ResidualFSQ

    for cls in (ResidualFSQ,):
        register(cls)

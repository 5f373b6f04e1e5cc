"""Quantizer plugins: one module per method, registered here.

Each entry is lazy: ``name: "module:Class"``, imported the first time a cell, a check or
a kit uses it, so ``harness list`` imports no torch (docs/hooks.md). Adding one is one line
here, beside its module.
"""

from harness import hookimpl

#: registry name -> the class, as a lazy ``"module:Class"`` target
QUANTIZERS = {
    "vq":          "harness.plugins.quantizers.vq:VectorQuantizer",
    "drifting":    "harness.plugins.quantizers.drifting:DriftingVQ",
    "gumbel":      "harness.plugins.quantizers.gumbel:GumbelQuantizer",
    "rotation":    "harness.plugins.quantizers.rotation:RotationTrickVQ",
    "fsq":         "harness.plugins.quantizers.fsq:FSQ",
    "lfq":         "harness.plugins.quantizers.lfq:LFQ",
    "residual-vq": "harness.plugins.quantizers.residual:ResidualVQ",
    "ema":         "harness.plugins.quantizers.ema:EMAQuantizer",
    "simvq":       "harness.plugins.quantizers.simvq:SimVQ",
    "vqgan-fc":    "harness.plugins.quantizers.vqgan_fc:VQGANFC",
    "ns-vq":       "harness.plugins.quantizers.ns_vq:NonStationaryVQ",
    "transvq":     "harness.plugins.quantizers.transvq:TransVQ",
    "transvq-mlp": "harness.plugins.quantizers.transvq:TransVQMLP",
    "nsvq":        "harness.plugins.quantizers.nsvq:NSVQ",
    "ibq":         "harness.plugins.quantizers.ibq:IBQ",
    "bsq":         "harness.plugins.quantizers.bsq:BSQ",
    "gsq":         "harness.plugins.quantizers.gsq:GSQ",
    "optvq":       "harness.plugins.quantizers.optvq:OptVQ",
    "cvq":         "harness.plugins.quantizers.cvq:CVQ",
    "sqvae":       "harness.plugins.quantizers.sqvae:SQVAE",
    "residual-fsq": "harness.plugins.quantizers.residual_fsq:ResidualFSQ",
    "residual-lfq": "harness.plugins.quantizers.residual_lfq:ResidualLFQ",
    "grouped-residual-vq": "harness.plugins.quantizers.grouped_residual:GroupedResidualVQ",
    "qlae": "harness.plugins.quantizers.qlae:LatentQuantization",
    "best-rq": "harness.plugins.quantizers.best_rq:RandomProjectionQuantizer",
    "diveq":       "harness.plugins.quantizers.diveq:DiVeQ",
    "sf-diveq":    "harness.plugins.quantizers.diveq:SFDiVeQ",
    "fsp":         "harness.plugins.quantizers.fsp:FSP",
    "vqbridge":    "harness.plugins.quantizers.vqbridge:VQBridge",
    "qinco":       "harness.plugins.quantizers.qinco:QINCo",
    "msvq":        "harness.plugins.quantizers.msvq:MultiScaleVQ",
    "leech-sq":    "harness.plugins.quantizers.leech:SphericalLeechQuantizer",
}


@hookimpl
def harness_register_quantizers(register):
    for name, target in QUANTIZERS.items():
        register(target, name=name)

"""The suite file's schema: its tables and keys, the accepted types, the defaults.

Plain data with no imports from the rest of the suite package, so the loader
(``harness.suite``), the value checks, the claim model and the tuning protocol
all read it without importing each other.
"""

from __future__ import annotations

from typing import Any

PROFILES = ("full", "smoke")
Number = (int, float)

# The schema: table -> key -> accepted types. "table" values are free-form
# tables whose keys are checked later against the plugin they configure.
SCHEMA: dict[str, dict[str, tuple[type, ...] | str]] = {
    "suite": {"name": (str,), "version": (int,), "description": (str,), "paper": (str,),
              "primary_metric": (str,)},
    # splits: {train, eval} split names, written by `harness tune` for its trials (harness.run.tune)
    "dataset": {"name": (str,), "params": "table", "splits": "table"},
    "model": {"name": (str,), "params": "table"},
    "train": {"steps": (int,), "epochs": (int,), "batch_size": (int,), "lr": Number,
              "optimizer": (str,), "betas": (list,), "weight_decay": Number,
              "grad_clip": Number, "loss": (str, list), "lpips_weight": Number, "momentum": Number,
              "precision": (str,), "log_every": (int,), "snapshot_steps": (list,),
              "num_workers": (int,), "lr_decay": Number, "channels_last": (bool,),
              "checkpoint_every": (int,), "threads": (int,), "lpips_net": (str,), "discriminator": (bool,),
              "disc_lr": Number, "disc_weight": Number, "disc_layers": (int,), "timeout": Number},
    "eval": {"metrics": (list,), "plots": (list,), "batch_size": (int,), "max_items": (int,)},
    "matrix": {"method": (list,), "codebook_size": (list,), "dim": (list,), "seeds": (int,)},
    "executor": {"name": (str,), "options": "table"},  # where cells run (harness.run.options)
    # the tuning protocol of `harness tune` (harness.suite.tuning checks the values)
    "tuning": {"budget": (int,), "space": "table", "metric": (str,), "direction": (str,), "split": (str,),
               "plugin_knobs": (bool,)},
    # written by `harness tune` on the cells it runs at a chosen setting (part of their config)
    "tuned": {"budget": (int,), "values": "table", "metric": (str,), "split": (str,)},
}
METHOD_KEYS: dict[str, tuple[type, ...] | str] = {
    "quantizer": (str,), "params": "table", "schedules": (list,), "description": (str,),
    # the codebook sizes this method runs at, replacing matrix.codebook_size for it
    "codebook_size": (list,),
    # overrides of [model] params for this method (e.g. one label per toy2d-drift demo)
    "model_params": "table",
    # the method's own train.loss (SQ-VAE trains with gaussian-mle), replacing the suite's for its cells
    "loss": (list,),
}
SCHEDULE_KEYS: dict[str, tuple[type, ...] | str] = {"name": (str,), "params": "table"}
CLAIM_KEYS: dict[str, tuple[type, ...] | str] = {
    "id": (str,), "text": (str,), "where": "table", "metric": (str,), "aggregate": (str,),
    "op": (str,), "value": Number, "kind": (str,), "profiles": (list,), "compare": "table",
    "expect": (str,), "reason": (str,),
}
REFERENCE_KEYS: dict[str, tuple[type, ...] | str] = {
    "method": (str,), "codebook_size": (int,), "dim": (int,), "source": (str,),
    "metrics": "table", "note": (str,),
}
TOP_LEVEL = {*SCHEMA, "methods", "schedules", "profiles", "claims", "reference"}
POSITIVE = {("train", "steps"), ("train", "epochs"), ("train", "batch_size"), ("train", "lr"),
            ("eval", "batch_size"), ("eval", "max_items"), ("matrix", "seeds"),
            ("train", "log_every"), ("tuning", "budget")}
AGGREGATES = ("mean", "min", "max", "all", "any", "fraction")
OPS = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__,
       "==": float.__eq__}

DEFAULT_TRAIN: dict[str, Any] = {
    "batch_size": 256, "lr": 1e-3, "optimizer": "adam", "betas": [0.9, 0.999],
    "weight_decay": 0.0, "loss": "mse", "lpips_weight": 1.0, "precision": "auto",
    "log_every": 10, "snapshot_steps": [], "num_workers": 0, "lr_decay": 1.0,
    "channels_last": True, "lpips_net": "vgg", "discriminator": False, "disc_weight": 0.8,
    "disc_layers": 3, "threads": 0,
}
DEFAULT_EVAL: dict[str, Any] = {
    "metrics": ["mse", "utilization", "perplexity", "dead_codes"], "plots": [],
    "batch_size": 256,
}

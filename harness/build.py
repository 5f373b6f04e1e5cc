"""Builds plugin objects from a cell's config, checking their parameters against the registry.

Parameter names are checked against each plugin's signature before any cell
runs, so a typo in a suite fails the whole command up front (exit code 2) with
close matches instead of crashing cell after cell.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from harness.errors import UnknownNameError, UsageError
from harness.host import Host
from harness.suite import Cell, Suite

# arguments the host passes itself; a suite may not set them in ``params``
HOST_ARGS = {
    "quantizers": {"dim", "codebook_size"},
    "datasets": {"root"},
    "models": {"latent_dim"},
    "schedules": set(),
    "metrics": {"context"},
}


def plugin_defaults(obj: Any, kind: str) -> dict[str, Any]:
    """Keyword defaults of a plugin's constructor (recorded so a run's config is complete)."""
    params = inspect.signature(obj).parameters
    return {
        name: p.default
        for name, p in params.items()
        if p.default is not inspect.Parameter.empty
        and name not in HOST_ARGS[kind]
        and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def check_params(obj: Any, kind: str, name: str, params: dict[str, Any], where: str = "") -> None:
    """Reject parameters the plugin does not take (unless it accepts ``**kwargs``)."""
    signature = inspect.signature(obj)
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    accepted = set(signature.parameters) - HOST_ARGS[kind]
    for key in params:
        if key in HOST_ARGS[kind]:
            raise UsageError(f"{kind[:-1]} {name!r}: {key!r} is set by the harness, not by params{where}")
        if key not in accepted:
            raise UnknownNameError(f"parameter of {kind[:-1]} {name!r}", key, accepted, where)


def resolve_params(host: Host, kind: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    obj = host.registries[kind].get(name).obj
    check_params(obj, kind, name, params)
    return {**plugin_defaults(obj, kind), **params}


def check_suite(host: Host, suite: Suite, cells: list[Cell]) -> None:
    """Every name and parameter a suite uses exists; errors point at the suite's line."""

    def at(path: tuple[Any, ...], exc: Exception) -> UsageError:
        return suite.error(str(exc), path)

    data = suite.data
    for kind, table in (("datasets", "dataset"), ("models", "model")):
        try:
            entry = host.registries[kind].get(data[table]["name"])
            check_params(entry.obj, kind, entry.name, data[table].get("params", {}))
        except UsageError as exc:
            raise at((table, "name"), exc) from None
    from harness.losses import LOSSES

    loss = data["train"].get("loss", "mse")
    if loss not in LOSSES:
        raise at(("train", "loss"), UnknownNameError("train.loss", loss, LOSSES))
    from harness.evaluate import metric_specs  # evaluation pulls in torch's loop; only when checking

    try:
        for name, params in metric_specs(data.get("eval", {}).get("metrics", [])):
            check_params(host.metrics.get(name).obj, "metrics", name, params)
    except UsageError as exc:
        raise at(("eval", "metrics"), exc) from None
    for cell in cells:
        path = ("methods", cell.method)
        try:
            entry = host.quantizers.get(cell.quantizer)
            check_params(entry.obj, "quantizers", entry.name, cell.config["quantizer"]["params"])
            model = host.models.get(cell.config["model"]["name"])
            check_params(model.obj, "models", model.name, cell.config["model"]["params"])
            for sched in cell.config["schedules"]:
                s_entry = host.schedules.get(sched["name"])
                check_params(s_entry.obj, "schedules", s_entry.name, sched["params"])
        except UsageError as exc:
            raise at(path, exc) from None


def complete_config(host: Host, cell: Cell) -> dict[str, Any]:
    """The cell's config with every plugin default filled in (what MLflow records)."""
    config = {**cell.config}
    for kind, table in (("datasets", "dataset"), ("models", "model"), ("quantizers", "quantizer")):
        section = dict(config[table])
        section["params"] = resolve_params(host, kind, section["name"], section["params"])
        config[table] = section
    config["schedules"] = [
        {"name": s["name"], "params": resolve_params(host, "schedules", s["name"], s["params"])}
        for s in config["schedules"]
    ]
    return config


def build_quantizer(host: Host, config: dict[str, Any]):
    q = config["quantizer"]
    cls = host.quantizers.get(q["name"]).obj
    return cls(dim=q["dim"], codebook_size=q["codebook_size"], **q["params"])


def build_model(host: Host, config: dict[str, Any]):
    m = config["model"]
    return host.models.get(m["name"]).obj(latent_dim=config["quantizer"]["dim"], **m["params"])


def dataset_root(name: str, data_root: Path | None) -> Path | None:
    """``--data-root``, else ``$HARNESS_DATA/<name>``, else ``None`` (the plugin says what to set)."""
    if data_root is not None:
        return Path(data_root)
    if os.environ.get("HARNESS_DATA"):
        return Path(os.environ["HARNESS_DATA"]) / name
    return None


def build_dataset(host: Host, config: dict[str, Any], data_root: Path | None):
    """The dataset plugin; those that read files get their root."""
    d = config["dataset"]
    cls = host.datasets.get(d["name"]).obj
    if getattr(cls, "needs_root", False):
        return cls(root=dataset_root(d["name"], data_root), **d["params"])
    return cls(**d["params"])


def build_schedules(host: Host, config: dict[str, Any]) -> list[Any]:
    return [host.schedules.get(s["name"]).obj(**s["params"]) for s in config["schedules"]]


def codebook_vs_data(model: Any, quantizer: Any, train_set: Any, device: Any) -> str | None:
    """A warning when a codebook has more codes than the training split has tokens.

    Such a cell still runs (a smoke profile keeps the full protocol's codebook on
    tiny data), but at most ``tokens / codes`` of the codebook can ever be used,
    so its utilization and dead-code numbers say nothing about the method.
    """
    import torch

    item = train_set[0]
    x = item[0] if isinstance(item, (tuple, list)) else item
    was = model.training
    model.eval()
    with torch.no_grad():
        z = model.encode(x[None].to(device))
    model.train(was)
    tokens = len(train_set) * (z.numel() // z.shape[1])
    codes = max(getattr(quantizer, "stage_sizes", None) or (quantizer.codebook_size,))
    if codes > tokens:
        return (f"codebook_size {codes} is larger than the {tokens} training tokens; at most "
                f"{tokens / codes:.1%} of the codes can be used, so usage metrics are not meaningful")
    return None

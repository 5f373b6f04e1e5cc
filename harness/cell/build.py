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
from harness.lazy import Parameters, parameters_of
from harness.suite import Cell, Suite

# arguments the host passes itself; a suite may not set them in ``params``
HOST_ARGS = {
    "quantizers": {"dim", "codebook_size"},
    "datasets": {"root"},
    "models": {"latent_dim"},
    "schedules": set(),
    "metrics": {"context"},
    "losses": set(),
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
    check_accepted(parameters_of(obj), kind, name, params, where)


def check_accepted(takes: Parameters, kind: str, name: str, params: dict[str, Any], where: str = "") -> None:
    """:func:`check_params` against parameter names already known (read from source in a dry run)."""
    if takes.open:
        return
    accepted = set(takes.names) - HOST_ARGS[kind]
    for key in params:
        if key in HOST_ARGS[kind]:
            raise UsageError(f"{kind[:-1]} {name!r}: {key!r} is set by the harness, not by params{where}")
        if key not in accepted:
            raise UnknownNameError(f"parameter of {kind[:-1]} {name!r}", key, accepted, where)


def metric_specs(entries: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """``eval.metrics`` entries as ``(name, params)``: a name, or ``{ name = ..., <param> = ... }``."""
    specs = []
    for entry in entries:
        if isinstance(entry, str):
            specs.append((entry, {}))
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            specs.append((entry["name"], {k: v for k, v in entry.items() if k != "name"}))
        else:
            raise UsageError(f"eval.metrics: each entry is a metric name or a table with a 'name' "
                             f"key and the metric's parameters, got {entry!r}")
    return specs


def resolve_params(host: Host, kind: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    obj = host.registries[kind].get(name).obj
    check_params(obj, kind, name, params)
    return {**plugin_defaults(obj, kind), **params}


def check_suite(host: Host, suite: Suite, cells: list[Cell], load: bool = True) -> None:
    """Every name and parameter a suite uses exists; errors point at the suite's line.

    ``load=False`` (a dry run) reads each plugin's parameters from its source where that settles
    them (:meth:`harness.registry.Entry.parameters`): the check then imports no torch, and a
    plugin that fails to import is reported when a run first needs it, still before any cell.
    """

    def at(path: tuple[Any, ...], exc: Exception) -> UsageError:
        return suite.error(str(exc), path)

    data = suite.data
    for kind, table in (("datasets", "dataset"), ("models", "model")):
        try:
            entry = host.registries[kind].get(data[table]["name"])
            check_accepted(entry.parameters(load), kind, entry.name, data[table].get("params", {}))
        except UsageError as exc:
            raise at((table, "name"), exc) from None
    check_train(host, suite, load)
    try:
        for name, params in metric_specs(data.get("eval", {}).get("metrics", [])):
            check_accepted(host.metrics.get(name).parameters(load), "metrics", name, params)
    except UsageError as exc:
        raise at(("eval", "metrics"), exc) from None
    for cell in {c.method: c for c in cells}.values():  # one cell per method: its loss is the method's
        check_method_loss(host, suite, cell, load)
    for cell in cells:
        path = ("methods", cell.method)
        try:
            entry = host.quantizers.get(cell.quantizer)
            check_accepted(entry.parameters(load), "quantizers", entry.name, cell.config["quantizer"]["params"])
        except UnknownNameError as exc:  # the parameter's own line, or the --set that named it
            raise at((*path, "params", exc.name), exc) from None
        except UsageError as exc:
            raise at(path, exc) from None
        try:
            model = host.models.get(cell.config["model"]["name"])
            check_accepted(model.parameters(load), "models", model.name, cell.config["model"]["params"])
            for sched in cell.config["schedules"]:
                s_entry = host.schedules.get(sched["name"])
                check_accepted(s_entry.parameters(load), "schedules", s_entry.name, sched["params"])
        except UsageError as exc:
            raise at(path, exc) from None


def check_train(host: Host, suite: Suite, load: bool = True) -> None:
    """``train.loss`` (names, parameters, one loss per term), ``optimizer`` and ``lr_decay``."""
    from harness.cell.losses import deprecation, warn_deprecated
    from harness.cell.optim import check_optimizer

    train = suite.data["train"]
    try:
        message = deprecation(train)
        check_losses(host, train, load=load)
    except UsageError as exc:
        raise suite.error(str(exc), ("train", "loss")) from None
    if message:
        line = suite.locator.line(("train", "loss"))
        warn_deprecated(message, f"{suite.path}:{line}: " if line else f"{suite.path}: ")
    optimizer = train.get("optimizer", "adam")
    try:
        check_optimizer(optimizer)
    except UsageError as exc:
        raise suite.error(str(exc), ("train", "optimizer")) from None
    if "momentum" in train and optimizer != "sgd":
        raise suite.error(f"train.momentum is read by optimizer 'sgd' only, not {optimizer!r}", ("train", "momentum"))
    if "betas" in train and optimizer == "sgd":
        raise suite.error("train.betas is read by adam and adamw, not by sgd", ("train", "betas"))
    if not 0 < train.get("lr_decay", 1.0) <= 1:
        raise suite.error(f"train.lr_decay must be in (0, 1], got {train['lr_decay']!r}", ("train", "lr_decay"))


def check_method_loss(host: Host, suite: Suite, cell: Cell, load: bool = True) -> None:
    """A method's own ``loss`` list: registered names and parameters, and no suite key it leaves unread."""
    from harness.cell.losses import LEGACY_KEYS

    if "loss" not in suite.method(cell.method):
        return
    path = ("methods", cell.method, "loss")
    unread = [k for k in LEGACY_KEYS if k in suite.data["train"]]
    if unread:
        raise suite.error(f"methods.{cell.method}.loss replaces train.loss for this method, so train."
                          f"{unread[0]} (read by the string form only) would be unread for its cells; "
                          "write train.loss as a list", path)
    try:
        check_losses(host, cell.config["train"], where=f"methods.{cell.method}.loss", load=load)
    except UsageError as exc:
        raise suite.error(str(exc), path) from None


def check_losses(host: Host, train: dict[str, Any], where: str = "train.loss", load: bool = True) -> None:
    """Every ``train.loss`` entry names a registered loss with parameters it takes; no term twice."""
    from harness.cell.losses import LEGACY_FORMS, loss_specs

    filled: dict[str, str] = {}
    for spec in loss_specs(train):
        if spec["name"] not in host.losses.names():
            if isinstance(train.get("loss"), str):  # a typo in a string form: suggest the whole form
                raise UnknownNameError("train.loss", train["loss"], [*LEGACY_FORMS, *host.losses.names()])
            raise UnknownNameError(f"loss in {where}", spec["name"], host.losses.names())
        entry = host.losses.get(spec["name"])
        check_accepted(entry.parameters(load), "losses", entry.name, {k: v for k, v in spec.items() if k != "name"})
        key = entry.term(load) or entry.name
        if key in filled:
            raise UsageError(f"{where} lists {filled[key]!r} and {entry.name!r}, which both fill the "
                             f"term {key!r}; keep one")
        filled[key] = entry.name


def loss_config(host: Host, train: dict[str, Any]) -> list[dict[str, Any]]:
    """``train.loss`` as the list of ``{name, weight, **params}`` with every default filled in."""
    from harness.cell.losses import loss_specs

    specs = []
    for spec in loss_specs(train):
        params = resolve_params(host, "losses", spec["name"], {k: v for k, v in spec.items() if k != "name"})
        specs.append({"name": spec["name"], **params})
    return specs


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
    config["train"] = {**config["train"], "loss": loss_config(host, config["train"])}
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

"""``harness doctor``: which datasets and pretrained weights this machine has, and where missing ones go.

It asks the plugins themselves (a dataset's ``check()``, a metric's
``weights_status()``), so third-party plugins are diagnosed the same way. It
only reports: the exit code is 0 whatever is missing.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from harness.cell.build import dataset_root
from harness.host import Host


def dataset_rows(host: Host, data_root: Path | None = None, only: str | None = None) -> list[dict[str, Any]]:
    """One row per registered dataset: present / missing / error, with its root and message."""
    rows = []
    for entry in host.datasets.entries():
        if only is not None and entry.name != only:
            continue
        cls = entry.obj
        needs_root = bool(getattr(cls, "needs_root", False))
        root = dataset_root(entry.name, data_root) if needs_root else None
        row: dict[str, Any] = {"name": entry.name, "needs_root": needs_root,
                               "root": str(root) if root is not None else None}
        try:
            plugin = cls(root=root) if needs_root else cls()
            message = plugin.check() if hasattr(plugin, "check") else None
        except Exception as exc:  # a plugin that cannot even be built is reported, not fatal
            row.update(status="error", message=f"{type(exc).__name__}: {exc}")
        else:
            if message:
                row.update(status="missing", message=message)
            else:
                row.update(status="present", message="" if needs_root else "no files needed")
        rows.append(row)
    return rows


def weights_rows(host: Host, weights_dir: Path | None = None) -> list[dict[str, Any]]:
    """One row per pretrained file a registered metric (``weights_status()`` or ``requires``) or the
    LPIPS training loss needs, with the metrics and losses that use it."""
    rows: dict[str, dict[str, Any]] = {}
    for entry in host.metrics.entries():
        cls = entry.obj
        status = getattr(cls, "weights_status", None)
        if callable(status):
            found = status(weights_dir) if inspect.signature(status).parameters else status()
        else:
            found = [{"file": name, "purpose": "", "path": None, "present": None}
                     for name in getattr(cls, "requires", ())]
        for item in found:
            key = str(item.get("path") or item["file"])
            row = rows.setdefault(key, {**item, "metrics": []})
            row["metrics"].append(entry.name)
    for row in loss_weights_rows(host):
        rows.setdefault(row["path"], {**row, "metrics": []})["metrics"].append(row["used_by"])
    for row in rows.values():
        row.pop("used_by", None)
    return sorted(rows.values(), key=lambda r: r["file"])


def loss_weights_rows(host: Host) -> list[dict[str, Any]]:
    """The pretrained files registered losses read, asked of each loss (``weights_status()``), as for
    metrics: the host names no loss and no file itself."""
    rows = []
    for entry in host.losses.entries():
        status = getattr(entry.obj, "weights_status", None)
        for row in status() if callable(status) else ():
            detail = row.get("used_by")
            rows.append({**row, "used_by": f"train.loss {entry.name}" + (f" ({detail})" if detail else "")})
    return rows


def diagnose(host: Host, data_root: Path | None = None, dataset: str | None = None,
             weights_dir: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    if dataset is not None:
        host.datasets.get(dataset)  # unknown names suggest close matches
    return {"datasets": dataset_rows(host, data_root, dataset), "weights": weights_rows(host, weights_dir)}


def render(report: dict[str, list[dict[str, Any]]]) -> str:
    """Plain-text report: a status line per dataset and file, then what to do for each missing one."""
    lines = ["datasets:"]
    for row in report["datasets"]:
        where = f" ({row['root']})" if row["root"] else ""
        lines.append(f"  {row['name']:<16} {row['status']}{where}")
        if row["status"] != "present" and row["message"]:
            lines += [f"      {line}" for line in row["message"].splitlines()]
    lines += ["", "weights:"]
    for row in report["weights"]:
        state = {True: "present", False: "missing", None: "unknown"}[row["present"]]
        lines.append(f"  {row['file']:<44} {state:<8} {row['path'] or ''}  (used by {', '.join(row['metrics'])})")
    missing = [r for r in report["weights"] if r["present"] is False]
    if missing:
        lines += ["", "Missing weights make their metrics 'unavailable' (recorded with the reason); copy each "
                  "file to the path shown. The harness never downloads them."]
    return "\n".join(lines)

"""Value checks on a suite after its structure is valid: names, numbers, training settings, claims.

:mod:`harness.suite` checks that every key exists and has the right type; this
module checks that the values make sense before anything runs, so that a bad
value is a usage error naming the file and line (exit 2), never a traceback
or a run that records nonsense:

- names (the suite, method labels, claim ids) are used in file paths, MLflow
  experiment names and tag keys: they must be plain names, never ``../x`` or ``/x``;
- numbers anywhere in the file must be finite (TOML accepts ``nan`` and ``inf``);
- training settings must be usable (``grad_clip > 0``, ``betas`` in ``[0, 1)``, ...);
- a claim must say what it claims (``text``) and name cells and a metric the suite has.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from harness.errors import SuiteError, suggest

#: a plain name: safe as a folder name, an MLflow experiment name and inside a tag key
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
MAX_THREADS = 1024  # intra-op threads per cell (train.threads)
MAX_DEPTH = 16  # tables and lists nested deeper than this are not a suite
MAX_SEEDS = 1000
MAX_CELLS = 100_000
PRECISIONS = ("auto", "fp32", "bf16")
EXPECTATIONS = ("holds", "not reproduced")
CELL_FIELDS = ("method", "quantizer", "codebook_size", "dim", "seed")
#: ``eval.plots``: the figures a cell draws beyond code usage and training curves (always drawn)
PLOTS = {"latent": "latent-space snapshots (2D latents only)",
         "reconstructions": "originals over reconstructions (image suites only)"}

Fail = Callable[[str, Sequence[Any]], SuiteError]


def check_name(kind: str, name: Any) -> str | None:
    """Why ``name`` is not a plain name, or ``None`` when it is."""
    if not isinstance(name, str) or not name:
        return f"{kind} must be a non-empty name"
    if not NAME.fullmatch(name) or ".." in name:
        return (f"{kind} {name!r} is not a plain name: use letters, digits and '_', '-', '.' "
                "(at most 100 characters, starting with a letter or digit; no '/', no '..')")
    return None


def check_raw(data: dict[str, Any], fail: Fail) -> None:
    """Checks that hold for the file as written: nesting, finite numbers, names, claim texts."""
    _check_depth(data, fail, ())
    _check_finite(data, fail, ())
    for label in data.get("methods", {}):
        _name(fail, "method label", label, ("methods", label))
    for name, profile in data.get("profiles", {}).items():
        for label in profile.get("methods", {}) if isinstance(profile, dict) else ():
            _name(fail, "method label", label, ("profiles", name, "methods", label))
    for i, claim in enumerate(data.get("claims", [])):
        _check_claim_fields(claim, i, fail)


def check_merged(data: dict[str, Any], fail: Fail) -> None:
    """Checks on the suite with its profile, ``--set`` and ``--seeds`` applied."""
    _check_depth(data, fail, ())
    _check_finite(data, fail, ())
    _name(fail, "suite.name", data["suite"].get("name"), ("suite", "name"))
    for label in data["matrix"].get("method") or []:
        _name(fail, "matrix.method entry", label, ("matrix", "method"))
    _check_train(data.get("train", {}), fail)
    _check_plots(data.get("eval", {}).get("plots", []), fail)
    seeds = data["matrix"]["seeds"]
    if seeds > MAX_SEEDS:
        raise fail(f"matrix.seeds = {seeds} is more than {MAX_SEEDS} seeds per configuration", ("matrix", "seeds"))


def _check_plots(plots: list[Any], fail: Fail) -> None:
    for name in plots:
        if name not in PLOTS:
            close = suggest(str(name), PLOTS)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known plots: {', '.join(PLOTS)}"
            raise fail(f"unknown plot {name!r} in eval.plots{hint}", ("eval", "plots"))


def check_size(n_cells: int, fail: Fail) -> None:
    if n_cells > MAX_CELLS:
        raise fail(f"the matrix expands to {n_cells} cells, more than {MAX_CELLS}", ("matrix",))


def _name(fail: Fail, kind: str, name: Any, at: Sequence[Any]) -> None:
    problem = check_name(kind, name)
    if problem:
        raise fail(problem, at)


def _check_depth(node: Any, fail: Fail, at: tuple[Any, ...]) -> None:
    if len(at) > MAX_DEPTH:
        raise fail(f"values nested more than {MAX_DEPTH} levels deep", at)
    children: Iterable[tuple[Any, Any]] = ()
    if isinstance(node, dict):
        children = node.items()
    elif isinstance(node, list):
        children = enumerate(node)
    for key, value in children:
        _check_depth(value, fail, (*at, key))


def _check_finite(node: Any, fail: Fail, at: tuple[Any, ...]) -> None:
    if isinstance(node, float) and not math.isfinite(node):
        raise fail(f"{_dotted(at)} must be a finite number, got {node}", at)
    if isinstance(node, dict):
        for key, value in node.items():
            _check_finite(value, fail, (*at, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_finite(value, fail, (*at, i))


def _dotted(at: Sequence[Any]) -> str:
    return ".".join(str(p) for p in at) or "a value"


def _check_train(train: dict[str, Any], fail: Fail) -> None:
    """Training settings that would crash the optimizer or silently do something else."""
    if "grad_clip" in train and train["grad_clip"] <= 0:
        raise fail(f"train.grad_clip must be positive (leave it out for no clipping), got {train['grad_clip']!r}",
                   ("train", "grad_clip"))
    if "precision" in train and train["precision"] not in PRECISIONS:
        close = suggest(train["precision"], PRECISIONS)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise fail(f"train.precision must be one of {', '.join(PRECISIONS)}, got {train['precision']!r}{hint}",
                   ("train", "precision"))
    if "betas" in train:
        betas = train["betas"]
        if (len(betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in betas)
                or not all(0 <= b < 1 for b in betas)):
            raise fail(f"train.betas must be two numbers in [0, 1), got {betas!r}", ("train", "betas"))
    for key in ("weight_decay", "disc_weight", "lpips_weight"):
        if key in train and train[key] < 0:
            raise fail(f"train.{key} must be zero or positive, got {train[key]!r}", ("train", key))
    if "lr_decay" in train and not 0 < train["lr_decay"] <= 1:
        raise fail(f"train.lr_decay must be in (0, 1], got {train['lr_decay']!r}", ("train", "lr_decay"))
    for key in ("checkpoint_every", "num_workers", "threads"):
        if key in train and train[key] < 0:
            raise fail(f"train.{key} must be zero or positive, got {train[key]!r}", ("train", key))
    if train.get("threads", 0) > MAX_THREADS:  # no machine has the cores: the workers could not start
        raise fail(f"train.threads must be at most {MAX_THREADS} (0: PyTorch's default), got "
                   f"{train['threads']!r}", ("train", "threads"))


# -- claims ----------------------------------------------------------------------------

def _check_claim_fields(claim: Any, i: int, fail: Fail) -> None:
    if not isinstance(claim, dict):
        return  # the structural check names it
    at: tuple[Any, ...] = ("claims", i)
    if "id" in claim:
        _name(fail, "claim id", claim["id"], (*at, "id"))
    if not str(claim.get("text", "")).strip():
        raise fail(f"claim {claim.get('id', i + 1)!r} needs 'text': the finding it checks, in words", at)
    expect = claim.get("expect", "holds")
    if expect not in EXPECTATIONS:
        raise fail(f"claims.expect must be one of {', '.join(repr(e) for e in EXPECTATIONS)}, got {expect!r}",
                   (*at, "expect"))
    if expect == "not reproduced" and not str(claim.get("reason", "")).strip():
        raise fail(f"claim {claim.get('id')!r} is expected not to reproduce: say why in 'reason'", (*at, "expect"))
    if "reason" in claim and expect != "not reproduced":
        raise fail("claims.reason goes with expect = \"not reproduced\"", (*at, "reason"))
    if expect != "holds" and claim.get("kind", "assert") == "report":
        raise fail("a reported claim (kind = \"report\") is not judged, so it has no expectation", (*at, "expect"))
    for table in ("where", "compare"):
        for key in claim.get(table) or {}:
            if key not in CELL_FIELDS:
                close = suggest(key, CELL_FIELDS)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(CELL_FIELDS)}"
                raise fail(f"claims.{table} key {key!r} is not a cell field{hint}", (*at, table))


def check_claims_match(claims: list[dict[str, Any]], keys: list[dict[str, Any]], metrics: list[str],
                       profile: str, fail: Fail, registered: Callable[[str], bool] | None = None) -> None:
    """Each claim of this profile names cells the matrix has and a metric ``[eval]`` computes.

    ``registered`` (is this a metric plugin's name?) puts the blame where the typo is: a claim
    naming a real metric that ``[eval]`` misspells is an error in ``[eval] metrics``.
    """
    from harness.suite.claims import matches

    for i, claim in enumerate(claims):
        if profile not in claim.get("profiles", [profile]):
            continue
        at = ("claims", i)
        for table, where in (("where", claim["where"]), ("compare", {**claim["where"], **(claim.get("compare") or {})})):
            if table == "compare" and not claim.get("compare"):
                continue
            if not any(matches(k, where) for k in keys):
                raise fail(f"claim {claim['id']!r}: {table} {_show(where)} matches no cell of this suite "
                           f"(profile {profile!r}){_closest(where, keys)}", (*at, table))
        base = claim["metric"].split("/", 1)[0]
        if base not in metrics:
            check_eval_spelling(base, metrics, registered, fail)
            close = suggest(base, metrics)
            hint = f"; did you mean {close[0]!r}?" if close else f"; [eval] metrics: {', '.join(metrics)}"
            raise fail(f"claim {claim['id']!r}: metric {claim['metric']!r} is not computed by any "
                       f"[eval] metric{hint}", (*at, "metric"))


def check_primary(data: dict[str, Any], metrics: list[str], fail: Fail) -> None:
    """The ranking metric is one a cell records (an ``[eval]`` metric, or one of its ``name/part`` keys)."""
    primary = data.get("suite", {}).get("primary_metric")
    if primary is None and "mse" not in metrics:
        raise fail(f"suite.primary_metric is not set and the default 'mse' is not in [eval] metrics; set "
                   f"primary_metric to one of {', '.join(metrics)}", ("suite",))
    if primary is not None and primary.split("/", 1)[0] not in metrics:
        close = suggest(primary, metrics)
        hint = f"did you mean {close[0]!r}?" if close else f"[eval] metrics: {', '.join(metrics)}"
        raise fail(f"suite.primary_metric {primary!r} is not recorded by any [eval] metric, so nothing "
                   f"would be ranked; {hint}", ("suite", "primary_metric"))


def check_eval_spelling(base: str, metrics: list[str], registered: Callable[[str], bool] | None,
                        fail: Fail) -> None:
    """A claim's registered metric that ``[eval]`` lists misspelled: the error is in ``[eval]``."""
    if registered is None or not registered(base):
        return
    for typo in suggest(base, metrics):
        if not registered(typo):
            raise fail(f"unknown metric {typo!r} in [eval] metrics; did you mean {base!r}? (a claim "
                       f"uses {base!r})", ("eval", "metrics"))


def _show(where: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k} = {v!r}" for k, v in sorted(where.items())) + "}"


def _closest(where: dict[str, Any], keys: list[dict[str, Any]]) -> str:
    for field, wanted in sorted(where.items()):
        values = {str(k[field]) for k in keys}
        for value in wanted if isinstance(wanted, list) else [wanted]:
            if str(value) not in values:
                close = suggest(str(value), values)
                hint = f"; did you mean {close[0]!r}?" if close else f"; the suite has {', '.join(sorted(values))}"
                return f" ({field} {value!r} is not in the matrix{hint})"
    return ""

"""Suite files: load, validate (file, key and line in every error), apply a profile, expand cells.

A suite file is TOML with these tables (docs/suites.md is the reference):
``[suite]``, ``[dataset]``, ``[model]``, ``[train]``, ``[eval]``, ``[methods.<label>]``,
``[matrix]``, ``[[schedules]]``, ``[profiles.<name>]`` (partial overrides), ``[[claims]]``
and ``[[reference]]`` (numbers reported by papers, shown beside measured rows).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from harness.errors import SuiteError, UnknownNameError, suggest
from harness.suite import tomlsource
from harness.suite import tuning as suitetuning
from harness.suite import values as suitevalues
from harness.suite.claims import Claim
from harness.suite.schema import (  # noqa: F401  (re-exported: the suite's public names)
    AGGREGATES,
    CLAIM_KEYS,
    DEFAULT_EVAL,
    DEFAULT_TRAIN,
    METHOD_KEYS,
    OPS,
    POSITIVE,
    PROFILES,
    REFERENCE_KEYS,
    SCHEDULE_KEYS,
    SCHEMA,
    TOP_LEVEL,
    Number,
)
from harness.suite.tomlsource import KeyLocator, parse_value


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join("float" if t is float else t.__name__ for t in types)


@dataclass(frozen=True)
class Cell:
    """One training run: a method at one codebook size, latent dimension and seed."""

    suite: str
    profile: str
    method: str
    quantizer: str
    codebook_size: int
    dim: int
    seed: int
    config: dict[str, Any] = field(hash=False, compare=False)

    @property
    def run_name(self) -> str:
        return f"{self.method}-K{self.codebook_size}-d{self.dim}-s{self.seed}"

    @property
    def key(self) -> dict[str, Any]:
        return {"method": self.method, "quantizer": self.quantizer,
                "codebook_size": self.codebook_size, "dim": self.dim, "seed": self.seed}

    @property
    def config_hash(self) -> str:
        """Stable hash of the resolved config: equal hashes mean the same experiment."""
        return _digest(self.config)

    @property
    def group_hash(self) -> str:
        """Hash of the config without the seed: the cells one leaderboard row averages."""
        return _digest({k: v for k, v in self.config.items() if k != "seed"})


def _digest(config: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of ``config`` as sorted JSON (stable across processes)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Suite:
    """A validated suite with one profile applied."""

    name: str
    path: Path
    profile: str
    data: dict[str, Any]
    locator: KeyLocator
    #: key path -> the command-line option that set it (``--set``, ``--seeds``): errors point there
    origins: dict[tuple[str, ...], str] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return int(self.data["suite"].get("version", 1))

    @property
    def primary_metric(self) -> str:
        return self.data["suite"].get("primary_metric", "mse")

    @property
    def methods(self) -> dict[str, dict[str, Any]]:
        return self.data.get("methods", {})

    @property
    def claims(self) -> list[Claim]:
        claims = []
        for i, raw in enumerate(self.data.get("claims", [])):
            line = self.locator.line(("claims", i))
            claim = Claim(**{**raw, "profiles": tuple(raw.get("profiles", (*PROFILES, self.profile))),
                             "source": f"{self.path}:{line}" if line else str(self.path)})
            if self.profile in claim.profiles:
                claims.append(claim)
        return claims

    @property
    def references(self) -> list[dict[str, Any]]:
        return list(self.data.get("reference", []))

    def error(self, message: str, path: Sequence[Any]) -> SuiteError:
        """An error at ``path``: the file and line, or the option that set the value there."""
        origin = origin_of(self.origins, path)
        if origin:
            return SuiteError(f"{origin}: {message}")
        return SuiteError(message, str(self.path), self.locator.line(path))

    # -- as data -------------------------------------------------------------
    def plain(self) -> dict[str, Any]:
        """The suite as plain data (what a :class:`~harness.contracts.executor.CellSpec` carries):
        enough for :meth:`from_plain` to rebuild it anywhere without reading or validating the file."""
        return {"name": self.name, "data": copy.deepcopy(self.data), "lines": self.locator.lines(),
                "origins": [[list(path), option] for path, option in self.origins.items()]}

    @classmethod
    def from_plain(cls, path: str, profile: str, plain: dict[str, Any]) -> Suite:
        """The suite :meth:`plain` described (its data was validated where it was loaded)."""
        origins = {tuple(key): str(option) for key, option in plain.get("origins", [])}
        return cls(str(plain["name"]), Path(path), profile, copy.deepcopy(plain["data"]),
                   KeyLocator.of_lines(plain.get("lines", [])), origins)

    # -- cells ---------------------------------------------------------------
    def cell_keys(self) -> list[dict[str, Any]]:
        """Each cell's key (what claims match on) without resolving configs; stops past the size limit."""
        matrix, keys = self.data["matrix"], []
        for label in list(matrix.get("method") or self.methods):
            method = self.method(label)
            sizes = method.get("codebook_size") or matrix["codebook_size"]
            for k, d, seed in itertools.product(sizes, matrix["dim"], range(matrix["seeds"])):
                keys.append({"method": label, "quantizer": method["quantizer"], "codebook_size": k,
                             "dim": d, "seed": seed})
                if len(keys) > suitevalues.MAX_CELLS:
                    return keys
        return keys

    def cells(self, methods: Iterable[str] | None = None) -> list[Cell]:
        """Expand the matrix (method x codebook size x dim x seed) in a stable order.

        A method's own ``codebook_size`` list replaces the matrix's for that
        method (FSQ and LFQ only exist at some sizes).
        """
        matrix = self.data["matrix"]
        labels = list(methods) if methods else list(matrix.get("method") or self.methods)
        cells = []
        for label in labels:
            sizes = self.method(label).get("codebook_size") or matrix["codebook_size"]
            cells += [self.cell(label, k, d, seed)
                      for k, d, seed in itertools.product(sizes, matrix["dim"], range(matrix["seeds"]))]
        return cells

    def cell(self, label: str, k: int, d: int, seed: int) -> Cell:
        """One cell of the matrix: ``label`` at codebook size ``k``, dimension ``d`` and ``seed``."""
        method = self.method(label)
        return Cell(self.name, self.profile, label, method["quantizer"], k, d, seed,
                    self.resolve(label, method, k, d, seed))

    def method(self, label: str) -> dict[str, Any]:
        """The method table for ``label``; a bare quantizer name gets its defaults."""
        if label in self.methods:
            method = dict(self.methods[label])
            method.setdefault("quantizer", label)
            return method
        return {"quantizer": label, "params": {}}

    def resolve(self, label: str, method: dict[str, Any], k: int, d: int, seed: int) -> dict[str, Any]:
        data = self.data
        schedules = [*data.get("schedules", []), *method.get("schedules", [])]
        config = {
            "suite": {"name": self.name, "version": self.version, "profile": self.profile},
            "dataset": {"name": data["dataset"]["name"], "params": dict(data["dataset"].get("params", {}))},
            "model": {"name": data["model"]["name"],
                      "params": {**data["model"].get("params", {}), **method.get("model_params", {})}},
            "quantizer": {"name": method["quantizer"], "method": label, "codebook_size": k,
                          "dim": d, "params": dict(method.get("params", {}))},
            "schedules": [{"name": s["name"], "params": dict(s.get("params", {}))} for s in schedules],
            "train": {**DEFAULT_TRAIN, **data["train"], **({"loss": list(method["loss"])} if "loss" in method else {})},
            "eval": {**DEFAULT_EVAL, **data.get("eval", {})},
            "seed": seed,
        }
        if data["dataset"].get("splits"):  # a tuning trial (absent otherwise: config hashes unchanged)
            config["dataset"]["splits"] = dict(data["dataset"]["splits"])
        if data.get("tuned"):  # a cell at a setting `harness tune` chose: its own row
            config["tuned"] = copy.deepcopy(data["tuned"])
        return config


# -- loading -------------------------------------------------------------------

def builtin_suites() -> dict[str, Path]:
    """Registered suites: the TOML files shipped in ``harness.suites``."""
    folder = resources.files("harness.suites")
    return {p.name[:-5]: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def find_suite(name_or_path: str) -> Path:
    """A registered suite name or a path to a suite file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        if not candidate.is_file():
            raise SuiteError("no such suite file", str(candidate))
        return candidate
    suites = builtin_suites()
    if name_or_path not in suites:
        raise UnknownNameError("suite", name_or_path, suites)
    return suites[name_or_path]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_set(data: dict[str, Any], assignment: str, path: Path) -> dict[str, Any]:
    """Apply one ``--set key.path=value``; unknown keys suggest close matches."""
    if "=" not in assignment:
        raise SuiteError(f"--set expects KEY=VALUE, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    known_tables = sorted(TOP_LEVEL)
    if parts[0] not in TOP_LEVEL:
        raise UnknownNameError("suite key", key, [*known_tables, *_known_keys()], " in --set")
    if parts[0] in SCHEMA and len(parts) == 2 and parts[1] not in SCHEMA[parts[0]]:
        raise UnknownNameError("suite key", key, _known_keys(), " in --set")
    out = copy.deepcopy(data)
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SuiteError(f"--set {key}: {part!r} is not a table", str(path))
    node[parts[-1]] = parse_value(raw.strip())
    return out


def origin_of(origins: dict[tuple[str, ...], str], path: Sequence[Any]) -> str | None:
    """The option that set the value at ``path`` (or at a table above it), if one did."""
    key = tuple(str(p) for p in path)
    return next((origins[key[:n]] for n in range(len(key), 0, -1) if key[:n] in origins), None)


def _known_keys() -> list[str]:
    return [f"{t}.{k}" for t, keys in SCHEMA.items() for k in keys]


def load_suite(
    name_or_path: str,
    profile: str = "full",
    *,
    overrides: Sequence[str] = (),
    seeds: int | None = None,
) -> Suite:
    """Load, apply ``profile``, ``--set`` overrides and ``--seeds``, then validate."""
    path = find_suite(name_or_path)
    raw, locator = tomlsource.load_toml(path)  # the one parse of the file per load
    validate(raw, path, locator)
    profiles = raw.get("profiles", {})
    if profile not in profiles and profile not in PROFILES:
        raise UnknownNameError("profile", profile, [*profiles, *PROFILES], f" in {path}")
    data = deep_merge({k: v for k, v in raw.items() if k != "profiles"}, profiles.get(profile, {}))
    if overrides or seeds is not None:  # claims name cells of the file's matrix, not of a narrowed one
        validate(data, path, locator, where=f" (profile {profile!r})")
        check_claims(Suite(data["suite"]["name"], path, profile, data, locator))
    origins: dict[tuple[str, ...], str] = {}
    for assignment in overrides:
        data = apply_set(data, assignment, path)
        shown = assignment if len(assignment) <= 80 else assignment[:60] + "..."
        origins[tuple(p.strip() for p in assignment.split("=", 1)[0].split("."))] = f"--set {shown}"
    if seeds is not None:
        data.setdefault("matrix", {})["seeds"] = seeds
        origins[("matrix", "seeds")] = f"--seeds {seeds}"
    validate(data, path, locator, where=f" (profile {profile!r})", origins=origins)
    name = data["suite"]["name"]
    suite = Suite(name, path, profile, data, locator, origins)
    check_claims(suite, claims=not (overrides or seeds is not None))
    return suite


def check_claims(suite: Suite, claims: bool = True) -> None:
    """The matrix is not absurdly large, and every claim names cells and a metric the suite has.

    Claims are checked against the suite as its file and profile write it: ``--set`` and
    ``-q`` may narrow the matrix to cells some claims do not use (those report no data).
    """
    keys = suite.cell_keys()

    def fail(message: str, key_path: Sequence[Any]) -> SuiteError:
        return suite.error(message + f" (profile {suite.profile!r})" * ("profile" not in message), key_path)

    suitevalues.check_size(len(keys), fail)
    metrics = [m if isinstance(m, str) else str(m.get("name")) for m in
               suite.data.get("eval", {}).get("metrics", DEFAULT_EVAL["metrics"])]
    suitevalues.check_primary(suite.data, metrics, fail)
    if claims:
        suitevalues.check_claims_match(suite.data.get("claims", []), keys, metrics, suite.profile, fail,
                                       registered_metric)


def registered_metric(name: str) -> bool:
    """Whether a metric plugin registers ``name`` (asked only to word an error, never to pass one)."""
    try:
        from harness.host import get_host

        return name in get_host().metrics
    except Exception:  # noqa: BLE001 - no registry, no better wording; the error is raised either way
        return True


def validate(data: dict[str, Any], path: Path, locator: KeyLocator, where: str = "",
             origins: dict[tuple[str, ...], str] | None = None) -> None:
    """Structural validation: unknown keys and wrong types name the file, key and line.

    The raw file is checked table by table, each profile against the same schema
    (its errors point into the profile); required keys are checked once a
    profile is merged (the raw file has ``profiles``, a merged one has not).
    """

    def fail(message: str, key_path: Sequence[Any]) -> SuiteError:
        origin = origin_of(origins or {}, key_path)  # a value from --set or --seeds: name the option
        if origin:
            return SuiteError(f"{origin}: {message}{where}")
        return SuiteError(message + where, str(path), locator.line(key_path))

    _check_structure(data, fail, ())
    for name, profile in data.get("profiles", {}).items():
        if not isinstance(profile, dict):
            raise fail(f"profile {name!r} must be a table", ("profiles", name))
        _check_structure(profile, fail, ("profiles", name))
    suitevalues.check_raw(data, fail)
    suitetuning.check_table(data, fail)
    if "profiles" not in data:
        _check_required(data, fail)
        suitevalues.check_merged(data, fail)


def _check_structure(data: dict[str, Any], fail: Any, root: tuple[Any, ...]) -> None:
    def check_table(table: Any, spec: dict[str, Any], prefix: tuple[Any, ...], label: str) -> None:
        if not isinstance(table, dict):
            raise fail(f"{label} must be a table", (*root, *prefix))
        for key, value in table.items():
            dotted = ".".join(str(p) for p in (*prefix, key))
            at = (*root, *prefix, key)
            if key not in spec:
                close = suggest(key, spec)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(spec))}"
                raise fail(f"unknown key {dotted!r}{hint}", at)
            expected = spec[key]
            if expected == "table":
                if not isinstance(value, dict):
                    raise fail(f"{dotted} must be a table, got {type(value).__name__}", at)
                continue
            ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)
            if not ok:
                raise fail(f"{dotted} must be {_type_names(expected)}, got {type(value).__name__} {value!r}", at)
            if (prefix[-1:] and (prefix[-1], key) in POSITIVE) and value <= 0:
                raise fail(f"{dotted} must be positive, got {value!r}", at)

    for key in data:
        if key not in TOP_LEVEL or (root and key == "profiles"):
            close = suggest(key, TOP_LEVEL)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known tables: {', '.join(sorted(TOP_LEVEL))}"
            raise fail(f"unknown table {key!r}{hint}", (*root, key))
    for table, spec in SCHEMA.items():
        if table in data:
            check_table(data[table], spec, (table,), f"[{table}]")
    for label, method in data.get("methods", {}).items():
        check_table(method, METHOD_KEYS, ("methods", label), f"[methods.{label}]")
        sizes = method.get("codebook_size", [1])
        if not sizes or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes):
            raise fail(f"methods.{label}.codebook_size must be a non-empty list of positive integers, "
                       f"got {sizes!r}", (*root, "methods", label, "codebook_size"))
        for i, sched in enumerate(method.get("schedules", [])):
            check_table(sched, SCHEDULE_KEYS, ("methods", label, "schedules", i), "a schedule")
    for i, sched in enumerate(data.get("schedules", [])):
        check_table(sched, SCHEDULE_KEYS, ("schedules", i), "[[schedules]]")
    for i, claim in enumerate(data.get("claims", [])):
        check_table(claim, CLAIM_KEYS, ("claims", i), "[[claims]]")
        for required in ("id", "metric", "where"):
            if required not in claim:
                raise fail(f"claim {i + 1} needs {required!r}", (*root, "claims", i))
        if claim.get("aggregate", "mean") not in AGGREGATES:
            raise fail(f"claims.aggregate must be one of {', '.join(AGGREGATES)}", (*root, "claims", i, "aggregate"))
        if claim.get("op", ">=") not in OPS:
            raise fail(f"claims.op must be one of {', '.join(OPS)}", (*root, "claims", i, "op"))
        if claim.get("kind", "assert") not in ("assert", "report"):
            raise fail("claims.kind must be 'assert' or 'report'", (*root, "claims", i, "kind"))
    for i, ref in enumerate(data.get("reference", [])):
        check_table(ref, REFERENCE_KEYS, ("reference", i), "[[reference]]")


def _check_required(data: dict[str, Any], fail: Any) -> None:
    for table, keys in {"suite": ("name",), "dataset": ("name",), "model": ("name",),
                        "matrix": ("codebook_size", "dim", "seeds")}.items():
        for key in keys:
            if key not in data.get(table, {}):
                raise fail(f"[{table}] needs {key!r}", (table,))
    train = data.get("train", {})
    if "steps" not in train and "epochs" not in train:
        raise fail("[train] needs 'steps' or 'epochs'", ("train",))
    for key in ("codebook_size", "dim"):
        values = data["matrix"][key]
        if not isinstance(values, list) or not values or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values
        ):
            raise fail(f"matrix.{key} must be a non-empty list of positive integers, got {values!r}",
                       ("matrix", key))
    labels = data["matrix"].get("method") or list(data.get("methods", {}))
    if not labels:
        raise fail("the suite names no method: add [methods.<label>] tables or matrix.method", ("matrix",))

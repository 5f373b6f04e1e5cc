"""``harness new quantizer NAME``: write an installable quantizer plugin package to edit.

The package is the shortest road from an idea to the leaderboard: a working
nearest-code quantizer (the author replaces its insides), the ``harness``
entry point that registers it, tests that run the conformance kit on it, and a
README with the three commands that matter (install, run, leaderboard).

The package depends on the harness by a requirement it can resolve anywhere:
no package index serves ``vq-harness``, so the default is the harness's git
repository (``--harness-source`` or ``$HARNESS_SOURCE`` choose another: a git
URL, a wheel, or ``vq-harness>=X`` once an index serves it). docs/ci.md installs
the package the same way.

Layout (for ``NAME = my-vq``)::

    harness-my-vq/
        pyproject.toml            distribution harness-my-vq, entry point harness_my_vq
        README.md
        .gitignore                what running the harness and the tests writes
        src/harness_my_vq/__init__.py   the hookimpl that registers the quantizer
        src/harness_my_vq/quantizer.py  the quantizer: edit this
        tests/test_conformance.py       the conformance kit run on it
"""

from __future__ import annotations

import json
import keyword
import os
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from harness.errors import UsageError

#: lower-case words joined by single hyphens or underscores, like every registry name
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
MAX_NAME = 40

#: the environment variable that sets the scaffold's harness requirement (as --harness-source)
HARNESS_SOURCE_ENV = "HARNESS_SOURCE"
HARNESS_DISTRIBUTION = "vq-harness"
#: the package's ``[test]`` extra
TEST_REQUIREMENTS = ("pytest>=8", "pytest-xdist>=3.5")


@dataclass(frozen=True)
class PluginNames:
    """Every name the package needs, derived once from the quantizer name."""

    quantizer: str  # the registry name: ``-q NAME``, ``quantizer = "NAME"`` in suites
    distribution: str  # what pip installs and uninstalls
    package: str  # the import name (and the entry-point name in the ``harness`` group)
    cls: str  # the quantizer class

    @classmethod
    def from_name(cls, name: str) -> PluginNames:
        check_name(name)
        words = re.split(r"[-_]", name)
        return cls(
            quantizer=name,
            distribution=f"harness-{'-'.join(words)}",
            package=f"harness_{'_'.join(words)}",
            cls="".join(w.capitalize() for w in words) + "Quantizer",
        )


def check_name(name: str) -> None:
    """Reject names that cannot be a registry name, a distribution and an import name at once."""
    if not NAME_PATTERN.match(name or ""):
        raise UsageError(
            f"bad quantizer name {name!r}: use lower-case letters and digits, words joined by "
            "'-' or '_', starting with a letter (e.g. 'my-vq' or 'cosine_vq')"
        )
    if len(name) > MAX_NAME:
        raise UsageError(f"bad quantizer name {name!r}: at most {MAX_NAME} characters")
    if keyword.iskeyword(name.replace("-", "_")):
        raise UsageError(f"bad quantizer name {name!r}: a Python keyword reads badly everywhere")


def check_not_registered(name: str) -> None:
    """A name an installed plugin already claims would be a conflict as soon as both load."""
    from harness.host import get_host

    registry = get_host().quantizers
    if name in registry:
        source = registry.get(name).source
        raise UsageError(f"a quantizer named {name!r} is already registered by {source}; "
                         "pick another name")


def default_harness_source() -> str:
    """Where the harness installed here came from, as a source pip can install again.

    In order: the ``Repository`` project URL of the installed metadata; the
    ``origin`` remote of the checkout it is an editable install of; that checkout
    itself as a ``git+file://localhost/...`` URL (right on this machine only: a
    CI job needs ``--harness-source``). The harness has no canonical public URL
    to fall back on, so with none of these it asks for ``--harness-source``.
    """
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        urls = metadata(HARNESS_DISTRIBUTION).get_all("Project-URL") or []
    except PackageNotFoundError:
        urls = []
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "repository" and url.strip():
            return f"git+{url.strip()}"
    checkout = editable_checkout()
    if checkout is not None:
        remote = _git(checkout, "remote", "get-url", "origin")
        if remote and "://" in remote:
            return f"git+{remote}"
        if _git(checkout, "rev-parse", "--git-dir"):
            return f"git+file://localhost{checkout.resolve().as_posix()}"
    raise UsageError("cannot tell where this harness was installed from: pass --harness-source "
                     "(a git URL such as git+https://<host>/<org>/vq-harness.git, a wheel, or "
                     f"{HARNESS_DISTRIBUTION}>=X) or set ${HARNESS_SOURCE_ENV}")


def _git(folder: Path, *args: str) -> str | None:
    """``git -C folder args`` stripped output, or ``None`` when it fails."""
    import subprocess

    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def harness_requirement(source: str | None = None) -> str:
    """The PEP 508 line the package depends on the harness by.

    ``source`` (else ``$HARNESS_SOURCE``, else the harness's git repository) is a
    requirement (``vq-harness>=0.2``, from an index), a URL pip installs
    (``git+https://...``, ``git+file:///...``, ``https://.../vq_harness-0.1.0-py3-none-any.whl``)
    or a local wheel or checkout (written as a ``file://`` URL: fine for one
    machine, not for CI).
    """
    source = (source or os.environ.get(HARNESS_SOURCE_ENV) or default_harness_source()).strip()
    if re.match(rf"^{HARNESS_DISTRIBUTION}\b", source, re.IGNORECASE):
        return source
    if "://" in source:
        return f"{HARNESS_DISTRIBUTION} @ {source}"
    path = Path(source).expanduser()
    if path.exists():
        return f"{HARNESS_DISTRIBUTION} @ {path.resolve().as_uri()}"
    raise UsageError(f"--harness-source {source!r} is neither a requirement ({HARNESS_DISTRIBUTION}>=X), "
                     "a URL (git+https://..., a wheel's https:// or file:// URL) nor an existing path")


def editable_checkout() -> Path | None:
    """The checkout this harness is an editable install of (PEP 610 ``direct_url.json``), if any."""
    import json as _json
    from importlib.metadata import distributions
    from urllib.parse import unquote, urlparse

    # the installed record, not an .egg-info a source checkout on sys.path may shadow it with
    texts = [d.read_text("direct_url.json") for d in distributions(name=HARNESS_DISTRIBUTION)]
    text = next((x for x in texts if x), None)
    info = _json.loads(text) if text else {}
    if not info.get("dir_info", {}).get("editable") or not info.get("url", "").startswith("file:"):
        return None
    return Path(unquote(urlparse(info["url"]).path))


def install_command(requirement: str) -> str:
    """The install step to print: one that keeps this environment's harness as it is.

    A URL dependency (the default) makes ``pip install -e ".[test]"`` replace an editable
    harness with a copy from that URL, so beside an editable harness the package goes in
    with ``--no-deps`` (everything it needs is the harness's, already here) and the test
    extra's packages are named when they are missing.
    """
    if editable_checkout() is None or "@" not in requirement:
        return 'pip install -e ".[test]"'
    from importlib.metadata import PackageNotFoundError, version

    missing = []
    for spec in TEST_REQUIREMENTS:
        try:
            version(re.split(r"[<>=!~ ]", spec, maxsplit=1)[0])
        except PackageNotFoundError:
            missing.append(f'"{spec}"')
    return "pip install --no-deps -e ." + (f" && pip install {' '.join(missing)}" if missing else "")


def editable_warning(requirement: str) -> str | None:
    """Why the printed install step says ``--no-deps`` (an editable harness), and what CI does."""
    checkout = editable_checkout()
    if checkout is None or "@" not in requirement:
        return None
    return (f"note: this harness is an editable install of {checkout}; the package's dependency "
            f"{requirement.split('@', 1)[1].strip()} would make `pip install -e \".[test]\"` replace it, so "
            "install the package with --no-deps as shown (elsewhere, e.g. in CI, `pip install -e "
            "\".[test]\"` brings the harness from that URL)")


def render(names: PluginNames, harness: str | None = None) -> dict[str, str]:
    """The package's files: relative path -> text; ``harness`` as :func:`harness_requirement`."""
    requirement = harness_requirement(harness)
    values = {"name": names.quantizer, "distribution": names.distribution,
              "package": names.package, "cls": names.cls,
              "harness_requirement": json.dumps(requirement),
              "test_requirements": ", ".join(json.dumps(r) for r in TEST_REQUIREMENTS),
              "install": install_command(requirement)}
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        ".gitignore": GITIGNORE,
        f"src/{names.package}/__init__.py": INIT,
        f"src/{names.package}/quantizer.py": QUANTIZER,
        "tests/test_conformance.py": TESTS,
    }
    return {path: Template(text).substitute(values) for path, text in files.items()}


def scaffold_quantizer(name: str, folder: Path | None = None, *, check_registry: bool = True,
                       harness_source: str | None = None) -> Path:
    """Write the plugin package for quantizer ``name`` into ``folder`` (default ``./harness-NAME``).

    Refuses an existing non-empty folder: a scaffold never overwrites work.
    ``harness_source`` sets the dependency on the harness (see :func:`harness_requirement`).
    """
    names = PluginNames.from_name(name)
    files = render(names, harness_source)  # a bad source fails before anything is written
    if check_registry:
        check_not_registered(name)
    folder = Path(folder) if folder is not None else Path.cwd() / names.distribution
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"{folder} already exists and is not empty, and the scaffold never overwrites "
                         f"files: to keep it, edit it (the harness dependency is a line of "
                         f"{folder / 'pyproject.toml'}); to start over, remove it (rm -r {folder}) and "
                         f"run this again; or write elsewhere with --dir NEW_FOLDER")
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


# -- templates (string.Template: $name, $distribution, $package, $cls, $harness_requirement) --

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "$distribution"
version = "0.1.0"
description = "The $name quantizer, a vq-harness plugin"
readme = "README.md"
requires-python = ">=3.10"
# The harness from its git repository (no package index serves vq-harness); once one
# does, write "vq-harness>=0.1" (indexes refuse packages with URL dependencies).
dependencies = [$harness_requirement, "torch"]

[project.optional-dependencies]
test = [$test_requirements]

# The harness finds plugins through this entry-point group: the name on the
# left is the plugin's name (`harness plugins`, HARNESS_DISABLE_PLUGINS), the
# module on the right holds the hookimpl that registers the quantizer.
[project.entry-points.harness]
$package = "$package"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

INIT = '''\
"""The $name quantizer plugin for vq-harness: registers the quantizer with the host."""

from harness import hookimpl


@hookimpl
def harness_register_quantizers(register):
    # A lazy "module:Class": the host imports it the first time a cell or a test uses
    # it, so `harness list` reads its name and docstring without paying for torch.
    register("$package.quantizer:$cls", name="$name")
'''

QUANTIZER = '''\
"""The $name quantizer: start from nearest-code VQ and make it yours."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.contracts import QuantizeOutput, Quantizer
from harness.ops import nearest_code


class $cls(Quantizer):
    """Nearest-code VQ with a beta commitment loss (replace with your method's summary).

    The first line above is what `harness list quantizers` shows. Below it,
    name the paper (set ``paper`` too), the defaults, and for every value the
    paper leaves out: the value you chose and why.

    Defaults: ``beta = 0.25`` (VQ-VAE, van den Oord et al. 2017); codes start
    uniform in ``(-1/K, 1/K)``, as in taming-transformers.
    """

    # The registry name: `harness run toy2d -q $name`, `quantizer = "$name"` in suites.
    name = "$name"
    paper = "van den Oord et al. 2017 (replace with your paper)"

    def __init__(self, dim: int, codebook_size: int, beta: float = 0.25) -> None:
        # The host builds every quantizer as Q(dim=D, codebook_size=K, **params);
        # params come from the suite's [methods.<label>] table or --set.
        super().__init__(dim, codebook_size)
        self.beta = beta
        k = codebook_size
        self.embedding = nn.Parameter(torch.empty(k, dim).uniform_(-1.0 / k, 1.0 / k))

    def codebook(self) -> Tensor:
        """The (K, D) codes in latent space: the latent plots draw them."""
        return self.embedding

    def quantize(self, z: Tensor) -> QuantizeOutput:
        """Quantize tokens ``z`` of shape (N, D); the runner flattens feature maps for you."""
        # The base class's forward() calls this with float32 tokens and autocast off, so
        # every op here runs in float32 even when the nets train in bf16. Implement
        # quantize(), not forward().
        # The host's chunked search: bounded memory for 65,536 codes and 100k+ tokens.
        indices = nearest_code(z.detach(), self.embedding.detach())
        e = F.embedding(indices, self.embedding)
        # Codebook loss moves the codes to the tokens; commitment keeps tokens near codes.
        codebook_loss = F.mse_loss(e, z.detach())
        commitment_loss = F.mse_loss(z, e.detach())
        # Straight-through: the forward pass sees the code, the gradient flows to z.
        z_q = z + (e - z).detach()
        return QuantizeOutput(
            z_q=z_q,
            indices=indices,  # int64 (N,), in [0, codebook_size)
            loss=codebook_loss + self.beta * commitment_loss,
            # Named values for MLflow (train/<name>); tensors are fine, the host converts them.
            logs={"codebook_loss": codebook_loss.detach(), "commitment_loss": commitment_loss.detach()},
        )
'''

GITIGNORE = '''\
# What running the harness and the tests writes into this folder
mlflow.db
mlflow.db-*
.*.harness-lock
mlruns/
mlartifacts/
.harness/
*.pt
*.ckpt
# Python and tool caches, builds
__pycache__/
*.egg-info/
.pytest_cache/
.ruff_cache/
.hypothesis/
build/
dist/
.venv/
'''

TESTS = '''\
"""The harness conformance kit on the $name quantizer: the contract every quantizer keeps."""

from harness.testing import QuantizerConformance


class Test$cls(QuantizerConformance):
    quantizer = "$name"
'''

README = '''\
# $distribution

The `$name` quantizer as a vq-harness plugin. Edit `src/$package/quantizer.py`
(its `quantize` method); the rest is wiring.

```bash
$install          # install: the harness now finds `$name`
harness run toy2d -q $name --profile smoke         # run it on the toy suite, recorded in MLflow
harness leaderboard toy2d --profile smoke          # rank it against the other methods of that profile
```

`pyproject.toml` takes the harness from its git repository (no package index serves
it); edit that line to pin a commit (`...git@<commit>`) or to use a wheel. Where no
harness is installed yet (CI, a fresh venv), `pip install -e ".[test]"` brings it, with
pytest; beside an editable harness checkout, `pip install --no-deps -e .` keeps that
checkout (the URL would replace it).

Check it keeps the quantizer contract (shapes, dtypes, gradients, index range):

```bash
pytest
```

`harness list quantizers` shows the quantizer with this distribution and its
version; `HARNESS_DISABLE_PLUGINS=$package` turns the plugin off.
'''

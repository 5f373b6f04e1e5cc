"""``harness new quantizer NAME``: write an installable quantizer plugin package to edit.

The package is the shortest road from an idea to the leaderboard: a working
nearest-code quantizer (the author replaces its insides), the ``harness``
entry point that registers it, tests that run the conformance kit on it, and a
README with the three commands that matter (install, run, leaderboard).

Layout (for ``NAME = my-vq``)::

    harness-my-vq/
        pyproject.toml            distribution harness-my-vq, entry point harness_my_vq
        README.md
        src/harness_my_vq/__init__.py   the hookimpl that registers the quantizer
        src/harness_my_vq/quantizer.py  the quantizer: edit this
        tests/test_conformance.py       the conformance kit run on it
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from harness.errors import UsageError

#: lower-case words joined by single hyphens or underscores, like every registry name
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
MAX_NAME = 40


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


def render(names: PluginNames) -> dict[str, str]:
    """The package's files: relative path -> text."""
    values = {"name": names.quantizer, "distribution": names.distribution,
              "package": names.package, "cls": names.cls}
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"src/{names.package}/__init__.py": INIT,
        f"src/{names.package}/quantizer.py": QUANTIZER,
        "tests/test_conformance.py": TESTS,
    }
    return {path: Template(text).substitute(values) for path, text in files.items()}


def scaffold_quantizer(name: str, folder: Path | None = None, *, check_registry: bool = True) -> Path:
    """Write the plugin package for quantizer ``name`` into ``folder`` (default ``./harness-NAME``).

    Refuses an existing non-empty folder: a scaffold never overwrites work.
    """
    names = PluginNames.from_name(name)
    if check_registry:
        check_not_registered(name)
    folder = Path(folder) if folder is not None else Path.cwd() / names.distribution
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"{folder} already exists and is not empty; the scaffold never "
                         "overwrites files (choose another --dir)")
    for relative, text in render(names).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


# -- templates (string.Template: $name, $distribution, $package, $cls) ---------------

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
dependencies = ["vq-harness", "torch"]

[project.optional-dependencies]
test = ["pytest>=8", "pytest-xdist>=3.5"]

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
    # Import inside the hook: the host loads every plugin at start-up, and
    # `harness list` should not pay for torch code it does not run.
    from $package.quantizer import $cls

    register($cls)
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

    def forward(self, z: Tensor) -> QuantizeOutput:
        """Quantize tokens ``z`` of shape (N, D); the runner flattens feature maps for you."""
        # Quantization runs in float32 even when the nets run in bf16.
        z = z.float()
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

TESTS = '''\
"""The harness conformance kit on the $name quantizer: the contract every quantizer keeps."""

from harness.testing import QuantizerConformance


class Test$cls(QuantizerConformance):
    quantizer = "$name"
'''

README = '''\
# $distribution

The `$name` quantizer as a [vq-harness](https://pypi.org/project/vq-harness/) plugin.
Edit `src/$package/quantizer.py`; the rest is wiring.

```bash
pip install -e .                                   # install: the harness now finds `$name`
harness run toy2d -q $name --profile smoke         # run it on the toy suite, recorded in MLflow
harness leaderboard toy2d                          # rank it against every other method
```

Check it keeps the quantizer contract (shapes, dtypes, gradients, index range):

```bash
pytest
```

`harness list quantizers` shows the quantizer with this distribution and its
version; `HARNESS_DISABLE_PLUGINS=$package` turns the plugin off.
'''

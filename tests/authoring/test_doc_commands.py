"""Every shell command in README.md, docs/*.md and pages/README.md is run here, with the output
the page shows, or excluded in EXCLUDED below with the reason: a page cannot gain a command
nobody runs, and a table entry whose command left the pages fails too.

What counts as a command: each line of a fenced ```bash, ```sh, ```shell or ```console block,
and each ``run:`` step of a ```yaml block (docs/ci.md's workflows), a leading ``$ `` prompt
dropped, ``\\`` continuations joined, a trailing ``# comment`` cut (a commented-out line is
no command), and ``a && b`` split into ``a`` and ``b``. In a ```console block the lines after
a ``$ `` command, up to the next one, are the output it shows.

Each page runs its commands in the page's order in one sandbox of its own (a tmp_path, so
pytest-xdist can run pages side by side): the sandbox is the working folder, so the store is
its ``./mlflow.db`` (the default the docs describe; ``MLFLOW_TRACKING_URI`` is unset), ``HOME``
is a folder inside it, and plugins are the installed ones (``HARNESS_DISABLE_PLUGINS`` unset).
``cd`` moves the sandbox's working folder. A command is run as written, except that
RUN_AS may append options (fewer steps or seeds, ``--dry-run``) or replace a placeholder of
the page (a run id, a server's URL): each such change says why. Commands that need earlier
ones (``harness leaderboard`` after ``harness run``) find the earlier ones' store. Cost: 24
real cells in all (toy2d at 100 steps and one seed, two digits cells of 30 steps), the rest
listings, dry runs, leaderboards and diagnoses; no test asserts a time.

Shown output: an untagged fenced block is either the output of a command (SHOWN) or not
output at all (NOT_OUTPUT, e.g. a file tree or a diagram); every untagged block is one or the
other. The real output (stdout and stderr) must contain the shown text, under these rules:

- whitespace is not compared: every run of spaces and newlines is one space (Markdown tables
  are padded to their widest value, and long sentences are wrapped on the page);
- a Markdown table's rule ``|---|---|`` matches a rule of any width;
- a number matches any number (``0.38``, ``20``, ``11.2x``, ``0.4%``: a number followed by
  ``x`` or ``%`` keeps the suffix): counts, times and measurements vary with steps and seeds;
- ``...`` matches anything, the rest of its word included (``6b63...`` is any run id, a
  line ``...`` any lines);
- ``/home/you/vq-harness`` stands for the sandbox (the folder the command ran in).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")), "pages/README.md")
SHELL = {"bash", "sh", "shell", "console"}
HOME_PLACEHOLDER = "/home/you/vq-harness"


# ---------------------------------------------------------------- reading the pages


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str  # one simple command, as the page writes it (whitespace collapsed)
    shown: str | None = None  # the output a ```console block shows after it


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # the line of the opening fence
    lang: str
    body: str


def blocks(page: str) -> list[Block]:
    found, lines = [], (ROOT / page).read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*(`{3,})\s*([\w-]*)", lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence.group(1)), len(lines))
        found.append(Block(page, i + 1, fence.group(2).lower(), "\n".join(lines[i + 1:end])))
        i = end + 1
    return found


def _cut_comment(line: str) -> str:
    """The line without a trailing shell comment (a ``#`` that starts a word, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _lines(block: Block) -> list[tuple[int, str]]:
    """The block's shell lines with their line offsets: every line of a shell block; the
    ``run:`` steps of a YAML block (a CI workflow), ``run: |`` bodies included."""
    lines = block.body.splitlines()
    if block.lang in SHELL:
        return list(enumerate(lines))
    if block.lang not in ("yaml", "yml"):
        return []
    found = []
    for i, line in enumerate(lines):
        step = re.match(r"^(\s*)(?:- )?run:\s*(.*)$", line)
        if not step:
            continue
        if step.group(2).strip() not in ("|", ">"):
            found.append((i, step.group(2)))
            continue
        indent = len(step.group(1))
        for j in range(i + 1, len(lines)):
            if lines[j].strip() and len(lines[j]) - len(lines[j].lstrip()) <= indent:
                break
            found.append((j, lines[j]))
    return found


def commands(page: str) -> list[Command]:
    found = []
    for block in blocks(page):
        raw = _lines(block)
        i = 0
        while i < len(raw):
            start, line = raw[i]
            while line.rstrip().endswith("\\") and i + 1 < len(raw):
                i += 1
                line = line.rstrip()[:-1] + " " + raw[i][1]
            i += 1
            prompt = line.lstrip().startswith("$ ")
            if block.lang == "console" and not prompt:
                continue  # output, taken below
            shown = None
            if block.lang == "console":
                out = []
                while i < len(raw) and not raw[i][1].lstrip().startswith("$ "):
                    out.append(raw[i][1])
                    i += 1
                shown = "\n".join(out).strip() or None
            text = _cut_comment(line.lstrip().removeprefix("$ "))
            for part in text.split(" && "):
                if part.strip():
                    found.append(Command(page, block.line + 1 + start, " ".join(part.split()), shown))
    return found


def all_commands() -> list[Command]:
    return [c for page in PAGES for c in commands(page)]


# ---------------------------------------------------------------- what the test does with each

FAST = ("--seeds", "1", "--set", "train.steps=100")
FAST_WHY = ("the same road with fewer steps and one seed (its time is measured in docs/performance.md); "
            "exit 1 allowed: at 100 steps some of the paper's claims (3,000 steps) do not hold")
VENV_WHY = ("needs the scaffolded package installed: tests/authoring/test_scaffold.py "
            "(test_scaffold_install_run_rank_and_generated_tests_pass) installs it in a venv and runs "
            "this command there")
SERVER_WHY = ("needs a tracking server that stays up: tests/engines/ run `harness run` and read runs "
              "against a real `harness server` (PostgreSQL backend) in CI")
SLURM_WHY = ("a SLURM cluster, the celebahq256 images and a GPU: tests/engines/test_slurm.py runs the "
             "slurm executor on a real cluster, on toy2d")


SERVER_PORT = {"127.0.0.1:5000": "127.0.0.1:{port}"}
SERVER_PORT_WHY = "the sandbox's harness server, on a free port"


@dataclass(frozen=True)
class Run:
    """Run the command; ``extra`` options appended and ``replace`` placeholders swapped, each
    for the reason ``why``. ``codes``: the exit statuses it may end with. ``expect``: regexes the
    output must match. ``writes``: files it must leave in the sandbox."""

    extra: tuple[str, ...] = ()
    replace: dict[str, str] = field(default_factory=dict)
    why: str = ""
    codes: tuple[int, ...] = (0,)
    expect: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()


# Commands run (as written unless extra/replace says otherwise), per page.
RUN_AS: dict[str, dict[str, Run]] = {
    "README.md": {
        "harness run toy2d": Run(FAST, why=FAST_WHY, codes=(0, 1)),
        "harness list": Run(expect=(r"quantizers", r"executors", r"suites")),
        "harness list quantizers --json": Run(expect=(r'"quantizers": \[',)),
        "harness plugins": Run(expect=(r"vq-harness",)),
        "harness run toy2d --profile all": Run(
            ("--dry-run",), why="395 cells of 3,000 steps: about 19 minutes; the dry run checks the "
            "command and counts the cells as the README does",
            expect=(r"\b395 cells of suite 'toy2d' \(profile 'all'\); nothing was run",)),
        "harness run toy2d -q drifting --seeds 5 --set train.lr=0.005": Run(
            FAST, why=FAST_WHY, codes=(0, 1), expect=(r"drifting-K10-d2-s0 \| FINISHED",)),
        "harness tune digits --bits 8 --seeds 3": Run(
            ("--dry-run",), why="132 trials then 132 cells: 53 minutes for the published page (README); the dry run "
            "checks the command and counts them as the README does", expect=(r"132 trials .* then 132 cells",)),
        "harness run toy2d -q vq-harness:vq": Run(FAST, why=FAST_WHY, codes=(0, 1),
                                                   expect=(r"\| vq-K2-d2-s0 +\| FINISHED",)),
        "harness run path/to/my_suite.toml --shard 1/4 --tracking-uri http://127.0.0.1:5000": Run(
            ("--profile", "smoke", *FAST), replace={"http://127.0.0.1:5000": "{store}"},
            why="the sandbox's store stands for the server (" + SERVER_WHY + "); the smoke profile, "
            "so that the leaderboard line for this suite file below has runs to rank; " + FAST_WHY,
            expect=(r"cell runs in sqlite:///",)),
        "harness leaderboard toy2d": Run(expect=(r"## toy2d", r"\| drifting")),
        "harness leaderboard toy2d --format html --output toy2d.html": Run(writes=("toy2d.html",)),
        "harness leaderboard path/to/my_suite.toml --profile smoke": Run(
            expect=(r"## my_suite \(profile smoke", r"\| vq")),
        "harness diagnose 0660e52d": Run(replace={"0660e52d": "{cell}"},
                                         why="a cell of the sandbox's store (the page's id is an example)",
                                         expect=(r"init \(step 0\)",)),
        "harness new quantizer my-vq": Run(writes=("harness-my-vq/pyproject.toml",)),
    },
    "docs/ci.md": {
        "harness run toy2d --profile smoke --shard ${{ matrix.shard }}/4 --no-progress": Run(
            FAST, replace={"${{ matrix.shard }}": "1"},
            why="the first job of the matrix; " + FAST_WHY, codes=(0, 1),
            expect=(r"results: 1 cell runs in sqlite:///",)),
        'harness leaderboard toy2d --profile smoke >> "$GITHUB_STEP_SUMMARY"': Run(
            expect=(r"## toy2d \(profile smoke",), writes=("summary.md",)),
        "harness leaderboard toy2d --profile smoke --format html --output leaderboard.html": Run(
            writes=("leaderboard.html",)),
    },
    "docs/diagnosis.md": {
        "harness diagnose 0660e52d": Run(replace={"0660e52d": "{cell}"},
                                         why="the IBQ cell SETUP recorded (the page's id is an example)"),
        "harness diagnose 0660e52d --json": Run(replace={"0660e52d": "{cell}"},
                                                why="the IBQ cell SETUP recorded",
                                                expect=(r'"diagnosis": \{', r'"code_to_latent"')),
        "harness diagnose 0660e52d --tracking-uri sqlite:///other.db": Run(
            replace={"0660e52d": "{cell}"}, why="the IBQ cell, in the other.db SETUP copied",
            expect=(r"codebook collapse from initialization scale",)),
        ("harness run digits -q ibq --set "
         "'methods.ibq.schedules=[{name=\"codebook-init-scale\", params={scale=0.1}}]'"): Run(
            ("--bits", "8", "--seeds", "1", "--set", "train.steps=30"),
            why="6 cells, up to 13 minutes each at 12 bits: one 8-bit cell of 30 steps shows the "
            "schedule is accepted and runs; 1: 30 steps do not meet the suite's psnr claim",
            codes=(1,), expect=(r"ibq-K256-d8-s0 \| FINISHED",)),
    },
    # SETUP starts a harness server (SQLite behind it) on a free port: it stands for the page's
    # server at 127.0.0.1:5000 (a fixed port could be taken, and xdist runs pages side by side)
    "docs/teams.md": {
        "harness run toy2d --jobs 2": Run(FAST, why=FAST_WHY, codes=(0, 1), expect=(r"4 cell runs in",)),
        "curl http://127.0.0.1:5000/health": Run(
            replace=SERVER_PORT, why=SERVER_PORT_WHY, expect=(r"^OK$",)),
        "harness run toy2d --tracking-uri http://127.0.0.1:5000": Run(
            FAST, replace=SERVER_PORT, why=SERVER_PORT_WHY + "; " + FAST_WHY, codes=(0, 1),
            expect=(r"4 cell runs in http://127\.0\.0\.1:\d+, experiment 'toy2d'",)),
        "export MLFLOW_TRACKING_URI=http://127.0.0.1:5000": Run(replace=SERVER_PORT, why=SERVER_PORT_WHY),
        "harness leaderboard celebahq256 --tracking-uri http://127.0.0.1:5000": Run(
            replace=SERVER_PORT, why=SERVER_PORT_WHY + "; no celebahq256 run (the images are not "
            "here): the page says so", expect=(r"## celebahq256", r"No run recorded yet")),
    },
    # no run first: the page says what an empty store gives (the page, exit 0, no store created)
    "pages/README.md": {
        "harness leaderboard toy2d --format html --output toy2d.html": Run(writes=("toy2d.html",)),
        "harness leaderboard toy2d --tracking-uri sqlite:///path/mlflow.db": Run(
            expect=(r"No run recorded yet", r"no store there yet")),
        "harness leaderboard my-suite.toml": Run(expect=(r"## my-suite",)),
        "harness leaderboard toy2d --log": Run(expect=(r"## toy2d",)),
    },
    "docs/tutorial.md": {
        "harness new quantizer cosine-vq": Run(writes=("harness-cosine-vq/pyproject.toml",)),
        "cd harness-cosine-vq": Run(),
        "harness run toy2d --profile smoke": Run(FAST, why=FAST_WHY, codes=(0, 1)),
        "harness leaderboard toy2d --profile smoke": Run(expect=(r"## toy2d \(profile smoke", r"\| vq")),
        "harness leaderboard toy2d --profile smoke --format html --output toy2d.html": Run(
            writes=("toy2d.html",)),
    },
}

REGENERATE_WHY = ("full-profile runs of the published suites (minutes to an hour) that rewrite "
                  "pages/; the renderer they end with is `harness leaderboard`, run below")
# Commands not run here, per page, with the reason (and where they are run, if anywhere).
EXCLUDED: dict[str, dict[str, str]] = {
    "pages/README.md": {
        "python -m harness.commands.regenerate": REGENERATE_WHY,
        "python -m harness.commands.regenerate toy2d --jobs 4": REGENERATE_WHY,
        "python -m harness.commands.regenerate --skip-run": "rewrites the published pages/ from "
                                                               "./leaderboard-store, which only the runs "
                                                               "above make",
        "git clone -q --shared . /tmp/lb-src": "the pinned-checkout recipe: writes under /tmp outside "
                                               "any sandbox, for the regenerate run below",
        "pip install -q --no-deps --no-build-isolation --target /tmp/lb-site /tmp/lb-src":
            "the pinned-checkout recipe (installs into /tmp/lb-site)",
        "cd /tmp/lb-src/docs": "the pinned-checkout recipe",
        ('PYTHONPATH=/tmp/lb-site python -m harness.commands.regenerate digits --jobs 4 '
         '--store /tmp/lb-digits --out "$OLDPWD/leaderboard"'): "digits' full profile: hours on a CPU",
    },
    "docs/install.md": {
        "pip install torch --index-url https://download.pytorch.org/whl/cpu":
            "downloads from the internet, which CI does not have",
        "pip install -e .": "installs into the environment; tests/authoring/test_fresh_clone.py runs it "
                            "on a fresh clone in a fresh venv, then `harness run toy2d`",
        "harness run toy2d": "run on README.md's page (the same command)",
    },
    "README.md": {
        "harness run toy2d --profile smoke": "run on docs/tutorial.md's page (the same command; four "
                                             "cells fewer here)",
        "pip install -e .": "installs into the environment; tests/authoring/test_fresh_clone.py runs it "
                            "on a fresh clone in a fresh venv, then `harness run toy2d`",
        'pip install -e ".[test]"': "installs into the environment; tests/authoring/test_fresh_clone.py "
                                    "runs it on a fresh clone",
        "pytest -n auto": "the whole suite, which is what runs this test; test_fresh_clone.py checks "
                          "that the clone's tests collect",
        ("harness run celebahq256 --executor slurm --executor-option partition=gpu "
         "--tracking-uri http://127.0.0.1:5000"): SLURM_WHY,
        "harness ui": "a server that stays up until Ctrl-C: tests/test_ui.py starts it on a free port, "
                      "checks it answers on loopback and stops it",
    },
    "docs/ci.md": {
        "pip install -e .": "installs into the environment; tests/authoring/test_fresh_clone.py runs it "
                            "on a fresh clone in a fresh venv",
        "pytest": "a plugin package's own tests: tests/authoring/test_ci_recipe.py runs them after "
                  "the recipe's install",
        "pytest --harness-suite toy2d --harness-method my-vq -n auto":
            "tests/authoring/test_ci_recipe.py runs it on the package's quantizer (one seed, "
            "fewer steps)",
        "pytest --harness-suite toy2d -n auto --junitxml=toy2d.xml":
            "the pytest route of a whole suite inside this test run: tests/authoring/"
            "test_pytest_plugin.py runs --harness-suite on two xdist workers",
        'pip install -e ".[test]"': "installs into the environment; tests/authoring/test_ci_recipe.py "
                                    "runs the recipe in a venv",
        "pytest --harness-suite toy2d -n auto": "the pytest route of a whole suite: "
                                                "tests/authoring/test_pytest_plugin.py runs "
                                                "--harness-suite on a small suite",
    },
    "docs/teams.md": {
        "harness run toy2d": "run on README.md's page (the same command, the same sandbox set-up)",
        "harness ui": "a server that stays up until Ctrl-C: tests/test_ui.py runs it",
        "pip install 'vq-harness[postgres]'": "installs from a package index; CI has none",
        "sudo apt-get install postgresql": "system packages; tests/engines/ bring up PostgreSQL in CI",
        "sudo -u postgres createuser --pwprompt mlflow": "interactive (a password prompt) and needs "
                                                         "PostgreSQL: tests/engines/conftest.py creates "
                                                         "its database",
        "sudo -u postgres createdb -O mlflow mlflow": "needs PostgreSQL: tests/engines/conftest.py "
                                                      "creates its database",
        ("harness server --backend-store-uri postgresql://mlflow:SECRET@127.0.0.1:5432/mlflow "
         "--artifacts-destination /srv/mlflow/artifacts"): "a server that stays up, on PostgreSQL: "
                                                           "the tracking_server fixture of "
                                                           "tests/engines/conftest.py runs it",
        ("harness run celebahq256 --executor slurm --tracking-uri http://tracking-host:5000 "
         "--executor-option partition=gpu --executor-option gpus_per_cell=1 "
         "--executor-option cpus_per_cell=8 --executor-option mem_gb=32 "
         "--executor-option time=240"): SLURM_WHY,
        "harness run digits --executor ray --tracking-uri http://127.0.0.1:5000":
            "a Ray cluster and a tracking server; digits' full profile takes hours on a CPU: "
            "tests/engines/test_ray.py runs the ray executor on toy2d",
        ("harness run digits --executor ray --executor-option address=auto "
         "--executor-option num_gpus=1 --tracking-uri http://tracking-host:5000"):
            "an existing Ray cluster with GPUs: tests/engines/test_ray.py runs the ray executor",
        "harness run celebahq256 --executor slurm --resume --tracking-uri http://tracking-host:5000":
            SLURM_WHY + "; tests/engines/test_slurm.py resumes a cancelled job",
        "harness run celebahq256 --shard 1/4 --tracking-uri http://127.0.0.1:5000":
            "the celebahq256 images (not on this machine) and a server; --shard with a server: "
            "README.md's page runs `--shard 1/4` on a suite file",
        "harness run celebahq256 --shard 2/4 --tracking-uri http://127.0.0.1:5000":
            "as --shard 1/4 above",
    },
    "docs/tutorial.md": {
        'pip install "vq-harness[test] @ git+https://<host>/<org>/vq-harness.git"':
            "a placeholder URL; tests/authoring/test_ci_recipe.py installs the harness from its git "
            "repository (a file:// URL) the same way",
        'pip install -e ".[test]"': VENV_WHY.replace("runs this command there", "installs it so"),
        "harness list quantizers": VENV_WHY,
        "pytest": VENV_WHY.replace("this command", "the generated tests"),
        "harness run toy2d -q cosine-vq --profile smoke": VENV_WHY,
    },
}

# Untagged blocks that are the output of a command: page -> {the block's first line: the command}.
SHOWN: dict[str, dict[str, str]] = {
    "README.md": {"claims (Liu 2026):": "harness run toy2d"},
    "docs/diagnosis.md": {"init (step 0)         end": "harness diagnose 0660e52d"},
}
# The tree `harness new quantizer cosine-vq` writes: every file it names must exist.
TREES: dict[str, dict[str, str]] = {
    "docs/tutorial.md": {"harness-cosine-vq/": "harness new quantizer cosine-vq"},
}
# Untagged blocks that show no command's output: page -> {first line: what it is}.
NOT_OUTPUT: dict[str, dict[str, str]] = {
    "docs/architecture.md": {"harness/              the host: hookspecs, plugin registry, suite loading and "
                             "validation, the": "the repository's folders",
                             "suite file (TOML)                                  harness/suite/ (__init__.py, "
                             "schema.py, values.py, tomlsource.py)": "a diagram of the pipeline"},
    "docs/methods.md": {"## `registry-name`: Method name": "the template of a method card"},
    "docs/robustness.md": {
        "harness: error: the MLflow store /work/mlflow.db (file system /work: 0 KiB free) is full: the suite "
        "stopped. Saved: 1 of 4 cells finished and recorded (vq-K4-d2-s0), 1 unfinished with a checkpoint to "
        "continue from. 2 runs left RUNNING: once space is freed, `harness runs repair --tracking-uri "
        "sqlite:////work/mlflow.db --suite tiny` closes them, then `harness run tiny.toml -q vq --seeds 4 "
        "--tracking-uri sqlite:////work/mlflow.db --resume` continues":
        "the line a store on a full disk prints (tests/robustness/test_disk_full.py fills a real tmpfs "
        "and checks it)"},
}

# Done before a page's first command (harness arguments, or a callable of the sandbox).


def _my_suite(box: Sandbox) -> None:
    toml = (ROOT / "harness/suites/toy2d.toml").read_text()
    assert '\nname = "toy2d"\n' in toml
    (box.root / "path/to").mkdir(parents=True)
    (box.root / "path/to/my_suite.toml").write_text(toml.replace('\nname = "toy2d"\n', '\nname = "my_suite"\n'))


def _other_store(box: Sandbox) -> None:
    shutil.copy(box.root / "mlflow.db", box.root / "other.db")


def _tracking_server(box: Sandbox) -> None:
    """A `harness server` on a free port of loopback (SQLite behind it, not the page's PostgreSQL:
    tests/engines/ run that one), standing for the page's server at 127.0.0.1:5000."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (box.root / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "harness.commands.cli", "server", "--backend-store-uri",
                             "sqlite:///server.db", "--port", str(port), "--workers", "1"],
                            cwd=box.root, env=box.env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def stop() -> None:
        from tests.engines.conftest import stop_server

        stop_server(proc)
        log.close()

    box.cleanups.append(stop)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.read().strip() == b"OK":
                    box.extra["port"] = str(port)
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"harness server did not answer on port {port}: "
                         f"{(box.root / 'server.log').read_text()[-3000:]}")


def _github_env(box: Sandbox) -> None:
    box.env["GITHUB_STEP_SUMMARY"] = str(box.root / "summary.md")


def _my_dash_suite(box: Sandbox) -> None:
    toml = (ROOT / "harness/suites/toy2d.toml").read_text()
    (box.root / "my-suite.toml").write_text(toml.replace('\nname = "toy2d"\n', '\nname = "my-suite"\n'))


SETUP = {
    "docs/teams.md": [_tracking_server],
    "pages/README.md": [_my_dash_suite],
    "docs/ci.md": [_github_env],
    "README.md": [_my_suite],
    # the page's example: IBQ at its authors' defaults on digits at 8 bits, 30 steps (as
    # tests/test_diagnosis.py); other.db: a second store holding the same cell
    "docs/diagnosis.md": [("run", "digits", "-q", "ibq", "--bits", "8", "--seeds", "1",
                           "--set", "train.steps=30", "--no-progress"), _other_store],
}


# ---------------------------------------------------------------- running them


class Sandbox:
    def __init__(self, root: Path):
        self.root = self.cwd = root
        (root / "home").mkdir()
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("MLFLOW_TRACKING_URI", "HARNESS_DISABLE_PLUGINS", "HARNESS_SOURCE")
                    and not k.startswith("PYTEST_")}
        self.env.update(HOME=str(root / "home"), MPLBACKEND="Agg", GIT_PYTHON_REFRESH="quiet")
        self.extra: dict[str, str] = {}
        self.cleanups: list = []

    def harness(self, args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "harness.commands.cli", *args], cwd=self.cwd,
                              env=self.env, capture_output=True, text=True, timeout=900)

    def values(self) -> dict[str, str]:
        from mlflow.tracking import MlflowClient

        store = f"sqlite:///{self.root / 'mlflow.db'}"
        client = MlflowClient(store)
        ids = [e.experiment_id for e in client.search_experiments()]
        cells = client.search_runs(ids, "tags.`harness.kind` = 'cell'", order_by=["attributes.start_time DESC"])
        return {"store": store, "cell": cells[0].info.run_id[:8] if cells else "no-cell-yet", **self.extra}


def normalize(text: str) -> str:
    text = re.sub(r"-{3,}", "---", text)
    return " ".join(text.split())


NUMBER = r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"


def shown_pattern(shown: str, root: Path) -> str:
    """The regex a shown block stands for (the rules at the top of this file)."""
    shown = normalize(shown.replace(HOME_PLACEHOLDER, str(root)))
    out = []
    for token in re.split(r"(\w*\.\.\.|(?<![\w.])\d+(?:\.\d+)?(?=[x%]?(?![\w])))", shown):
        if token.endswith("..."):
            out.append(".*?")
        elif re.fullmatch(r"\d+(?:\.\d+)?", token):
            out.append(NUMBER)
        else:
            out.append(re.escape(token))
    return "".join(out)


def assert_shows(shown: str, real: str, root: Path, where: str) -> None:
    pattern = shown_pattern(shown, root)
    assert re.search(pattern, normalize(real), flags=re.S), (
        f"{where}: the output differs from what the page shows.\n--- shown:\n{shown}\n--- real:\n{real[-6000:]}")


def outputs(page: str) -> tuple[dict[str, str], dict[str, str]]:
    """The shown output and the shown file tree of each command of the page."""
    shown, trees = {}, {}
    for block in blocks(page):
        if block.lang:
            continue
        first = block.body.strip().splitlines()[0].strip()
        if first in SHOWN.get(page, {}):
            shown[SHOWN[page][first]] = block.body
        elif first in TREES.get(page, {}):
            trees[TREES[page][first]] = block.body
    for command in commands(page):
        if command.shown:
            shown[command.text] = command.shown
    return shown, trees


def run_page(page: str, root: Path) -> None:
    box = Sandbox(root)
    try:
        _run_page(page, box)
    finally:
        for cleanup in box.cleanups:
            cleanup()


def _run_page(page: str, box: Sandbox) -> None:
    for step in SETUP.get(page, []):
        if callable(step):
            step(box)
        else:
            done = box.harness(list(step))
            assert done.returncode in (0, 1), f"{page} SETUP {step}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    shown, trees = outputs(page)
    ran = set()
    for command in commands(page):
        plan = RUN_AS.get(page, {}).get(command.text)
        if plan is None or command.text in ran:
            continue
        ran.add(command.text)
        where = f"{page}:{command.line}: {command.text}"
        text = command.text
        if plan.replace:
            values = box.values()
            for old, new in plan.replace.items():
                text = text.replace(old, new.format(**values))
        argv = shlex.split(text)
        append_to = None
        if ">>" in argv:  # a CI step's `>> "$GITHUB_STEP_SUMMARY"`
            at = argv.index(">>")
            target = re.sub(r"\$\{?(\w+)\}?", lambda m: box.env[m.group(1)], argv[at + 1])
            argv, append_to = argv[:at], box.cwd / target
        if argv[0] == "cd":
            box.cwd = box.cwd / argv[1]
            assert box.cwd.is_dir(), where
            continue
        if argv[0] == "export":  # for the commands after it, as in a shell
            name, value = argv[1].split("=", 1)
            box.env[name] = value
            continue
        if argv[0] == "curl":
            with urllib.request.urlopen(argv[1], timeout=30) as answer:
                body = answer.read().decode()
            for regex in plan.expect:
                assert re.search(regex, body), f"{where}: no {regex!r} in {body!r}"
            continue
        assert argv[0] == "harness", f"{where}: only harness commands, cd, export and curl are run here"
        done = box.harness([*argv[1:], *plan.extra])
        real = done.stdout + done.stderr
        if append_to is not None:
            with append_to.open("a") as summary:
                summary.write(done.stdout)
        assert done.returncode in plan.codes, f"{where}: exit {done.returncode}\n{real[-6000:]}"
        for regex in plan.expect:
            assert re.search(regex, real), f"{where}: no {regex!r} in\n{real[-6000:]}"
        for path in plan.writes:
            assert (box.cwd / path).is_file(), f"{where}: wrote no {path}"
        if command.text in shown:
            assert_shows(shown[command.text], real, box.cwd, where)
        if command.text in trees:
            top, *files = trees[command.text].strip().splitlines()
            for line in files:
                name = line.split()[0]
                assert (box.cwd / top.strip() / name).is_file(), (
                    f"{where}: the page's tree names {top.strip()}{name}, which the command did not write")


# ---------------------------------------------------------------- the tests


def test_the_pages_have_commands():
    found = all_commands()
    assert len(found) >= 50, len(found)
    assert {c.page for c in found} >= {"README.md", "docs/tutorial.md", "docs/teams.md", "docs/diagnosis.md"}


def test_every_command_is_run_or_excluded_with_a_reason():
    """A page that gains a command fails here until the command is run or excluded; a table
    entry no page has any more fails too (the tables say what the pages say)."""
    listed = {(c.page, c.text) for c in all_commands()}
    run = {(page, text) for page, table in RUN_AS.items() for text in table}
    excluded = {(page, text) for page, table in EXCLUDED.items() for text in table}
    assert not run & excluded, run & excluded
    unplanned = sorted(listed - run - excluded)
    assert not unplanned, "commands in the docs neither run nor excluded: " + "; ".join(
        f"{page}: {text}" for page, text in unplanned)
    stale = sorted((run | excluded) - listed)
    assert not stale, "table entries no page has: " + "; ".join(f"{page}: {text}" for page, text in stale)
    assert all(reason.strip() for table in EXCLUDED.values() for reason in table.values())
    assert all(plan.why for table in RUN_AS.values() for plan in table.values() if plan.extra or plan.replace)


def test_every_untagged_block_is_output_or_said_not_to_be():
    for page in PAGES:
        for block in blocks(page):
            if block.lang:
                continue
            first = block.body.strip().splitlines()[0].strip()
            known = {**SHOWN.get(page, {}), **TREES.get(page, {}), **NOT_OUTPUT.get(page, {})}
            assert first in known, f"{page}:{block.line}: an untagged block neither SHOWN nor NOT_OUTPUT: {first!r}"
            if first in {**SHOWN.get(page, {}), **TREES.get(page, {})}:
                command = known[first]
                assert command in RUN_AS.get(page, {}), f"{page}:{block.line}: shows {command!r}, which is not run"


@pytest.mark.parametrize("shown, real, matches", [
    ("| a | holds | 0.38 | 5 |\n| ...", "| a  | holds   | 0.3     | 1 |\n| b | x |", True),
    ("| a | holds | 0.38 |", "| a | fails | 0.38 |", False),
    ("|---|---|\n| x |", "|------|----|\n| x |", True),
    ("(parent run 6b63...)", "(parent run 260ddab0a68c)", True),
    ("ratio 11.2x\n...\nend", "ratio 0.7x\nmore\nlines\nend", True),
    ("ratio 11.2x", "ratio 0.7", False),
    ("in sqlite:////home/you/vq-harness/mlflow.db,", "in sqlite:////tmp/box/mlflow.db,", True),
])
def test_the_placeholder_rules(shown, real, matches):
    assert bool(re.search(shown_pattern(shown, Path("/tmp/box")), normalize(real), flags=re.S)) is matches


def test_commands_are_read_as_a_shell_reads_them():
    page = "docs/teams.md"
    texts = [c.text for c in commands(page)]
    assert "sudo -u postgres createdb -O mlflow mlflow" in texts  # a && b is two commands
    assert any(t.startswith("harness run celebahq256 --executor slurm --tracking-uri") and t.endswith("time=240")
               for t in texts)  # continuations joined
    assert "curl http://127.0.0.1:5000/health" in texts  # the comment cut


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(RUN_AS))
def test_the_page_commands_run_and_show_what_the_page_shows(page, tmp_path):
    run_page(page, tmp_path)

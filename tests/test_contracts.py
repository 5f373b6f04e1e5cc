"""``harness.contracts`` is the whole plugin contract: every name resolves, the door costs nothing to
import, the old documented homes answer with the same objects, and a misspelled hook is an error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import harness.contracts as contracts
from harness.contracts import Callback, Schedule


def test_every_name_of_the_door_resolves():
    missing = [name for name in contracts.__all__ if getattr(contracts, name, None) is None]
    assert not missing
    with pytest.raises(AttributeError, match="no attribute 'Quantiser'"):
        contracts.Quantiser  # noqa: B018


def test_the_type_checking_imports_name_every_door_name_at_its_home():
    """The door's ``if TYPE_CHECKING:`` imports (what type checkers and the source reader of
    harness.lazy follow) say what ``_NAMES`` says: the same names, each from its home module."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(contracts.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    written = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom)
               for alias in node.names}
    homes = {name: contracts._home(home).__name__ for name, home in contracts._NAMES.items()}
    assert written == homes


def test_importing_the_door_imports_neither_torch_nor_the_host():
    probe = ("import json, sys; import harness.contracts; "
             "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('harness.run', "
             "'harness.cell', 'harness.recovery')))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout) == []


def test_the_old_documented_homes_give_the_same_objects():
    from harness.cell.train import TrainState
    from harness.run import executors

    assert TrainState is contracts.TrainState
    for name in ("CellSpec", "CellOutcome", "Executor", "run_cell", "record_lost", "lost_outcome", "saved_note",
                 "ProcessTracker", "deferred", "describe_exit"):
        assert getattr(executors, name) is getattr(contracts, name), name


def test_a_misspelled_hook_fails_when_the_class_is_defined():
    with pytest.raises(TypeError, match=r"on_epoch_ends is not a training hook.*did you mean 'on_epoch_end'"):
        class Late(Schedule):  # noqa: F841 - defining it is the test
            def on_epoch_ends(self, state):
                pass

    with pytest.raises(TypeError, match=r"after_steps is not a training hook.*did you mean 'after_step'"):
        class Logger(Callback):  # noqa: F841
            def after_steps(self, state, x, x_hat, out):
                pass


def test_real_hooks_and_other_methods_are_fine():
    class Warmup(Schedule):
        def on_step(self, state):
            pass

        def on_train_end(self, state):
            pass

        def online(self):  # not hook-shaped: "on" without the underscore
            return True

        on_rate = 0.5  # not a method

    assert Warmup().online()

"""Fixtures the harness's pytest plugin ships to every project that has the harness installed."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def harness_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A :class:`harness.testing.sandbox.Sandbox` in ``tmp_path``, the working folder for the test.

    ``harness_sandbox.run()`` runs the tiny suite into its own ``mlflow.db``; the
    test's environment cannot redirect it (``MLFLOW_TRACKING_URI`` and
    ``HARNESS_DISABLE_PLUGINS`` are unset for the test).
    """
    from harness.testing.sandbox import Sandbox

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("HARNESS_DISABLE_PLUGINS", raising=False)
    return Sandbox(tmp_path / "sandbox")

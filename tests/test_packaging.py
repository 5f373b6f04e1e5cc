"""The wheel carries the host, every first-party plugin, the suites and the entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_plugins_suites_and_entry_points(tmp_path):
    out = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("vq_harness-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "harness/suites/toy2d.toml" in names
    assert "harness/plugins/quantizers/vq.py" in names
    assert "harness/leaderboard/build.py" in names
    assert not any(n.startswith(("plugins/", "suites/", "leaderboard/", "pages/")) for n in names), "generic top-level names"
    assert not any(n.endswith((".html", ".png")) for n in names), "published pages are not package data"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[harness]" in text and "quantizers = harness.plugins.quantizers" in text
    assert "harness = harness.commands.cli:entry" in text


def test_file_paths_equal_import_names():
    import harness.leaderboard
    import harness.plugins.quantizers
    import harness.suites

    assert Path(harness.plugins.quantizers.__file__).parent == ROOT / "harness" / "plugins" / "quantizers"
    assert Path(harness.suites.__file__).parent == ROOT / "harness" / "suites"
    assert Path(harness.leaderboard.__file__).parent == ROOT / "harness" / "leaderboard"

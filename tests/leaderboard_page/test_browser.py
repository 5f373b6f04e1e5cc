"""The HTML page opened in a real browser: no console errors, the expected rows, every plot drawn."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.leaderboard.render import to_html
from tests.leaderboard_page.browser import chromium, require_browser
from tests.leaderboard_page.conftest import MEASURED

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("leaderboard_page")]

#: the screenshot also lands here (repo root; .gitignore ignores it) for a person to look at
KEPT = Path(__file__).resolve().parents[2] / "test-output" / "leaderboard.png"


def test_page_renders_in_headless_chromium(page, tmp_path):
    require_browser()
    path = tmp_path / "leaderboard.html"
    path.write_text(to_html(page), encoding="utf-8")

    with chromium() as browser:
        browser.get(path.as_uri())
        assert browser.title == "lbpage leaderboard"

        rows = browser.execute_script(
            "return [...document.querySelectorAll('#leaderboard tbody tr:not(.group)')].map(tr => "
            "[tr.className, ...[...tr.cells].map(td => td.textContent)])")
        measured = {(r[1], int(r[2])) for r in rows if r[0] == "ok"}
        assert measured == MEASURED
        failed = [r for r in rows if r[0] == "failed"]
        assert {(r[1], int(r[2])) for r in failed} == {("broken", 2), ("broken", 4)}
        # cells: method, K, dim, bits/token, n, the metrics..., status, plugin code
        assert all(cell == "failed" for r in failed for cell in r[6:-2])
        assert {r[4] for r in rows if r[0] == "ok" and r[2] == "2"} == {"1"}  # K = 2: one bit per token
        reported = [r for r in rows if r[0] == "reported"]
        assert [r[1] for r in reported] == ["paper-x"] and "Liu 2026, figure 2" in reported[0][-2]
        assert browser.execute_script("return document.querySelectorAll('#leaderboard td.best').length") > 0

        claims = browser.execute_script(
            "return [...document.querySelectorAll('#claims tbody tr')].map(tr => tr.cells[1].textContent)")
        assert claims == ["holds", "reported"]

        images = browser.execute_script(
            "return [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
        assert len(images) == len(page.figures) >= 6
        assert all(done and width > 0 and height > 0 for _alt, done, width, height in images), images

        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1400, min(int(height) + 40, 8000))
        shot = tmp_path / "leaderboard.png"
        assert browser.save_screenshot(str(shot))
        severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert severe == [], severe

    KEPT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, KEPT)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

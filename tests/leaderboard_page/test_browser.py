"""The HTML page opened in a real browser: no console errors, the expected rows, every plot drawn."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest

from harness.leaderboard.render import to_html
from harness.leaderboard.text import headers, split_columns
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


#: a page as wide as the widest published ones (digits: per-stage metrics of a four-stage
#: quantizer; toy2d: per-cluster metrics), built from the real run by adding those columns
MAIN_EXTRA = ("psnr", "cluster_codes/0", "cluster_codes/1", "cluster_codes/min")
STAGES = tuple(f"{m}/stage{s}" for m in ("dead_codes", "perplexity", "utilization") for s in range(4))
SCREEN = (1920, 1080)


def wide_page(page):
    """``page`` with digits' and toy2d's extra columns (values copied from real ones)."""
    board = copy.deepcopy(page)
    board.stats = None  # recomputed over the new columns
    for column in (*MAIN_EXTRA, *STAGES):
        source = "dead_codes" if column.startswith("dead_codes") else "utilization"
        board.columns.append(column)
        board.higher_is_better[column] = board.higher_is_better[source]
        for row in [*board.rows, *board.reported]:
            if source in row.metrics:
                row.metrics[column] = row.metrics[source]
    return board


def test_every_table_fits_a_1920px_screen(page, tmp_path):
    """No column hides behind a horizontal scrollbar on a 1920-px screen: each table's width is
    at most its container's (headers wrap at / and _; the tables may use the screen's width)."""
    require_browser()
    path = tmp_path / "wide.html"
    board = wide_page(page)
    path.write_text(to_html(board), encoding="utf-8")
    with chromium() as browser:
        browser.set_window_size(*SCREEN)
        browser.get(path.as_uri())
        widths = browser.execute_script(
            "return [...document.querySelectorAll('.scroll')].map(d => {const t = d.querySelector('table');"
            " return [t.id, t.scrollWidth, d.clientWidth, t.rows[0].cells.length]})")
        shot = tmp_path / "wide-1920.png"
        assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    KEPT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, KEPT.with_name("leaderboard-1920.png"))
    tables = {name: (width, room, n) for name, width, room, n in widths}
    main, stages = split_columns(board)
    assert tables["leaderboard"][2] == len(headers(board, main)) > 15  # every column is there
    assert tables["stages"][2] == len(headers(board, stages)) > 15
    too_wide = {name: f"{width} px in {room} px" for name, (width, room, _n) in tables.items() if width > room}
    assert not too_wide, f"hidden behind a scrollbar at {SCREEN[0]} px: {too_wide} (screenshot: {shot})"

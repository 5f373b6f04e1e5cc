"""``harness run`` ends by naming the store and experiment and a leaderboard command that works."""

from __future__ import annotations

import csv
import io
import shlex

from harness.commands.cli import main
from harness.run.summary import leaderboard_command


def _last_line(out: str, prefix: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith(prefix)]
    assert lines, f"no line starting with {prefix!r} in:\n{out}"
    return lines[-1][len(prefix):].strip()


def test_the_printed_leaderboard_command_shows_this_run(tiny_suite, workdir, capsys):
    """A smoke run of a suite file into another store: the hint names all three, and running it
    ranks the smoke cells even though a full-profile run of the same suite is in the store too."""
    store = workdir / "elsewhere"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    common = [str(tiny_suite), "--seeds", "1", "--no-progress", "--tracking-uri", uri]
    assert main(["run", *common, "-q", "vq"]) == 0  # full profile, vq only
    capsys.readouterr()
    assert main(["run", *common, "--profile", "smoke"]) == 0
    out = capsys.readouterr().out

    results = _last_line(out, "results:")
    assert uri in results and "experiment 'tiny'" in results and "profile 'smoke'" in results
    command = shlex.split(_last_line(out, "in the terminal:"))
    assert command[:3] == ["harness", "leaderboard", str(tiny_suite)]
    assert command[command.index("--profile") + 1] == "smoke"
    assert command[command.index("--tracking-uri") + 1] == uri

    assert main([*command[1:], "--format", "csv"]) == 0
    rows = [r for r in csv.DictReader(io.StringIO(capsys.readouterr().out)) if r.get("status") == "ok"]
    assert sorted(r["method"] for r in rows) == ["drifting", "vq"]  # the smoke cells, both methods

    page = shlex.split(_last_line(out, "leaderboard page:"))
    assert main(page[1:]) == 0
    html = (workdir / page[page.index("--output") + 1]).read_text()
    assert "drifting" in html and "<html" in html.lower()


def test_the_default_store_and_profile_need_no_options(workdir, monkeypatch):
    assert leaderboard_command("toy2d", "full", None) == "harness leaderboard toy2d"
    assert leaderboard_command("toy2d", "full", "sqlite:///mlflow.db") == "harness leaderboard toy2d"
    assert leaderboard_command("toy2d", "smoke", None) == "harness leaderboard toy2d --profile smoke"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert leaderboard_command("toy2d", "full", None) == (
        "harness leaderboard toy2d --tracking-uri http://127.0.0.1:5999")


def test_a_path_with_spaces_is_quoted(workdir):
    command = leaderboard_command("my suites/a.toml", "all", None, html=True)
    assert shlex.split(command) == ["harness", "leaderboard", "my suites/a.toml", "--profile", "all",
                                    "--format", "html", "--output", "a-all.html"]


def test_a_claim_known_not_to_reproduce_prints_its_reason():
    """The console says why a finding is expected not to reproduce, not only that it did not."""
    from types import SimpleNamespace

    from harness.run.summary import claim_table
    from harness.suite import Claim
    from harness.suite.claims import check_claim

    claim = Claim(id="k2-collapse", text="both clusters on one code", where={"method": "vq"},
                  metric="eval/separated", op="<=", value=0.0, expect="not reproduced",
                  reason="symmetric clusters split by the bisector")
    cells = [{"key": {"method": "vq", "seed": s}, "metrics": {"eval/separated": 1.0}, "status": "FINISHED"}
             for s in range(2)]
    result = check_claim(claim, cells)
    assert result.status == "not reproduced"
    text = claim_table(SimpleNamespace(claims=[result]))
    assert "k2-collapse: expected not to reproduce: symmetric clusters split by the bisector" in text

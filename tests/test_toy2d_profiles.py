"""toy2d's profiles: the default run is Liu 2026's comparison; `all` leaves no method of the file out."""

from __future__ import annotations

from harness.suite import load_suite
from harness.suite.tomlsource import load_toml


def test_the_default_run_is_paper_000s_comparison_at_full_steps():
    full, smoke = load_suite("toy2d"), load_suite("toy2d", "smoke")
    assert full.profile == "full"
    assert {c.method for c in full.cells()} == {"vq", "drifting"} == {c.method for c in smoke.cells()}
    assert full.data["train"]["steps"] == 3000 > smoke.data["train"]["steps"]
    assert {c.id for c in full.claims} == {c.id for c in smoke.claims} and full.claims
    # single-threaded cells, two at a time: the minute on a 2-core laptop
    assert full.data["train"]["threads"] == 1
    assert full.data["executor"] == {"name": "processes", "options": {"jobs": 2}}


def test_the_all_profile_runs_every_method_of_the_file_with_the_claims():
    raw, _ = load_toml(load_suite("toy2d").path)
    every = load_suite("toy2d", "all")
    assert {c.method for c in every.cells()} == set(raw["methods"]), (
        "a [methods.*] table of harness/suites/toy2d.toml is missing from [profiles.all] matrix.method")
    assert every.data["train"]["steps"] == load_suite("toy2d").data["train"]["steps"]
    assert {c.id for c in every.claims} == {c.id for c in load_suite("toy2d").claims}

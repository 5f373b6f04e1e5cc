"""Hostile suite files: names that reach outside the working folder, values that check nothing.

Each case goes through the real command line (``harness run``): exit 2, the file
and line in the message, no traceback, and nothing recorded (no ``mlflow.db``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.commands.cli import main
from harness.errors import SuiteError
from harness.suite import load_suite
from tests.conftest import TINY_SUITE

LR = "lr = 1e-2"


def line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), start=1) if needle in ln)


CASES = [  # (id, replace this, with this, the line to name, message)
    ("dotdot-suite-name", 'name = "tiny"', 'name = "../../../x"', 'name = "../../../x"', "suite.name '../../../x' is not a plain name"),
    ("absolute-suite-name", 'name = "tiny"', 'name = "/tmp/x"', 'name = "/tmp/x"', "suite.name '/tmp/x' is not a plain name"),
    ("empty-suite-name", 'name = "tiny"', 'name = ""', 'name = ""', "suite.name must be a non-empty name"),
    ("dotdot-method", "[methods.vq]", '[methods."../../x"]', '[methods."../../x"]', "method label '../../x' is not a plain name"),
    ("claim-id-not-a-tag", 'id = "drifting-uses-codes"', 'id = "uses codes?"', 'id = "uses codes?"', "claim id 'uses codes?' is not a plain name"),
    ("claim-without-text", 'text = "drifting VQ uses some of its codes"', "", "[[claims]]", "needs 'text'"),
    ("claim-where-typo", 'where = { method = "drifting" }', 'where = { method = "drfting" }', 'where = { method = "drfting" }',
     "matches no cell of this suite (profile 'full') (method 'drfting' is not in the matrix; did you mean 'drifting'?)"),
    ("claim-where-field-typo", 'where = { method = "drifting" }', 'where = { methd = "drifting" }', 'where = { methd',
     "claims.where key 'methd' is not a cell field; did you mean 'method'?"),
    ("claim-metric-typo", 'metric = "utilization"\naggregate', 'metric = "utilisation"\naggregate', 'metric = "utilisation"',
     "metric 'utilisation' is not computed by any [eval] metric; did you mean 'utilization'?"),
    ("claim-expect-without-reason", 'value = 0.0', 'value = 0.0\nexpect = "not reproduced"', 'expect =', "say why in 'reason'"),
    ("claim-expect-unknown", 'value = 0.0', 'value = 0.0\nexpect = "maybe"', 'expect =', "claims.expect must be one of"),
    ("nan-lr", LR, "lr = nan", "lr = nan", "train.lr must be a finite number, got nan"),
    ("inf-param", '[methods.vq]\nquantizer = "vq"', '[methods.vq]\nquantizer = "vq"\nparams = { beta = inf }', "params = { beta = inf }",
     "methods.vq.params.beta must be a finite number, got inf"),
    ("grad-clip-zero", LR, f"{LR}\ngrad_clip = 0", "grad_clip = 0", "train.grad_clip must be positive"),
    ("grad-clip-negative", LR, f"{LR}\ngrad_clip = -1.0", "grad_clip = -1.0", "train.grad_clip must be positive"),
    ("precision-fp8", LR, f'{LR}\nprecision = "fp16"', 'precision = "fp16"', "train.precision must be one of auto, fp32, bf16"),
    ("betas-one", LR, f"{LR}\nbetas = [0.9]", "betas = [0.9]", "train.betas must be two numbers in [0, 1)"),
    ("betas-above-one", LR, f"{LR}\nbetas = [0.9, 1.5]", "betas = [0.9, 1.5]", "train.betas must be two numbers in [0, 1)"),
    ("betas-strings", LR, f'{LR}\nbetas = ["a", "b"]', 'betas = ["a", "b"]', "train.betas must be two numbers in [0, 1)"),
    ("negative-weight-decay", LR, f"{LR}\nweight_decay = -0.1", "weight_decay = -0.1", "train.weight_decay must be zero or positive"),
    ("deep-nesting", 'quantizer = "vq"', 'quantizer = "vq"\nparams = { beta = ' + "[" * 40 + "]" * 40 + " }", "params = { beta",
     "values nested more than 16 levels deep"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_suite_is_a_usage_error_naming_the_line(case, suite_file, workdir, capsys):
    _id, old, new, needle, message = case
    assert TINY_SUITE.count(old) >= 1
    text = TINY_SUITE.replace(old, new, 1)
    path = suite_file(text)
    rc = main(["run", str(path), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err
    line = line_of(text, needle)
    assert f"{path}:{line}: " in err and message in err, err
    assert "Traceback" not in err
    assert not (workdir / "mlflow.db").exists()  # nothing recorded, not even a store


def test_recursion_deep_toml_is_a_usage_error(suite_file, workdir, capsys):
    path = suite_file(TINY_SUITE + "\nx = " + "[" * 5000 + "]" * 5000 + "\n")
    rc = main(["run", str(path)])
    err = capsys.readouterr().err
    assert rc == 2 and "nested too deeply" in err and "Traceback" not in err


def test_non_utf8_file_names_the_line(workdir, capsys):
    path = workdir / "latin1.toml"
    path.write_bytes(TINY_SUITE.replace('description', 'd').encode().replace(b'name = "tiny"', b'name = "t\xe9"'))
    rc = main(["run", str(path)])
    err = capsys.readouterr().err
    assert rc == 2
    line = line_of(TINY_SUITE, 'name = "tiny"')
    assert f"{path}:{line}: not UTF-8 text (byte 0xe9" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("seeds, message", [
    ("1000000000000", "matrix.seeds = 1000000000000 is more than 1000 seeds"),
    ("0", "matrix.seeds must be positive, got 0"),
    ("-3", "matrix.seeds must be positive, got -3"),
])
def test_absurd_seeds_are_usage_errors(tiny_suite, workdir, seeds, message, capsys):
    rc = main(["run", str(tiny_suite), "--seeds", seeds])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (workdir / "mlflow.db").exists()


def test_a_huge_matrix_is_refused_before_expanding(tiny_suite, capsys):
    rc = main(["run", str(tiny_suite), "--seeds", "1000", "--set", f"matrix.codebook_size={list(range(2, 200))}"])
    err = capsys.readouterr().err
    assert rc == 2 and "more than 100000" in err


def test_nan_from_set_is_rejected(tiny_suite, capsys):
    rc = main(["run", str(tiny_suite), "--set", "train.lr=nan"])
    assert rc == 2 and "train.lr must be a finite number, got nan" in capsys.readouterr().err


def test_profile_may_not_smuggle_a_bad_name(suite_file):
    path = suite_file(TINY_SUITE.replace("[profiles.smoke]", '[profiles.smoke]\nsuite.name = "../up"'))
    load_suite(str(path))  # the full profile is fine
    with pytest.raises(SuiteError, match="suite.name '../up' is not a plain name"):
        load_suite(str(path), "smoke")


def test_claim_for_another_profile_is_not_matched_against_this_one(suite_file):
    """A claim restricted to ``full`` may name methods the smoke profile leaves out."""
    text = TINY_SUITE.replace("[profiles.smoke]", '[profiles.smoke]\nmatrix.method = ["vq"]').replace(
        "value = 0.0", 'value = 0.0\nprofiles = ["full"]')
    assert load_suite(str(suite_file(text)), "smoke").claims == []


def test_accepted_claim_ids_are_valid_mlflow_keys():
    from mlflow.utils.validation import _validate_metric_name, _validate_tag_name

    from harness.suite.values import check_name

    for name in ("a", "nsvq-fewer-dead-codes-expansion", "x.y_z-1", "A" * 100):
        assert check_name("claim id", name) is None
        _validate_tag_name(f"harness.claim.{name}")
        _validate_metric_name(f"claim/{name}")
    for name in ("", "../x", "/abs", "a b", "a/b", "A" * 101, ".hidden", "a..b"):
        assert check_name("claim id", name) is not None, name


def test_builtin_suites_still_load(capsys):
    from harness.suite import builtin_suites

    for name in builtin_suites():
        for profile in ("full", "smoke"):
            assert load_suite(name, profile).cells()


def test_paths_use_only_validated_names(tmp_path: Path):
    """The checkpoint folder is ``<root>/<suite name>``: a valid name stays inside the root."""
    from harness.recovery.checkpoint import checkpoint_path

    path = checkpoint_path(tmp_path, "toy2d-drift", "abc")
    assert path.resolve().is_relative_to(tmp_path.resolve())

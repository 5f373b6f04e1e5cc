"""Suite files: validation errors point at file and line; profiles, --set and matrix expansion."""

from __future__ import annotations

import pytest

from harness.errors import SuiteError, UnknownNameError
from harness.suite import builtin_suites, load_suite
from tests.conftest import TINY_SUITE


def test_builtin_toy2d_loads_in_both_profiles():
    full, smoke = load_suite("toy2d"), load_suite("toy2d", "smoke")
    assert full.data["matrix"]["seeds"] >= 3 and load_suite("toy2d", "all").data["matrix"]["seeds"] >= 5
    assert smoke.data["train"]["steps"] < full.data["train"]["steps"]
    assert {c.codebook_size for c in full.cells()} == {2, 10}
    assert "toy2d" in builtin_suites()


def test_matrix_expands_method_k_dim_seed(tiny_suite):
    suite = load_suite(str(tiny_suite))
    cells = suite.cells()
    assert [c.run_name for c in cells] == ["vq-K4-d2-s0", "vq-K4-d2-s1", "drifting-K4-d2-s0", "drifting-K4-d2-s1"]
    assert cells[0].config["quantizer"] == {"name": "vq", "method": "vq", "codebook_size": 4, "dim": 2, "params": {}}
    assert cells[0].config_hash != cells[1].config_hash


def test_profile_overrides_and_set(tiny_suite):
    suite = load_suite(str(tiny_suite), "smoke", overrides=["train.lr=0.5", "matrix.codebook_size=[2, 3]"], seeds=1)
    assert suite.data["train"]["steps"] == 10
    assert suite.data["train"]["lr"] == 0.5
    assert [c.codebook_size for c in suite.cells()] == [2, 3, 2, 3]


def test_unknown_key_names_file_line_and_suggestion(suite_file):
    path = suite_file(TINY_SUITE.replace("lr = 1e-2", "lrr = 1e-2"))
    with pytest.raises(SuiteError) as info:
        load_suite(str(path))
    line = TINY_SUITE.splitlines().index("lr = 1e-2") + 1
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert "'train.lrr'" in str(info.value) and "did you mean 'lr'" in str(info.value)
    assert info.value.exit_code == 2


def test_wrong_type_names_line(suite_file):
    path = suite_file(TINY_SUITE.replace("steps = 30", 'steps = "thirty"'))
    with pytest.raises(SuiteError) as info:
        load_suite(str(path))
    line = TINY_SUITE.splitlines().index("steps = 30") + 1
    assert f":{line}: " in str(info.value) and "train.steps must be int" in str(info.value)


def test_wrong_type_in_profile_names_its_line(suite_file):
    path = suite_file(TINY_SUITE.replace("train.steps = 10", "train.steps = 1.5"))
    with pytest.raises(SuiteError) as info:
        load_suite(str(path), "smoke")
    line = TINY_SUITE.splitlines().index("train.steps = 10") + 1
    assert f":{line}: " in str(info.value)


def test_syntax_error_names_line(suite_file):
    path = suite_file(TINY_SUITE.replace("[model]", "[model"))
    with pytest.raises(SuiteError) as info:
        load_suite(str(path))
    assert f":{TINY_SUITE.splitlines().index('[model]') + 1}: invalid TOML" in str(info.value)


def test_non_positive_sizes_rejected(suite_file):
    path = suite_file(TINY_SUITE.replace("codebook_size = [4]", "codebook_size = [0]"))
    with pytest.raises(SuiteError, match="positive integers"):
        load_suite(str(path))
    path = suite_file(TINY_SUITE.replace("batch_size = 64", "batch_size = -1"))
    with pytest.raises(SuiteError, match="must be positive"):
        load_suite(str(path))


def test_unknown_suite_and_profile_suggest():
    with pytest.raises(UnknownNameError, match="did you mean 'toy2d'"):
        load_suite("toy2")
    with pytest.raises(UnknownNameError, match="did you mean 'smoke'"):
        load_suite("toy2d", "smoek")


def test_unknown_set_key_suggests(tiny_suite):
    with pytest.raises(UnknownNameError, match="train.steps"):
        load_suite(str(tiny_suite), overrides=["train.stpes=3"])


def test_claim_validation(suite_file):
    path = suite_file(TINY_SUITE.replace('op = ">"', 'op = "=>"'))
    with pytest.raises(SuiteError, match="claims.op must be one of"):
        load_suite(str(path))


METHOD_LOSS = TINY_SUITE.replace('[methods.drifting]\nquantizer = "drifting"\n',
                                 '[methods.drifting]\nquantizer = "drifting"\nloss = ["gaussian-mle"]\n')


def test_a_methods_loss_replaces_the_suites_for_its_cells_only(suite_file):
    from harness.cell.build import complete_config
    from harness.cell.losses import build_losses
    from harness.host import get_host

    suite = load_suite(str(suite_file(METHOD_LOSS)))
    losses = {c.method: complete_config(get_host(), c)["train"]["loss"] for c in suite.cells()}
    assert [spec["name"] for spec in losses["drifting"]] == ["gaussian-mle"]
    assert [spec["name"] for spec in losses["vq"]] == ["mse"]
    built = build_losses(get_host(), losses["drifting"])
    assert [type(loss).__name__ for loss in built.losses] == ["GaussianMLE"]


@pytest.mark.parametrize("loss, needle", [
    ('["gaussian-ml"]', "did you mean 'gaussian-mle'"),
    ('[{ name = "mse", wieght = 2.0 }]', "did you mean 'weight'"),
    ('"gaussian-mle"', "methods.drifting.loss must be list"),
])
def test_a_bad_method_loss_names_its_line(loss, needle, suite_file, workdir, capsys):
    from harness.commands.cli import main

    text = METHOD_LOSS.replace('loss = ["gaussian-mle"]', f"loss = {loss}")
    assert main(["run", str(suite_file(text)), "--executor", "local"]) == 2
    err = capsys.readouterr().err
    line = text.splitlines().index(f"loss = {loss}") + 1
    assert needle in err and f".toml:{line}" in err, err
    assert not (workdir / "mlflow.db").exists()


def test_a_method_loss_beside_the_string_forms_keys_is_refused(suite_file, workdir, capsys):
    from harness.commands.cli import main

    text = METHOD_LOSS.replace("lr = 1e-2", 'lr = 1e-2\nloss = "mse+lpips"\nlpips_weight = 0.5')
    assert main(["run", str(suite_file(text)), "--executor", "local"]) == 2
    err = capsys.readouterr().err
    assert "train.lpips_weight" in err and "write train.loss as a list" in err, err
    line = text.splitlines().index('loss = ["gaussian-mle"]') + 1
    assert f".toml:{line}" in err, err

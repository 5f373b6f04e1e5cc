"""Property-based tests (hypothesis) for suite parsing and matrix expansion."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import SuiteError
from harness.suite import load_suite

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

labels = st.lists(st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True), min_size=1, max_size=4, unique=True)
sizes = st.lists(st.integers(1, 70000), min_size=1, max_size=4, unique=True)
dims = st.lists(st.integers(1, 512), min_size=1, max_size=3, unique=True)


def suite_text(methods: list[str], ks: list[int], ds: list[int], seeds: int, train: str = "steps = 5") -> str:
    method_tables = "\n".join(f'[methods.{m}]\nquantizer = "vq"\n' for m in methods)
    return f"""[suite]
name = "prop"

[dataset]
name = "two-clusters"

[model]
name = "linear2d"

[train]
{train}
batch_size = 8

{method_tables}
[matrix]
codebook_size = {json.dumps(ks)}
dim = {json.dumps(ds)}
seeds = {seeds}
"""


@contextmanager
def written(text: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="suite-prop-") as folder:
        path = Path(folder) / "prop.toml"
        path.write_text(text)
        yield path


@SETTINGS
@given(methods=labels, ks=sizes, ds=dims, seeds=st.integers(1, 4))
def test_valid_suites_expand_to_the_full_matrix(methods, ks, ds, seeds):
    with written(suite_text(methods, ks, ds, seeds)) as path:
        suite = load_suite(str(path))
        again = load_suite(str(path)).cells()
    cells = suite.cells()
    assert len(cells) == len(methods) * len(ks) * len(ds) * seeds
    assert len({c.run_name for c in cells}) == len(cells)
    assert len({c.config_hash for c in cells}) == len(cells)
    assert {(c.method, c.codebook_size, c.dim, c.seed) for c in cells} == {
        (m, k, d, s) for m in methods for k in ks for d in ds for s in range(seeds)}
    # the order is stable: loading again gives the same cells in the same order
    assert [c.config_hash for c in again] == [c.config_hash for c in cells]


INT_KEYS = ("steps", "batch_size", "log_every")
bad_values = st.one_of(
    st.integers(max_value=0).map(str),  # zero or negative
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f)).map(repr),
    st.text(alphabet="abcxyz ", min_size=0, max_size=6).map(json.dumps),  # a string
    st.sampled_from(["true", "false", "[1, 2]", "{ a = 1 }"]),
)


@SETTINGS
@given(key=st.sampled_from(INT_KEYS), value=bad_values)
def test_invalid_train_values_name_the_file_and_line(key, value):
    train = "\n".join(f"{k} = {value if k == key else 5}" for k in ("steps", "log_every"))
    text = suite_text(["vq"], [4], [2], 1, train=train)
    if key == "batch_size":
        text = text.replace("batch_size = 8", f"batch_size = {value}")
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith(f"{key} = "))
    with written(text) as path, pytest.raises(SuiteError) as info:
        load_suite(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert re.search(rf"train\.{key} must be (int|positive)", message), message


@SETTINGS
@given(ks=st.lists(st.one_of(st.integers(max_value=0), st.just('"4"'), st.just("1.5")), min_size=1, max_size=3))
def test_invalid_codebook_sizes_name_the_line(ks):
    text = suite_text(["vq"], [4], [2], 1).replace("codebook_size = [4]", f"codebook_size = [{', '.join(map(str, ks))}]")
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("codebook_size = "))
    with written(text) as path, pytest.raises(SuiteError) as info:
        load_suite(str(path))
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert "matrix.codebook_size must be a non-empty list of positive integers" in str(info.value)

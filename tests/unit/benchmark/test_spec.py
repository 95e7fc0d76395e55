"""Benchmark specs: errors that name the problem, data roots, per-set configs."""

from __future__ import annotations

import pytest

from diffpath.benchmark.spec import MethodSpec, load_spec
from diffpath.errors import ConfigError
from tests.unit.benchmark import small_spec


def test_spec_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(ValueError, match="pair"):
        small_spec(tmp_path, pairs=[("a", "nowhere")])
    with pytest.raises(ValueError, match="missing"):
        small_spec(tmp_path, baseline="missing")
    with pytest.raises(ValueError, match="bootstrap"):  # no intervals: refused up front
        small_spec(tmp_path, bootstrap=0)
    (tmp_path / "spec.yaml").write_text("datasets: {a: {source: x.parquet}}\nmethods: []\n")
    with pytest.raises(ConfigError, match="methods"):
        load_spec(str(tmp_path / "spec.yaml"))


def test_relative_data_root_is_relative_to_the_spec(tmp_path) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "s.yaml").write_text(
        "data_root: ../data\ndatasets: {a: {source: x.parquet}, b: {source: y.parquet}}\n"
        "methods: {diffpath6d: {}}\n"
    )
    spec = load_spec(str(tmp_path / "specs" / "s.yaml"))
    assert spec.uri("x.parquet") == f"{tmp_path}/data/x.parquet"
    assert load_spec(str(tmp_path / "specs" / "s.yaml"), "/elsewhere").uri("x") == "/elsewhere/x"


def test_method_spec_builds_each_sets_config(tmp_path) -> None:
    spec = small_spec(tmp_path, model="/weights")
    spec = spec.model_copy(
        update={
            "datasets": {
                **spec.datasets,
                "b": spec.datasets["b"].model_copy(update={"crop": "celeba-face"}),
            }
        }
    )
    config = spec.feature_config(MethodSpec(config={"method": "diffpathv2+6d", "draws": 3}), "b")
    assert (spec.model, config.crop, config.unet_evals) == ("/weights", "celeba-face", 3 * 5 + 5)
    with pytest.raises(ConfigError, match="timesteps"):
        spec.feature_config(MethodSpec(config={"timesteps": 1}), "a")

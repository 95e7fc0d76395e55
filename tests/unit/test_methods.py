"""The method registry: every method computes the columns it names, combinations are their
parts side by side, and an unknown method is refused everywhere, never replaced."""

from __future__ import annotations

import pytest

from diffpath.config import FeatureConfig
from diffpath.errors import ConfigError
from diffpath.features.extract import extract_features, feature_names
from diffpath.methods import METHODS, get_method
from diffpath.scoring.density import make_density
from tests.unit.features import config, images, keys


@pytest.mark.parametrize("name", [m for m in METHODS if not METHODS[m].parts])
def test_each_method_computes_the_columns_it_names(tiny_model, name: str) -> None:
    x = images(3)
    values = extract_features(tiny_model, x, keys(3), config(method=name, timesteps=2))
    assert values.shape == (3, len(get_method(name).feature_names))
    assert FeatureConfig(method=name).unet_evals == get_method(name).evals(
        FeatureConfig(method=name)
    )


def test_a_combination_is_built_from_its_parts() -> None:
    combined = METHODS["diffpathv2+6d"]
    assert combined.feature_names == sum((METHODS[p].feature_names for p in combined.parts), ())
    assert set(combined.reads) == {r for p in combined.parts for r in METHODS[p].reads}
    with pytest.raises(ConfigError, match="compute its parts"):
        combined.function()


@pytest.mark.parametrize(
    "ask",
    [
        lambda: FeatureConfig.parse(method="diffpath2"),
        lambda: feature_names("diffpath2"),
        lambda: make_density("auto", "diffpath2"),
        lambda: get_method("diffpath2"),
    ],
)
def test_an_unknown_method_is_refused_in_one_line(ask) -> None:
    with pytest.raises(ConfigError, match="diffpath2") as refused:
        ask()
    assert len(str(refused.value).splitlines()) == 1
    assert "diffpathv2+6d" in str(refused.value)  # it names the choices


def test_auto_density_is_the_methods_own() -> None:
    for name, method in METHODS.items():
        density = make_density("auto", name)
        assert density.kind == method.density[0]
        assert density.get_params().items() >= dict(method.density[1]).items()

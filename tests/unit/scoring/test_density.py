import numpy as np
import pytest

from diffpath.errors import ConfigError, ConfigMismatchError, NotFittedError
from diffpath.scoring.density import (
    GaussianDensity,
    GMMDensity,
    KDEDensity,
    load_density,
    make_density,
    save_density,
)

DENSITIES = [
    GaussianDensity(),
    GMMDensity(n_components=(1, 2, 3), selection="bic"),
    GMMDensity(n_components=(1, 2), covariance_types=("full", "spherical"), selection="cv"),
    KDEDensity(bandwidth=0.5),
]


@pytest.fixture
def toy() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two 2-D clusters of inliers (reference + test) and 5 far outliers."""
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [6.0, 3.0]])
    reference = np.concatenate([rng.normal(c, 1.0, size=(200, 2)) for c in centers])
    inliers = np.concatenate([rng.normal(c, 1.0, size=(20, 2)) for c in centers])
    outliers = np.array([[15.0, -10.0], [-12.0, 12.0], [3.0, 12.0], [20.0, 20.0], [-9.0, -9.0]])
    return reference, inliers, outliers


@pytest.mark.parametrize("density", DENSITIES, ids=lambda d: f"{d.kind}")
def test_known_outliers_rank_first(density, toy) -> None:
    reference, inliers, outliers = toy
    density.fit(reference)
    scores = density.anomaly_score(np.concatenate([inliers, outliers]))
    top = set(np.argsort(-scores)[: len(outliers)])
    assert top == set(range(len(inliers), len(inliers) + len(outliers)))


@pytest.mark.parametrize("density", DENSITIES, ids=lambda d: f"{d.kind}")
def test_save_load_round_trip_gives_identical_scores(density, toy, tmp_path) -> None:
    reference, inliers, outliers = toy
    density.fit(reference)
    uri = save_density(density, str(tmp_path / "density.json"), config_hash="abc")
    loaded = load_density(uri, config_hash="abc")
    X = np.concatenate([inliers, outliers])
    np.testing.assert_array_equal(loaded.score_samples(X), density.score_samples(X))
    assert loaded.config_hash_ == "abc"


def test_gaussian_log_density_matches_scipy(toy) -> None:
    from scipy.stats import multivariate_normal

    reference, inliers, _ = toy
    density = GaussianDensity().fit(reference)
    covariance = np.linalg.inv(density.precision_) * np.outer(density.scale_, density.scale_)
    mean = density.mean_ + density.location_ * density.scale_
    expected = multivariate_normal(mean, covariance).logpdf(inliers)
    np.testing.assert_allclose(density.score_samples(inliers), expected, rtol=1e-9)


def test_loading_with_another_config_hash_raises(toy, tmp_path) -> None:
    uri = save_density(GaussianDensity().fit(toy[0]), str(tmp_path / "d.json"), "abc")
    with pytest.raises(ConfigMismatchError, match="abc"):
        load_density(uri, config_hash="xyz")


def test_unfitted_and_bad_input_raise(toy) -> None:
    with pytest.raises(NotFittedError):
        GaussianDensity().score_samples(toy[1])
    with pytest.raises(ConfigError):
        GaussianDensity().fit(np.array([[np.nan, 1.0], [1.0, 2.0]]))
    with pytest.raises(ConfigError):
        GaussianDensity().fit(toy[0]).score_samples(np.ones((3, 5)))
    with pytest.raises(ConfigError):
        make_density("isolation-forest")


def test_gmm_selection_is_seeded(toy) -> None:
    a = GMMDensity(seed=3).fit(toy[0]).score_samples(toy[1])
    b = GMMDensity(seed=3).fit(toy[0]).score_samples(toy[1])
    np.testing.assert_array_equal(a, b)


def test_densities_are_scikit_learn_estimators(toy) -> None:
    from sklearn.base import clone

    gmm = GMMDensity(n_components=(1, 2), seed=4)
    assert gmm.get_params() == {
        "n_components": (1, 2),
        "covariance_types": ("full", "diag"),
        "selection": "bic",
        "cv_folds": 5,
        "seed": 4,
    }
    assert clone(gmm.set_params(seed=5)).seed == 5
    for density in (GaussianDensity(), GMMDensity(), KDEDensity()):
        assert not [name for name in vars(density) if name.endswith("_")]  # nothing fitted yet
    fitted = clone(gmm).fit(toy[0])
    assert hasattr(fitted, "mixture_") and not hasattr(clone(fitted), "mixture_")

"""The benchmark core: splits by name, bootstrap intervals, the matrix, regressions, audits."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from diffpath.benchmark.audit import audit_accuracy
from diffpath.benchmark.matrix import bootstrap_aurocs, evaluate_matrix, resample
from diffpath.benchmark.regressions import compare
from diffpath.benchmark.spec import BenchmarkSpec, MethodSpec, Sizes, load_spec
from diffpath.benchmark.splits import split_refs
from diffpath.errors import ConfigError
from diffpath.scoring.contamination import mixture_estimate, storey_estimate
from diffpath.scoring.metrics import auroc


def _parquet(path, names: list[str], contents: list[str] | None = None) -> str:
    """Images named `names` whose bytes are those of `contents` (default: the names)."""
    images = [f"pixels of {c}".encode() for c in contents or names]
    pq.write_table(pa.table({"path": names, "image": images}), path)
    return str(path)


def _spec(tmp_path, **extra) -> BenchmarkSpec:
    names = [f"img{i:04d}.png" for i in range(300)]
    _parquet(tmp_path / "one.parquet", names)
    _parquet(tmp_path / "train.parquet", names[:200])
    _parquet(tmp_path / "test.parquet", names[200:])
    return BenchmarkSpec(
        data_root=str(tmp_path),
        datasets={
            "a": {"source": "one.parquet"},
            "b": {"train": "train.parquet", "test": "test.parquet"},
        },
        methods={"diffpath6d": {"config": {"method": "diffpath6d"}}, "v2": {}},
        **extra,
    )


def test_split_is_disjoint_capped_and_follows_content_not_names(tmp_path) -> None:
    spec = _spec(tmp_path)
    names = [f"img{i:04d}.png" for i in range(300)]
    roles = split_refs(spec, "a", Sizes(fit=1000, validation=1000, test=1000))
    paths = {role: {r.path for r in refs} for role, refs in roles.items()}
    assert sum(map(len, paths.values())) == 300 and len(set.union(*paths.values())) == 300
    assert abs(len(paths["test"]) - 90) < 30 and abs(len(paths["validation"]) - 60) < 25
    capped = split_refs(spec, "a", Sizes(fit=50, validation=20, test=10))
    assert [len(capped[r]) for r in ("fit", "validation", "test")] == [50, 20, 10]
    # a file holding only the chosen images gives the same choice (how GPU runs carry data)
    chosen = [r.path for role in ("fit", "validation", "test") for r in capped[role]]
    _parquet(tmp_path / "one.parquet", chosen[::-1])
    again = split_refs(spec, "a", Sizes(fit=50, validation=20, test=10))
    assert {r: {x.path for x in v} for r, v in again.items()} == {
        r: {x.path for x in v} for r, v in capped.items()
    }
    # renamed, the same bytes land in the same roles; identical bytes never straddle two
    _parquet(tmp_path / "one.parquet", [f"new/{n}" for n in names], names)
    renamed = split_refs(spec, "a", Sizes(fit=1000, validation=1000, test=1000))
    assert {r: {x.path[4:] for x in v} for r, v in renamed.items()} == paths
    _parquet(tmp_path / "one.parquet", names, [names[i % 150] for i in range(300)])
    twins = split_refs(spec, "a", Sizes(fit=1000, validation=1000, test=1000))
    role_of = {r.path: role for role, refs in twins.items() for r in refs}
    assert all(role_of[names[i]] == role_of[names[i + 150]] for i in range(150))
    train_test = split_refs(spec, "b", Sizes())
    assert {r.path for r in train_test["test"]} == {f"img{i:04d}.png" for i in range(200, 300)}
    assert not {r.path for r in train_test["fit"]} & {r.path for r in train_test["validation"]}


def test_spec_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(ValueError, match="pair"):
        _spec(tmp_path, pairs=[("a", "nowhere")])
    with pytest.raises(ValueError, match="missing"):
        _spec(tmp_path, baseline="missing")
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


def test_bootstrap_centres_on_the_auroc_and_pairs_methods() -> None:
    rng = np.random.default_rng(0)
    id_s, ood_s = rng.normal(0, 1, 300), rng.normal(1, 1, 200)
    id_index, ood_index = resample(3, "test", "a", 300, 2000), resample(3, "test", "b", 200, 2000)
    boot = bootstrap_aurocs(id_s, ood_s, id_index, ood_index)
    assert abs(boot.mean() - auroc(id_s, ood_s)) < 0.005
    low, high = np.quantile(boot, [0.025, 0.975])
    assert 0.02 < high - low < 0.12  # ~ 4 standard errors of an AUROC from 500 scores
    # one set's images are resampled once, whichever pair or method scores them
    np.testing.assert_array_equal(id_index, resample(3, "test", "a", 300, 2000))
    np.testing.assert_array_equal(boot, bootstrap_aurocs(id_s + 5, ood_s + 5, id_index, ood_index))
    # the parts of a seed are kept apart: ("1", "2") is not ("12",)
    assert not np.array_equal(resample(1, "test", "ab", 50, 5), resample(1, "testa", "b", 50, 5))


def _features(rng, shift: float, n: int = 120, d: int = 2) -> tuple[pa.Table, np.ndarray]:
    rows = pa.table({k: [str(i) for i in range(n)] for k in ("uri", "path", "sha256")})
    rows = rows.append_column("row", pa.array(range(n), pa.int64()))
    return rows, rng.normal(shift, 1.0, (n, d))


def test_matrix_measures_each_pair_and_chooses_on_validation(tmp_path) -> None:
    spec = _spec(tmp_path, bootstrap=200)
    rng = np.random.default_rng(1)
    good = {
        (s, r): _features(rng, 0 if s == "a" else 3)
        for s in "ab"
        for r in ("fit", "validation", "test")
    }
    blind = {(s, r): _features(rng, 0) for s in "ab" for r in ("fit", "validation", "test")}
    features = {(s, r, "v2"): v for (s, r), v in good.items()}
    features |= {(s, r, "diffpath6d"): v for (s, r), v in blind.items()}
    costs = {m: {"unet_evals": 10, "seconds": 1.0} for m in spec.methods}
    matrix = evaluate_matrix(spec, spec.methods, features, costs)
    assert len(matrix.rows) == 2 * 2 * 2  # splits × pairs × methods
    by = {(r["split"], r["in_dist"], r["method"]): r["auroc"] for r in matrix.rows}
    assert by["test", "a", "v2"] > 0.95 and abs(by["test", "a", "diffpath6d"] - 0.5) < 0.15
    assert matrix.chosen == "v2"
    v2 = next(m for m in matrix.methods if m["method"] == "v2")
    assert v2["wins_vs_baseline"] == 2 and v2["diff_interval"][0] > 0.2
    assert matrix.scores.num_rows == 2 * 2 * 2 * 2 * 120  # methods × in-dists × splits × sets


def test_score_rows_come_in_pair_order_whatever_the_hash_seed(tmp_path) -> None:
    """scores.parquet lists each in-distribution set, then its OOD sets in pair order, in
    every process (a set's iteration order once depended on PYTHONHASHSEED)."""
    script = f"""
import numpy as np, pathlib
from tests.unit.test_benchmark import _features, _spec
spec = _spec(pathlib.Path({str(tmp_path)!r}), bootstrap=0)
rng = np.random.default_rng(0)
features = {{(s, r, m): _features(rng, 0, 5) for s in "ab" for r in ("fit", "validation",
    "test") for m in spec.methods}}
costs = {{m: {{"unet_evals": 1, "seconds": 0.0}} for m in spec.methods}}
scores = evaluate_matrix(spec, spec.methods, features, costs).scores
print([tuple(r.values()) for r in scores.select(["method", "in_dist", "split", "dataset"])
    .to_pylist()][::5])
"""
    script = "from diffpath.benchmark.matrix import evaluate_matrix" + script
    orders = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(4)
    }
    assert len(orders) == 1
    datasets = [row[3] for row in eval(orders.pop())]
    assert datasets[:4] == ["a", "b", "a", "b"]  # in-dist a: its own set first, then b


def test_a_drop_beyond_tolerance_is_a_regression_naming_the_pair() -> None:
    now = [
        {
            "split": "test",
            "in_dist": "a",
            "ood": "b",
            "method": "m",
            "auroc": 0.90,
            "auroc_high": 0.92,
        },
        {
            "split": "test",
            "in_dist": "b",
            "ood": "a",
            "method": "m",
            "auroc": 0.80,
            "auroc_high": 0.86,
        },
    ]
    before = [
        {**now[0], "auroc": 0.95},  # dropped 0.05 > max(0.01, 0.02)
        {**now[1], "auroc": 0.84},  # dropped 0.04 < the interval's upper half, 0.06
    ]
    deltas, regressions = compare(now, before, 0.01)
    assert len(deltas) == 2 and [d["regression"] for d in deltas] == [True, False]
    assert regressions == ["m: a vs b AUROC 0.950 -> 0.900 (drop 0.050 > allowed 0.020)"]
    assert compare(now, [{**now[0], "auroc": 0.905}], 0.01)[1] == []


def test_storey_estimate_is_near_zero_on_clean_and_near_truth_when_contaminated() -> None:
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=1000)
    clean = storey_estimate(rng.normal(size=2000), calibration)
    assert clean.fraction < 0.05 and clean.low <= clean.fraction <= clean.high
    scores = np.r_[rng.normal(size=1800), rng.normal(6, 1, 200)]  # 10% clear outliers
    dirty = storey_estimate(scores, calibration)
    assert abs(dirty.fraction - 0.1) < 0.08 and dirty.low < 0.1 < dirty.high
    assert dirty.suspects.sum() == round(dirty.fraction * 2000)  # the top estimated count
    assert dirty.suspects[1800:].mean() > 0.9 and dirty.suspects[:1800].mean() < 0.08


def test_storey_estimate_uses_the_exact_null_rate_of_conformal_p_values() -> None:
    """With 10 calibration scores P(p > ½ | clean) is 6/11, not ½: 30% of clear outliers
    are then estimated as 30% on average (the ½ rule gave 24%)."""
    rng = np.random.default_rng(0)
    estimates = [
        storey_estimate(
            np.r_[rng.normal(size=700), rng.normal(9, 1, 300)], rng.normal(size=10), n_boot=1
        )
        for _ in range(300)
    ]
    assert np.mean([e.fraction for e in estimates]) == pytest.approx(0.3, abs=0.02)
    assert 0.3 < estimates[0].detectable < 0.9  # 10 calibration scores resolve little


def test_storey_warns_when_the_set_scores_lower_than_its_calibration_images() -> None:
    """More large p-values than any clean set gives cannot be contamination: the set is not
    exchangeable with the calibration images, and the estimate is biased low (it says so)."""
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=800)
    shifted = storey_estimate(rng.normal(-0.3, 1, 1000), calibration, n_boot=10)
    assert shifted.fraction == 0.0 and "not exchangeable" in shifted.warning
    contaminated = np.r_[rng.normal(size=700), rng.normal(5, 1, 300)]
    assert storey_estimate(contaminated, calibration, n_boot=10).warning is None


def test_mixture_estimate_finds_a_separate_upper_component_only_when_there_is_one() -> None:
    rng = np.random.default_rng(0)
    clean = rng.chisquare(6, 1000)  # NLL-like: right-skewed, one population
    one = mixture_estimate(clean, n_boot=20)
    assert one.fraction is None and "one group" in one.reason and not one.suspects.any()
    dirty = np.r_[clean[:900], rng.normal(60, 5, 100)]
    estimate = mixture_estimate(dirty, n_boot=20)
    assert abs(estimate.fraction - 0.1) < 0.03 and estimate.suspects[900:].mean() > 0.9
    lowest = mixture_estimate(np.r_[dirty, -1e6], n_boot=20)  # one score far below the rest
    assert lowest.fraction == pytest.approx(estimate.fraction, abs=0.01)


def test_mixture_estimate_says_undetermined_rather_than_zero_when_most_are_contaminated() -> None:
    rng = np.random.default_rng(0)
    mostly_bad = np.r_[rng.chisquare(6, 400), rng.normal(60, 5, 600)]
    estimate = mixture_estimate(mostly_bad, n_boot=20)
    assert estimate.fraction is None and "would hold 60%" in estimate.reason
    assert estimate.as_dict()["estimated_contamination"] is None


def test_audit_accuracy_reports_truth_and_estimates_per_rate(tmp_path) -> None:
    spec = _spec(tmp_path, audit={"clean": "a", "contaminants": ["b"], "rates": [0.0, 0.1]})
    rng = np.random.default_rng(2)
    features = {
        (s, r, "diffpath6d"): _features(rng, 0 if s == "a" else 3, 400, d=6)
        for s in "ab"
        for r in ("fit", "validation", "test")
    }
    rows = audit_accuracy(spec, "diffpath6d", features, "gaussian")
    assert [r["estimator"] for r in rows] == ["storey (reference)", "mixture (no reference)"] * 2
    clean, dirty = rows[:2], rows[2:]
    assert all(r["rate"] == 0 and r["detection_auroc"] is None for r in clean)
    assert clean[0]["estimated_contamination"] < 0.08
    assert "one group" in clean[1]["contamination_undetermined"]
    for r in dirty:  # Storey's π0 from 444 images and 400 calibration scores: SE ≈ 0.05
        assert r["rate"] == pytest.approx(0.1, abs=0.01) and r["detection_auroc"] > 0.99
        assert r["contamination_low"] <= r["rate"] <= r["contamination_high"]
        assert abs(r["estimated_contamination"] - r["rate"]) < 0.12
        assert r["precision"] >= 0.5  # the suspects are the top-scored estimated count


def test_method_spec_builds_each_sets_config(tmp_path) -> None:
    spec = _spec(tmp_path, model="/weights")
    spec = spec.model_copy(
        update={
            "datasets": {
                **spec.datasets,
                "b": spec.datasets["b"].model_copy(update={"center_crop": 140}),
            }
        }
    )
    config = spec.feature_config(MethodSpec(config={"method": "diffpathv2+6d", "draws": 3}), "b")
    assert (config.model, config.center_crop, config.unet_evals) == ("/weights", 140, 3 * 5 + 5)
    with pytest.raises(ConfigError, match="timesteps"):
        spec.feature_config(MethodSpec(config={"timesteps": 1}), "a")

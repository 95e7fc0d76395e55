"""`diffpath benchmark` end to end: the matrix through the shared shards and cache, its
report, a rerun served by the cache, and a doctored previous run failing as a regression."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from diffpath_flows.cli import ALERT_EXIT, app
from tests.conftest import SAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]
runner = CliRunner()
TEXTURES = {"banded", "braided", "bubbly", "blotchy", "bumpy"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory, tiny_model_dir) -> str:
    """Three sets cut from the bundled samples: faces, textures, small objects."""
    root = tmp_path_factory.mktemp("bench-data")
    pq.write_table(pq.read_table(SAMPLES / "reference.parquet"), root / "faces.parquet")
    incoming = pq.read_table(SAMPLES / "incoming.parquet")
    labels = incoming["label"].to_pylist()
    textures = [label in TEXTURES for label in labels]
    objects = [label not in TEXTURES and not label.startswith("celeb") for label in labels]
    pq.write_table(incoming.filter(pa.array(textures)), root / "textures.parquet")
    objects = incoming.filter(pa.array(objects))
    junk = pa.table({"path": ["junk.jpg"], "label": ["junk"], "image": [b"not an image"]})
    pq.write_table(pa.concat_tables([objects, junk.cast(objects.schema)]), root / "objects.parquet")
    (root / "spec.yaml").write_text(
        f"""
name: samples
model: {tiny_model_dir}
datasets:
  faces: {{source: faces.parquet}}
  textures: {{source: textures.parquet}}
  objects: {{source: objects.parquet}}
sizes: {{fit: 50, validation: 20, test: 20}}
bootstrap: 100
methods:
  diffpathv2: {{config: {{method: diffpathv2, timesteps: 3, image_size: 16}}}}
  diffpath6d: {{config: {{method: diffpath6d, timesteps: 3, image_size: 16}}}}
  v2+6d: {{config: {{method: diffpathv2+6d, timesteps: 3, draws: 1, image_size: 16}}}}
ablations:
  v2-gaussian: {{config: {{method: diffpathv2, timesteps: 3, image_size: 16}}, density: gaussian}}
audit: {{clean: faces, contaminants: [textures, objects], rates: [0.0, 0.15]}}
"""
    )
    return str(root / "spec.yaml")


def _run(spec: str, out, *extra: str):
    return runner.invoke(app, ["benchmark", spec, "--out", str(out), *extra])


def test_benchmark_measures_every_pair_and_flags_a_regression(spec, tmp_path) -> None:
    features = str(tmp_path / "features")
    first = _run(spec, tmp_path / "one", "--ablations", "--features", features)
    assert first.exit_code == 0, first.output
    out = tmp_path / "one"
    results = pq.read_table(out / "results.parquet").to_pylist()
    pairs = {(r["in_dist"], r["ood"]) for r in results}
    assert len(pairs) == 6 and {r["method"] for r in results} == {
        "diffpathv2",
        "diffpath6d",
        "v2+6d",
        "v2-gaussian",
    }
    assert len(results) == 6 * 4 * 2  # pairs × methods × (validation, test)
    test_rows = [r for r in results if r["split"] == "test"]  # intervals on the test split
    assert all(r["auroc_low"] <= r["auroc"] <= r["auroc_high"] for r in test_rows)
    summary = json.loads((out / "summary.json").read_text())
    assert sum(summary["unreadable"].values()) == 1  # the junk file: recorded, not scored
    assert summary["chosen_default"] in {"diffpathv2", "diffpath6d", "v2+6d"}  # not an ablation
    costs = {m["method"]: m["unet_evals"] for m in summary["methods"]}
    assert costs == {"diffpathv2": 3, "diffpath6d": 3, "v2+6d": 6, "v2-gaussian": 3}
    rates = sorted({a["rate"] for a in summary["audit"]})
    assert rates == [0.0, 4 / 24]  # 15% of 20 clean faces: 4 contaminants among 24
    assert "## Test AUROC per pair" in (out / "results.md").read_text()
    assert "<img" in (out / "report.html").read_text()
    # scores of a combination's parts are the parts' own: V2 ⧺ 6D reused, not recomputed
    methods = {m["method"]: m for m in summary["methods"]}
    assert methods["v2+6d"]["features_computed"] == 0
    assert methods["v2-gaussian"]["features_computed"] == methods["diffpathv2"]["features_computed"]

    # a rerun against the first: every feature from the shared cache, no regression
    again = _run(spec, tmp_path / "two", "--features", features, "--previous", str(out))
    assert again.exit_code == 0, again.output
    rerun = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert all(m["features_computed"] == 0 for m in rerun["methods"])
    assert rerun["regressions"] == [] and all(d["delta"] == 0 for d in rerun["deltas"])

    # a doctored previous table (one pair better than this run's interval allows) fails the
    # run, naming the pair
    table = pq.read_table(out / "results.parquet")
    doctored = pc.and_(
        pc.and_(pc.equal(table["in_dist"], "faces"), pc.equal(table["ood"], "textures")),
        pc.equal(table["method"], "diffpath6d"),
    )
    raised = pc.if_else(doctored, pc.add(table["auroc_high"], 0.02), table["auroc"])
    pq.write_table(
        table.set_column(table.schema.get_field_index("auroc"), "auroc", raised),
        tmp_path / "prev.parquet",
    )
    failed = _run(
        spec,
        tmp_path / "three",
        "--features",
        features,
        "--previous",
        str(tmp_path / "prev.parquet"),
    )
    assert failed.exit_code == ALERT_EXIT, failed.output
    assert "diffpath6d: faces vs textures" in failed.output.strip().splitlines()[-1]
    assert (tmp_path / "three" / "report.html").exists()  # outputs first, then the failure
    regressions = json.loads((tmp_path / "three" / "summary.json").read_text())["regressions"]
    assert len(regressions) == 1 and "REGRESSION" in (tmp_path / "three" / "results.md").read_text()


def test_scheduled_runs_compare_with_the_latest_run(spec, tmp_path) -> None:
    out = str(tmp_path / "runs" / "{date}")
    first = _run(spec, out, "--previous", "latest")  # no earlier run: nothing to compare
    assert first.exit_code == 0, first.output
    latest = json.loads((tmp_path / "runs" / "latest.json").read_text())["out"]
    second = _run(spec, out, "--previous", "latest")
    assert second.exit_code == 0, second.output
    summary = json.loads((tmp_path / "runs" / "latest.json").read_text())
    assert summary["out"] == latest  # same day, same folder
    deltas = json.loads(
        (tmp_path / "runs" / latest.rsplit("/", 1)[-1] / "summary.json").read_text()
    )
    assert deltas["previous"] == f"{latest}/results.parquet" and deltas["deltas"]


def test_a_missing_previous_run_exits_2_before_any_work(spec, tmp_path) -> None:
    result = _run(spec, tmp_path / "o", "--previous", str(tmp_path / "nowhere"))
    assert result.exit_code == 2 and "do not exist" in result.output.strip().splitlines()[-1]
    assert not (tmp_path / "o" / "shards").exists()


def test_a_spec_error_exits_2_with_the_reason(tmp_path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "datasets: {a: {source: x.parquet}}\nmethods: {}\npairs: [[a, b]]\n"
    )
    result = _run(str(tmp_path / "bad.yaml"), tmp_path / "o")
    assert result.exit_code == 2 and "pair" in result.output.strip().splitlines()[-1]


def test_the_prefect_free_path_is_the_flows_own(spec, tmp_path) -> None:
    """`run_benchmark` with plain steps (a machine without Prefect) writes the flow's tables."""
    from diffpath.benchmark.run import Steps, featurize_here, run_benchmark
    from diffpath.benchmark.spec import load_spec
    from diffpath.model.workers import cached_model
    from diffpath.reports.benchmark import benchmark_report

    assert _run(spec, tmp_path / "flow").exit_code == 0
    bench = load_spec(spec)
    model = cached_model(bench.model, "float32", "cpu")
    here = str(tmp_path / "here")
    loaded = lambda dtype: cached_model(bench.model, dtype, "cpu")  # noqa: E731
    steps = Steps(featurize_here(loaded, f"{here}/features", here), lambda out: out)
    outputs = run_benchmark(bench, here, steps)
    assert outputs["report"] == here  # the step it was given, not a fixed one
    benchmark_report(here, model)
    for table in ("results.parquet", "scores.parquet"):  # NaN where a pair has no OOD images
        tables = [pl.read_parquet(tmp_path / run / table) for run in ("here", "flow")]
        assert_frame_equal(*tables)
    assert (tmp_path / "here" / "report.html").read_text().count("<img") > 0

"""fit-reference → screen → audit → evaluate end to end on local storage, and identity:
every listed image is one row, results follow the bytes, features are reused by content."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageOps

from diffpath.errors import AlertError, ConfigMismatchError
from diffpath.io.identity import content_hash
from diffpath.io.sources import list_source, read_refs
from diffpath.scoring.grouping import Grouping
from diffpath.scoring.metrics import auroc
from diffpath.scoring.nearcopy import NEAR_BITS
from tests.conftest import N_INCOMING, SAMPLES, save_tiny_model, utc_day

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]

REFERENCE = str(SAMPLES / "reference.parquet")
INCOMING = str(SAMPLES / "incoming.parquet")
LOCATOR = ["uri", "row", "path", "sha256"]


def sample_bytes(prefix: str, n: int) -> list[bytes]:
    """Encoded bytes of the first `n` bundled incoming images whose path starts with `prefix`."""
    refs = [ref for ref in list_source(INCOMING) if ref.path.startswith(prefix)][:n]
    return read_refs(refs)


def reencode(data: bytes, scale: float = 1.0, quality: int = 80, mirror: bool = False) -> bytes:
    """A near copy of an image: resized by `scale`, mirrored, saved as JPEG at `quality`."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    size = (round(image.width * scale), round(image.height * scale))
    image = image.resize(size, Image.Resampling.BICUBIC)
    image = ImageOps.mirror(image) if mirror else image
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_folder(folder: Path, names_and_bytes: list[tuple[str, bytes]]) -> str:
    for name, data in names_and_bytes:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return str(folder)


def summary_of(outputs: dict[str, str]) -> dict:
    return json.loads(Path(outputs["summary"]).read_text())


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_config, tiny_run) -> tuple[Path, str]:
    from diffpath_flows.pipeline import fit_reference_flow

    out = tmp_path_factory.mktemp("run")
    reference = fit_reference_flow(
        [REFERENCE],
        str(out / "ref"),
        tiny_config,
        holdout=0.25,  # 20 calibration images: the fewest that flag at 5%
        run=tiny_run(max_images=80, shard_size=32),
    )
    return out, reference


def screen(sources: list[str], reference: str, out: Path, **run) -> dict[str, str]:
    from diffpath_flows.pipeline import RunOptions, screen_flow

    return screen_flow(sources, reference, str(out), run=RunOptions(**run))


def test_fit_then_screen_writes_readable_outputs(fitted, tiny_config) -> None:
    out, reference = fitted
    outputs = screen([INCOMING], reference, out / "screen", shard_size=64)
    scores = pl.read_parquet(outputs["scores"])
    assert scores.columns == [*LOCATOR, "score", "p_value", "flagged", "rank"]
    assert len(scores) == N_INCOMING and scores["row"].n_unique() == N_INCOMING
    assert scores["uri"].unique().to_list() == [INCOMING]
    assert scores["rank"].to_list() == list(range(1, N_INCOMING + 1))
    assert scores["score"].is_sorted(descending=True)
    assert pl.read_parquet(outputs["errors"]).columns == [*LOCATOR, "error"]
    assert pl.read_parquet(outputs["duplicates"]).columns == [
        "group",
        *LOCATOR,
        "distance",
        "identical",
    ]
    flagged = scores.filter("flagged")
    lines = Path(outputs["flagged_txt"]).read_text().splitlines()
    assert lines == [f"{INCOMING}#{row}" for row in flagged["row"]]
    assert pl.read_csv(outputs["flagged_csv"])["rank"].to_list() == flagged["rank"].to_list()
    summary = summary_of(outputs)
    assert summary["n_images"] == N_INCOMING and summary["config_hash"] == tiny_config.config_hash()
    assert summary["n_flagged"] == scores["flagged"].sum()
    assert summary["features_computed"] == N_INCOMING and summary["features_from_cache"] == 0
    html = Path(outputs["report"]).read_text()
    assert "data:image/png;base64" in html and "faces/" in html


def test_the_report_leads_with_a_headline_and_shows_every_flagged_image(tmp_path, fitted) -> None:
    from diffpath.scoring.alerts import ScreenPolicy
    from diffpath.scoring.reference import load_reference
    from diffpath_flows.pipeline import RunOptions, screen_flow

    everything = ScreenPolicy(threshold=-1e9)
    outputs = screen_flow([INCOMING], fitted[1], str(tmp_path), run=RunOptions(), policy=everything)
    html = Path(outputs["report"]).read_text()
    headline = html.split("<p class='headline'>")[1].split("</p>")[0]
    assert headline.startswith(f"{N_INCOMING} of {N_INCOMING} images flagged (100%)")
    assert "Most flagged: faces/ 60 of 60" in headline
    flagged_rows = html.split("Flagged images")[1].split("</table>")[0].split("<tr>")[2:]
    assert len(flagged_rows) == N_INCOMING
    assert all("<img" in row for row in flagged_rows)  # a thumbnail on every row
    n_calibration = len(load_reference(fitted[1]).calibration_scores)
    assert f"p-value (≥ {1 / (n_calibration + 1):.2g})" in html
    assert f"1/({n_calibration} calibration images + 1)" in html


@pytest.mark.hostile(
    ("a flagged file named `price $5 or $6.jpg`", "the report renders it (no mathtext)"),
)
def test_a_file_name_with_dollar_signs_renders_in_the_report(tmp_path, fitted) -> None:
    from diffpath.scoring.alerts import ScreenPolicy
    from diffpath_flows.pipeline import RunOptions, screen_flow

    folder = write_folder(tmp_path / "in", [("price $5 or $6.jpg", sample_bytes("faces/", 1)[0])])
    everything = ScreenPolicy(threshold=-1e9)
    outputs = screen_flow(
        [folder], fitted[1], str(tmp_path / "s"), run=RunOptions(), policy=everything
    )
    assert "price $5 or $6.jpg" in Path(outputs["report"]).read_text()


@pytest.mark.hostile(
    (
        "fault: disk full while writing summary.json",
        "no earlier run's summary or report left beside the new tables",
    ),
)
def test_a_run_that_fails_writing_leaves_no_summary_of_an_earlier_run(
    tmp_path, fitted, monkeypatch
) -> None:
    import diffpath.scoring.score
    from diffpath.errors import StorageError

    screen([INCOMING], fitted[1], tmp_path, max_images=10)
    assert (tmp_path / "summary.json").exists() and (tmp_path / "report.html").exists()

    def full_disk(data, uri):
        raise StorageError(f"cannot write {uri}: no space left")

    monkeypatch.setattr(diffpath.scoring.score, "write_json", full_disk)
    with pytest.raises(StorageError, match="no space left"):
        screen([INCOMING], fitted[1], tmp_path, max_images=12)
    assert len(pl.read_parquet(tmp_path / "scores.parquet")) == 12  # this run's tables,
    assert not (tmp_path / "summary.json").exists()  # and no summary or report of the last
    assert not (tmp_path / "report.html").exists()


def test_rerun_computes_nothing_and_gives_identical_scores(fitted) -> None:
    out, reference = fitted
    first = screen([INCOMING], reference, out / "again", shard_size=64)
    second = screen([INCOMING], reference, out / "again", shard_size=64)
    assert summary_of(second)["features_computed"] == 0
    assert summary_of(second)["features_from_cache"] == N_INCOMING
    assert pl.read_parquet(first["scores"]).equals(pl.read_parquet(second["scores"]))


@pytest.mark.hostile(
    ("two folders holding the same file names", "every file scored on its own bytes"),
)
def test_colliding_names_in_two_folders_are_scored_apart(tmp_path, fitted) -> None:
    """The bug this identity fixes: day2's textures used to overwrite day1's faces by name."""
    _, reference = fitted
    faces, others = sample_bytes("faces/", 7), sample_bytes("textures/", 6)
    day1 = write_folder(
        tmp_path / "day1", [(f"cam/img_{i:03d}.jpg", d) for i, d in enumerate(faces)]
    )
    day2 = write_folder(
        tmp_path / "day2", [(f"cam/img_{i:03d}.jpg", d) for i, d in enumerate(others)]
    )
    both = pl.read_parquet(screen([day1, day2], reference, tmp_path / "both")["scores"])
    assert len(both) == 13 and both.select("uri", "row").n_unique() == 13
    assert both["path"].n_unique() == 7  # user keys repeat; rows are never merged
    alone = pl.concat(
        [
            pl.read_parquet(screen([day], reference, tmp_path / name)["scores"])
            for day, name in [(day1, "alone1"), (day2, "alone2")]
        ]
    )
    joined = both.join(alone, on="uri", suffix="_alone")
    assert len(joined) == 13
    # computed independently, in other batches: equal up to float rounding of the UNet
    np.testing.assert_allclose(joined["score"], joined["score_alone"], rtol=1e-4)
    face = both.filter(pl.col("uri").str.contains("day1/cam/img_003"))["score"][0]
    texture = both.filter(pl.col("uri").str.contains("day2/cam/img_003"))["score"][0]
    assert face != texture


def test_renamed_and_moved_files_reuse_every_feature(tmp_path, fitted) -> None:
    _, reference = fitted
    data = sample_bytes("cifar10/", 10)
    cache = str(tmp_path / "cache")
    first = screen(
        [write_folder(tmp_path / "a", [(f"{i}.jpg", d) for i, d in enumerate(data)])],
        reference,
        tmp_path / "o1",
        features_root=cache,
    )
    moved = write_folder(
        tmp_path / "elsewhere" / "b", [(f"renamed_{i}.JPG", d) for i, d in enumerate(data)]
    )
    second = screen([moved], reference, tmp_path / "o2", features_root=cache)
    assert summary_of(first)["features_computed"] == 10
    assert summary_of(second)["features_computed"] == 0
    a, b = (pl.read_parquet(o["scores"]).sort("sha256") for o in (first, second))
    assert a["sha256"].equals(b["sha256"]) and a["score"].equals(b["score"])
    assert b["path"].str.starts_with("renamed_").all()


def test_one_new_file_computes_one_feature_and_a_rewrite_is_recomputed(tmp_path, fitted) -> None:
    _, reference = fitted
    data = sample_bytes("textures/", 13)
    folder = tmp_path / "src"
    write_folder(folder, [(f"{i:02d}.jpg", d) for i, d in enumerate(data[:12])])
    cache = str(tmp_path / "cache")
    first = screen([str(folder)], reference, tmp_path / "o1", features_root=cache, shard_size=4)
    assert summary_of(first)["features_computed"] == 12  # 3 shards
    (folder / "00a.jpg").write_bytes(data[12])  # sorts into the first shard, shifting all others
    added = screen([str(folder)], reference, tmp_path / "o2", features_root=cache, shard_size=4)
    assert summary_of(added)["features_computed"] == 1 and summary_of(added)["n_scored"] == 13
    (folder / "05.jpg").write_bytes(data[0])  # rewritten under an old name: other bytes
    rewritten = screen([str(folder)], reference, tmp_path / "o3", features_root=cache, shard_size=4)
    assert summary_of(rewritten)["features_computed"] == 0  # these bytes were seen as 00.jpg
    scores = pl.read_parquet(rewritten["scores"])
    row = scores.filter(pl.col("path") == "05.jpg")
    assert row["sha256"][0] == scores.filter(pl.col("path") == "00.jpg")["sha256"][0]
    assert row["score"][0] == scores.filter(pl.col("path") == "00.jpg")["score"][0]


def test_near_duplicates_are_grouped_and_copies_scored_identically(tmp_path, fitted) -> None:
    _, reference = fitted
    face, texture = sample_bytes("faces/", 1)[0], sample_bytes("textures/", 1)[0]
    folder = write_folder(
        tmp_path / "dump",
        [
            ("a.jpg", face),
            ("copy/a.jpg", face),
            ("b.png", face),
            ("large.jpg", reencode(face, scale=2.0, quality=70)),
            ("t.jpg", texture),
        ],
    )
    outputs = screen([folder], reference, tmp_path / "out")
    duplicates = pl.read_parquet(outputs["duplicates"])
    assert duplicates["group"].to_list() == [1, 1, 1, 1]
    names = sorted(Path(u).name for u in duplicates["uri"])
    assert names == ["a.jpg", "a.jpg", "b.png", "large.jpg"]
    resized = duplicates.filter(pl.col("uri").str.ends_with("large.jpg"))
    assert not resized["identical"][0] and resized["distance"][0] <= NEAR_BITS
    summary = summary_of(outputs)
    assert (summary["n_duplicate_groups"], summary["n_duplicates"]) == (1, 3)
    assert summary["n_identical_duplicates"] == 2
    assert summary["features_computed"] == 3  # each distinct content once
    scores = pl.read_parquet(outputs["scores"])
    assert scores.filter(pl.col("sha256") == content_hash(face))["score"].n_unique() == 1


def test_near_copies_of_a_protected_set_are_leaks_that_alert(tmp_path, fitted) -> None:
    from diffpath_flows.pipeline import RunOptions, screen_flow

    _, reference = fitted
    faces, textures = sample_bytes("faces/", 3), sample_bytes("textures/", 2)
    protected = write_folder(tmp_path / "test-set", [(f"{i}.jpg", f) for i, f in enumerate(faces)])
    dump = write_folder(
        tmp_path / "dump",
        [
            ("resized.jpg", reencode(faces[0], scale=2.0, quality=60)),
            ("flipped.jpg", reencode(faces[1], mirror=True)),
            ("t0.jpg", textures[0]),
            ("t1.jpg", textures[1]),
        ],
    )
    out = tmp_path / "out"
    with pytest.raises(AlertError, match="2 images are near copies of the protected set"):
        screen_flow([dump], reference, str(out), leak_check=[protected])
    leaks = pl.read_parquet(out / "leaks.parquet")
    found = {
        Path(u).name: (Path(p).name, m)
        for u, p, m in leaks.select("uri", "protected_uri", "mirrored").iter_rows()
    }
    assert found == {"resized.jpg": ("0.jpg", False), "flipped.jpg": ("1.jpg", True)}
    summary = summary_of({"summary": str(out / "summary.json")})
    assert summary["n_leaks"] == 2 and summary["leak_check"]["n_protected"] == 3
    assert "Near copies" in (out / "report.html").read_text()
    cached = list((out / "features" / "phash").glob("*.parquet"))
    with pytest.raises(AlertError):  # the protected set's hashes are cached: none added
        screen_flow(
            [dump],
            reference,
            str(tmp_path / "again"),
            leak_check=[protected],
            run=RunOptions(features_root=str(out / "features")),
        )
    assert list((out / "features" / "phash").glob("*.parquet")) == cached


def test_same_weights_at_two_paths_share_one_feature_key(tmp_path, fitted, tiny_model_dir) -> None:
    _, reference = fitted
    moved_model = shutil.copytree(tiny_model_dir, tmp_path / "moved-model")
    cache = tmp_path / "cache"
    first = screen([INCOMING], reference, tmp_path / "o1", features_root=str(cache), max_images=8)
    from diffpath_flows.pipeline import RunOptions, screen_flow

    second = screen_flow(
        [INCOMING],
        reference,
        str(tmp_path / "o2"),
        run=RunOptions(model=str(moved_model), features_root=str(cache), max_images=8),
    )
    assert summary_of(second)["features_computed"] == 0
    assert [p.name for p in cache.iterdir()] == [
        summary_of(first)["config_hash"] + "-" + summary_of(first)["model_id"]
    ]
    assert pl.read_parquet(first["scores"]).equals(pl.read_parquet(second["scores"]))


def test_other_weights_are_refused_before_any_feature_work(tmp_path, fitted) -> None:
    from diffpath_flows.pipeline import RunOptions, screen_flow

    _, reference = fitted
    other = save_tiny_model(tmp_path / "other-model", out_channels=6)
    with pytest.raises(ConfigMismatchError, match="fitted with model"):
        screen_flow([INCOMING], reference, str(tmp_path / "o"), run=RunOptions(model=str(other)))
    assert not (tmp_path / "o").exists()


def test_unreadable_images_are_recorded_not_fatal(tmp_path, fitted) -> None:
    folder = tmp_path / "dump"
    write_folder(folder, [(f"sub/{i}.PNG", d) for i, d in enumerate(sample_bytes("faces/", 5))])
    (folder / "broken.jpg").write_bytes(b"truncated")
    (folder / "notes.txt").write_text("not an image, not listed")
    outputs = screen([str(folder)], fitted[1], tmp_path / "out")
    assert pl.read_parquet(outputs["scores"]).height == 5
    errors = pl.read_parquet(outputs["errors"])
    assert errors["path"].to_list() == ["broken.jpg"] and "broken.jpg" in errors["error"][0]
    assert errors["sha256"][0] is not None and errors["row"][0] is None
    assert summary_of(outputs)["n_images"] == 6


def test_parquet_and_folder_sources_give_the_same_features(tmp_path, tiny_config, tiny_run) -> None:
    from prefect import flow

    from diffpath.features.shards import read_shards
    from diffpath_flows.pipeline import featurize

    refs = list_source(INCOMING)[:12]
    write_folder(
        tmp_path / "folder", list(zip([r.path for r in refs], read_refs(refs), strict=True))
    )

    @flow
    def both() -> tuple[list[str], list[str]]:
        run = tiny_run(shard_size=64)
        folder = featurize([str(tmp_path / "folder")], tiny_config, str(tmp_path / "a"), run)
        parquet = featurize(
            [INCOMING],
            tiny_config,
            str(tmp_path / "b"),
            run.model_copy(update={"max_images": None}),
        )
        return folder.uris, parquet.uris

    folder_uris, parquet_uris = both()
    a = pl.from_arrow(read_shards(folder_uris, tiny_config)[0]).sort("sha256")
    b = pl.from_arrow(read_shards(parquet_uris, tiny_config)[0])
    b = b.filter(pl.col("sha256").is_in(a["sha256"].implode())).sort("sha256")
    assert a["path"].to_list() == b["path"].to_list() and len(a) == 12
    features = ["err_l1", "err_l2", "err_l3", "deriv_l1", "deriv_l2", "deriv_l3"]
    np.testing.assert_array_equal(a.select(features).to_numpy(), b.select(features).to_numpy())


def test_audit_and_evaluate(tmp_path, fitted, tiny_config, tiny_run) -> None:
    from diffpath.scoring.conformal import benjamini_hochberg
    from diffpath_flows.pipeline import RunOptions, audit_flow, evaluate_flow

    audit = audit_flow([INCOMING], str(tmp_path / "audit"), tiny_config, folds=3, run=tiny_run())
    summary = json.loads(Path(audit["summary"]).read_text())
    scores = pl.read_parquet(audit["scores"])
    assert summary["n_scored"] == N_INCOMING == len(scores)
    # the tiny model's out-of-fold scores form one group: undetermined, not a number
    assert summary["estimated_contamination"] is None and summary["contamination_low"] is None
    assert "one group" in summary["contamination_undetermined"]
    assert scores["flagged"].sum() == summary["n_suspects"] == 0
    assert summary["estimator"] == "mixture" and "--reference" in summary["warnings"][-1]
    assert Path(audit["report"]).exists()
    trusted = audit_flow([INCOMING], str(tmp_path / "audit-ref"), folds=3, reference=fitted[1])
    summary = json.loads(Path(trusted["summary"]).read_text())
    assert summary["estimator"] == "storey" and "random split" in summary["warnings"][-1]
    against = pl.read_parquet(trusted["scores"])
    # the suspects are those Benjamini–Hochberg selects at 10% on their p-values
    chosen = benjamini_hochberg(against["p_value"].to_numpy(), 0.1)
    assert (against["flagged"].to_numpy() == chosen).all() and summary["suspects_fdr"] == 0.1
    assert against["flagged"].sum() == summary["n_suspects"]
    if summary["estimated_contamination"] is None:  # a shifted set says why, not a number
        assert "not exchangeable" in summary["contamination_undetermined"]
    else:
        assert summary["contamination_low"] <= summary["contamination_high"]
    report = Path(trusted["report"]).read_text()
    assert "Anomaly scores against the reference" in report and "false-discovery" in report
    assert against["p_value"].is_between(0, 1).all() and len(against) == N_INCOMING
    result = evaluate_flow(
        [REFERENCE],
        {"incoming": [INCOMING]},
        fitted[1],
        str(tmp_path / "eval"),
        run=RunOptions(max_images=40),
    )
    metrics = json.loads(Path(result["metrics"]).read_text())
    ood = metrics["ood"]["incoming"]
    assert (metrics["in_dist"]["n"], ood["n"]) == (40, 40)
    assert ood["auroc"] == pytest.approx(
        auroc(np.array(metrics["in_dist"]["scores"]), np.array(ood["scores"]))
    )
    low, high = ood["auroc_interval"]
    assert low <= ood["auroc"] <= high
    assert "AUROC" in Path(result["report"]).read_text()


def test_p_values_and_flags_chosen_at_screening_time(tmp_path, fitted) -> None:
    from diffpath.scoring.alerts import ScreenPolicy
    from diffpath_flows.pipeline import RunOptions, screen_flow

    _, reference = fitted
    cache = str(tmp_path / "cache")
    run = RunOptions(features_root=cache, max_images=60)
    default = screen_flow([INCOMING], reference, str(tmp_path / "a"), run=run)
    loose = screen_flow(
        [INCOMING], reference, str(tmp_path / "b"), run=run, policy=ScreenPolicy(fpr=0.5)
    )
    a, b = pl.read_parquet(default["scores"]), pl.read_parquet(loose["scores"])
    assert a.columns == [*LOCATOR, "score", "p_value", "flagged", "rank"]
    assert a["p_value"].is_between(0, 1, closed="right").all()
    assert a["p_value"].is_sorted()  # rank 1 (highest score) has the smallest p-value
    assert b["flagged"].sum() > a["flagged"].sum() and a["score"].equals(b["score"])
    assert summary_of(loose)["expected_flagged_fraction"] == 10 / 21  # ⌊0.5 · 21⌋ of n + 1
    assert summary_of(loose)["features_computed"] == 0  # re-flagging computes nothing


def test_an_alert_fails_the_run_after_its_outputs_are_written(tmp_path, fitted) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from diffpath.errors import AlertError
    from diffpath.scoring.alerts import ScreenPolicy
    from diffpath_flows.pipeline import RunOptions, screen_flow

    _, reference = fitted
    state = screen_flow(
        [INCOMING],
        reference,
        str(tmp_path / "out"),
        run=RunOptions(max_images=20),
        policy=ScreenPolicy(threshold=-1e9, fail_above=0.5),  # everything flagged
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(AlertError, match=r"100\.0% flagged, above --fail-above 0\.5"):
        state.result()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(summary["alerts"]) == 1
    assert summary["expected_flagged_fraction"] == summary["flagged_p_value"] == 1.0  # as chosen
    assert (tmp_path / "out" / "report.html").exists()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    assert {"diffpath-summary", "diffpath-top-flagged"} <= {a.key for a in artifacts}


def test_a_dump_of_unreadable_files_always_alerts(tmp_path, fitted) -> None:
    from diffpath.errors import AlertError

    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not a jpeg")
    (folder / "b.png").write_bytes(b"")
    with pytest.raises(AlertError, match="no image could be scored"):
        screen([str(folder)], fitted[1], tmp_path / "out")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["n_errors"] == 2


@pytest.mark.hostile(
    ("an empty folder for tonight's dump", "outputs written, exit 3: the sources hold no images"),
)
def test_an_empty_night_alerts_like_a_night_of_junk(tmp_path, fitted) -> None:
    from diffpath.errors import AlertError

    (tmp_path / "empty").mkdir()
    with pytest.raises(AlertError, match="hold no images"):
        screen([str(tmp_path / "empty")], fitted[1], tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["n_images"], summary["n_scored"]) == (0, 0)
    assert (tmp_path / "out" / "report.html").exists()


def test_reference_held_back_by_group_and_said_in_the_summary(
    tmp_path, tiny_config, tiny_run
) -> None:
    from diffpath.errors import ConfigError
    from diffpath_flows.pipeline import fit_reference_flow

    run = tiny_run(features_root=str(tmp_path / "cache"))
    by_label = Grouping(column="label")
    grouped = fit_reference_flow(
        [REFERENCE], str(tmp_path / "by-identity"), tiny_config, run=run, grouping=by_label
    )
    assert json.loads(Path(grouped).read_text())["split"] == "group:label"
    summary = summary_of(screen([INCOMING], grouped, tmp_path / "s", max_images=10))
    assert summary["calibration_split"] == "group:label" and summary["warnings"] == []
    with pytest.raises(ConfigError, match="no column 'identity'"):
        fit_reference_flow(
            [REFERENCE],
            str(tmp_path / "x"),
            tiny_config,
            run=run,
            grouping=Grouping(column="identity"),
        )
    assert not (tmp_path / "x" / "features").exists()  # refused before any feature work


@pytest.mark.hostile(
    (
        "`--group-column` on image files; a `--group-by` pattern that misses",
        "refused before any feature is computed",
    ),
)
def test_image_files_grouped_by_folder_or_pattern_before_any_feature_work(
    tmp_path, tiny_config, tiny_run
) -> None:
    from diffpath.errors import ConfigError
    from diffpath_flows.pipeline import fit_reference_flow

    faces = sample_bytes("faces/", 12)
    folder = write_folder(
        tmp_path / "trusted", [(f"person{i % 4}/img{i}.jpg", b) for i, b in enumerate(faces)]
    )
    with pytest.raises(ConfigError, match=r"needs Parquet sources; .* --group-by parent"):
        fit_reference_flow(
            [folder], str(tmp_path / "c"), tiny_config, grouping=Grouping(column="x")
        )
    nobody = Grouping(by="nobody")
    with pytest.raises(ConfigError, match=r"'nobody' does not match 'person0/img0\.jpg'"):
        fit_reference_flow([folder], str(tmp_path / "r"), tiny_config, grouping=nobody)
    assert not any((tmp_path / name / "features").exists() for name in ("c", "r"))
    run = tiny_run(features_root=str(tmp_path / "cache"))
    for i, by in enumerate(["parent", r"^(person\d)/"]):
        grouped = fit_reference_flow(
            [folder],
            str(tmp_path / f"g{i}"),
            tiny_config,
            target_fpr=0.25,  # one person of three images is held back: enough at 25%
            run=run,
            grouping=Grouping(by=by),
        )
        assert json.loads(Path(grouped).read_text())["split"] == f"group:{by}"


def test_a_randomly_calibrated_reference_is_flagged_in_the_summary(tmp_path, fitted) -> None:
    summary = summary_of(screen([INCOMING], fitted[1], tmp_path / "s", max_images=10))
    assert summary["calibration_split"] == "random" and "--group-by" in summary["warnings"][0]


def test_dated_sources_and_outputs_resolve_to_the_run_date(tmp_path, fitted) -> None:
    days = [utc_day(), utc_day(1)]  # the run may start after midnight
    for day in days:
        write_folder(tmp_path / "incoming" / day, [("a.jpg", sample_bytes("faces/", 1)[0])])
    outputs = screen(
        [str(tmp_path / "incoming" / "{date}")], fitted[1], tmp_path / "screen" / "{date}"
    )
    today = next(d for d in days if outputs["scores"].startswith(str(tmp_path / "screen" / d)))
    assert outputs["scores"] == str(tmp_path / "screen" / today / "scores.parquet")
    latest = json.loads((tmp_path / "screen" / "latest.json").read_text())
    assert latest["out"] == str(tmp_path / "screen" / today)

"""The Python API: a source in, a table out, on the same core calls the CLI's flows make.

>>> import diffpath
>>> ref = diffpath.fit_reference("trusted/")            # a folder, Parquet, s3://, paths,
>>> result = ref.screen("incoming/", fpr=0.01)          # PIL images or arrays
>>> result.scores.sort("rank").head()                   # path, uri, sha256, score, p_value…
>>> result.write("out/")                                # the CLI's outputs and report

Each call works in a folder of its own (`workdir`, default a temporary one kept while its
result lives): the listing, the feature shards and the run's tables. Features are cached
by content under `cache` (default: inside `workdir`; give a lasting folder to reuse them
across calls and with the CLI's `--features-root`). A bad image is a row of `errors`,
never an exception; nothing here needs Prefect or a server.
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from tqdm.auto import tqdm

from diffpath.config import FeatureConfig
from diffpath.errors import ConfigError
from diffpath.features.cache import compact_caches
from diffpath.features.shards import featurize_shard
from diffpath.io.lock import output_lock
from diffpath.io.sources import store_listing
from diffpath.io.storage import join, read_bytes, read_json, write_bytes, write_parquet
from diffpath.model.diffusion import DiffusionModel, resolve_dtype
from diffpath.model.workers import cached_model
from diffpath.reports import pages
from diffpath.scoring import score
from diffpath.scoring.alerts import ScreenPolicy, flag_rule
from diffpath.scoring.grouping import Grouping
from diffpath.scoring.nearcopy import NEAR_BITS, protected_index
from diffpath.scoring.reference import (
    Reference,
    check_fit_options,
    check_split,
    fit_reference_shards,
    pin_reference,
    reference_setup,
)
from diffpath.scoring.reference import load_reference as _load_reference

__all__ = [
    "AuditResult",
    "EvaluateResult",
    "Run",
    "ScreenResult",
    "TrustedReference",
    "evaluate",
    "fit_reference",
    "load_reference",
]

Source = str | Path | Sequence[Any]  # URIs, paths, PIL images or (H, W[, C]) arrays


@dataclass(frozen=True)
class Run:
    """How a call runs; none of it changes a value. `model`: the weights ('default', a
    folder, a hub id; screen and audit: the reference's unless given), `cache`: the feature
    cache URI, `workdir`: where the call works, `progress`: a bar (None: in a terminal or
    notebook only)."""

    model: str | None = None
    device: str | None = None
    batch_size: int | None = None
    forward_batch: int | None = None
    cache: str | None = None
    workdir: str | None = None
    shard_size: int = 2048
    max_images: int | None = None
    progress: bool | None = None


@dataclass
class _Folder:
    """A call's working folder; a temporary one lives as long as this object."""

    uri: str
    temporary: Any = None

    @classmethod
    def of(cls, run: Run) -> _Folder:
        if run.workdir is not None:
            return cls(str(run.workdir))
        temporary = tempfile.TemporaryDirectory(prefix="diffpath-")
        return cls(temporary.name, temporary)


def _encode(image: Any, i: int) -> bytes:
    """A PIL image or an (H, W[, C]) array (uint8, or floats in [0, 1]) as PNG bytes."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            floats = np.issubdtype(array.dtype, np.floating)
            if not floats or not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
                raise ConfigError(
                    f"image {i}: an array of {array.dtype} in [{array.min()}, {array.max()}]; "
                    "give uint8 pixels or floats in [0, 1]"
                )
            array = np.round(array * 255).astype(np.uint8)
        if array.ndim not in (2, 3):
            raise ConfigError(f"image {i}: an array of shape {array.shape}; give (H, W[, C])")
        image = Image.fromarray(array)
    if not isinstance(image, Image.Image):
        raise ConfigError(
            f"item {i} is a {type(image).__name__}: give URIs, paths, PIL images or arrays"
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _sources(source: Source, folder: str) -> list[str]:
    """A source as listing URIs: URIs and paths as they are; in-memory images as a Parquet
    file of PNGs in `folder` (path `image-NNNNNN.png`: the row is the item's index)."""
    items = [source] if isinstance(source, (str, Path)) else list(source)
    if all(isinstance(item, (str, Path)) for item in items):
        return [str(item) for item in items]
    if any(isinstance(item, (str, Path)) for item in items):
        raise ConfigError("give either URIs and paths, or images: not a mix of both")
    images = [_encode(item, i) for i, item in enumerate(items)]
    table = pa.table(
        {
            "path": [f"image-{i:06d}.png" for i in range(len(images))],
            "image": pa.array(images, pa.binary()),
        }
    )
    return [write_parquet(table, join(folder, "inputs", "images.parquet"))]


def _bar(run: Run, total: int | None, what: str) -> tqdm:
    return tqdm(
        total=total,
        desc=what,
        unit="img",
        disable=None if run.progress is None else not run.progress,
    )


def _model(run: Run, model: str, config: FeatureConfig) -> DiffusionModel:
    return cached_model(
        model, config.dtype, run.device, False, None, run.batch_size, run.forward_batch
    )


def _featurize(
    sources: list[str],
    config: FeatureConfig,
    folder: str,
    run: Run,
    model: str,
    allow_empty: bool = False,
    check: Callable[[str], object] | None = None,
) -> tuple[list[str], dict[str, int]]:
    """List, shard and featurize sources in `folder` as the flows do → (shard URIs,
    counts); `check(listing URI)` runs before any feature is computed."""
    listing = store_listing(
        sources, folder, run.shard_size, run.max_images, config.seed, allow_empty
    )
    if check is not None:
        check(listing.uri)
    cache = run.cache or join(folder, "features")
    compact_caches(cache)
    unet = _model(run, model, config)
    with _bar(run, listing.n_images, "features") as bar:
        shards = [
            featurize_shard(unet, listing, i, config, cache, folder, bar.update, prefetch=True)
            for i in range(listing.n_shards)
        ]
    counts = {
        "features_computed": sum(s.n_computed for s in shards),
        "features_from_cache": sum(s.n_cached for s in shards),
    }
    return [s.uri for s in shards], counts


@dataclass
class _Result:
    """A call's outputs in its working folder, and how to write them anew under `out`."""

    outputs: dict[str, str]
    produce: Callable[[str], dict[str, str]] = field(repr=False)
    folder: _Folder = field(repr=False)

    @property
    def summary(self) -> dict[str, Any]:
        """The fields of summary.json."""
        return read_json(self.outputs["summary"])

    def write(self, out: str | Path) -> dict[str, str]:
        """Write the CLI's outputs of this call, report included, under `out` → their URIs."""
        out = str(out)
        with output_lock(out):
            return self.produce(out)


class _Scored(_Result):
    @property
    def scores(self) -> pl.DataFrame:
        """One row per scored image: uri, row, path, sha256, score, p_value, flagged, rank
        (1 = most anomalous), most anomalous first. `.to_pandas()` with pandas installed."""
        return pl.read_parquet(self.outputs["scores"])

    @property
    def errors(self) -> pl.DataFrame:
        """The images that could not be read or decoded: locator and a one-line error."""
        return pl.read_parquet(self.outputs["errors"])

    @property
    def duplicates(self) -> pl.DataFrame:
        """Near-duplicate groups: group, locator, sha256, distance (bits from the group's
        first member), identical (its bytes are another member's)."""
        return pl.read_parquet(self.outputs["duplicates"])

    def flagged_uris(self) -> list[str]:
        """The flagged images, most anomalous first: `uri`, or `uri#row` of a Parquet row."""
        return read_bytes(self.outputs["flagged_txt"]).decode().splitlines()


class ScreenResult(_Scored):
    """A screening run: `scores`, `errors`, `duplicates`, `leaks`, `summary` (alerts
    included), `flagged_uris()`, and `write(out)`."""

    @property
    def leaks(self) -> pl.DataFrame | None:
        """With `leak_check`: the images that are near copies of a protected image."""
        return pl.read_parquet(self.outputs["leaks"]) if "leaks" in self.outputs else None

    @property
    def alerts(self) -> list[str]:
        return self.summary["alerts"]


class AuditResult(_Scored):
    """An audit: `scores` (flagged = suspects), the contamination estimate in `summary`."""


class EvaluateResult(_Result):
    """AUROC, FPR@95 and AUPR of each OOD set: `metrics` (one row a set), `write(out)`."""

    @property
    def metrics(self) -> pl.DataFrame:
        results = read_json(self.outputs["metrics"])["ood"]
        keep = ("n", "auroc", "auroc_interval", "fpr95", "aupr_in", "aupr_out")
        return pl.DataFrame(
            [
                {"ood": name, **{k: v for k, v in m.items() if k in keep}}
                for name, m in results.items()
            ]
        )


@dataclass
class TrustedReference:
    """A fitted reference (density, threshold, calibration scores, feature config, and
    where its weights were) and the calls that score against it."""

    uri: str
    reference: Reference = field(repr=False)
    folder: _Folder | None = field(default=None, repr=False)

    @property
    def config(self) -> FeatureConfig:
        return self.reference.config

    @property
    def threshold(self) -> float:
        return self.reference.threshold

    def save(self, uri: str | Path) -> str:
        """Write the reference JSON (the CLI's reference.json) to `uri`."""
        return write_bytes(str(uri), read_bytes(self.uri))

    def screen(
        self,
        source: Source,
        *,
        fpr: float | None = None,
        threshold: float | None = None,
        leak_check: str | Sequence[str] | None = None,
        alert_p: float | None = None,
        fail_above: float | None = None,
        max_errors: float | None = None,
        near_bits: int = NEAR_BITS,
        run: Run | None = None,
    ) -> ScreenResult:
        """Score `source` against this reference → `ScreenResult`. Flags above the
        reference's threshold, or at in-distribution rate `fpr`, or above `threshold`;
        `leak_check` (a protected set's URIs) finds near copies of its images, within
        `near_bits` of 64 perceptual-hash bits (as duplicates). Alerts are in
        `result.alerts`, never raised."""
        run = run or Run()
        policy = ScreenPolicy(
            fpr=fpr,
            threshold=threshold,
            alert_p=alert_p,
            fail_above=fail_above,
            max_errors=max_errors,
            near_bits=near_bits,
        )
        flag_rule(self.reference, policy)  # refused here: nothing computed
        protected = [leak_check] if isinstance(leak_check, str) else list(leak_check or [])
        folder = _Folder.of(run)
        started, sources = time.time(), _sources(source, folder.uri)
        reference = pin_reference(self.uri, folder.uri)
        config, model = reference_setup(reference, run.model)
        cache = run.cache or join(folder.uri, "features")
        index = None
        if protected:
            with _bar(run, None, "protected set") as bar:
                built = protected_index(protected, cache, bar.update)
            index = built.save(join(folder.uri, "protected.parquet"))
        shards, counts = _featurize(sources, config, folder.uri, run, model, allow_empty=True)
        extra = {"reference_from": self.uri, **counts}

        def produce(out: str, report: bool = True) -> dict[str, str]:
            pinned = pin_reference(self.uri, out)
            copy = write_bytes(join(out, "protected.parquet"), read_bytes(index)) if index else None
            outputs = score.screen(shards, pinned, out, started, sources, policy, copy, **extra)
            if report:
                unet = _model(run, model, config)
                outputs["report"] = pages.screen_report(out, pinned, unet)
            return outputs

        return ScreenResult(produce(folder.uri, report=False), produce, folder)

    def audit(self, source: Source, *, fdr: float = 0.1, run: Run | None = None) -> AuditResult:
        """Rank every image of `source` against this reference and estimate its
        contaminated fraction from conformal p-values → `AuditResult` (suspects chosen at
        false-discovery rate `fdr`)."""
        run = run or Run()
        folder = _Folder.of(run)
        sources = _sources(source, folder.uri)
        reference = pin_reference(self.uri, folder.uri)
        config, model = reference_setup(reference, run.model)
        shards, counts = _featurize(sources, config, folder.uri, run, model)
        extra = {"reference_from": self.uri, **counts}

        def produce(out: str, report: bool = True) -> dict[str, str]:
            pinned = pin_reference(self.uri, out)
            outputs = score.audit(shards, config, out, "auto", 5, sources, pinned, fdr, **extra)
            if report:
                outputs["report"] = pages.audit_report(out)
            return outputs

        return AuditResult(produce(folder.uri, report=False), produce, folder)


def load_reference(uri: str | Path) -> TrustedReference:
    """A reference fitted by `fit_reference` or the CLI's `fit-reference` (its JSON URI)."""
    return TrustedReference(str(uri), _load_reference(str(uri)))


def fit_reference(
    source: Source,
    *,
    config: FeatureConfig | None = None,
    density: str = "auto",
    target_fpr: float = 0.05,
    holdout: float = 0.2,
    grouping: Grouping | str | None = None,
    run: Run | None = None,
    **settings: Any,
) -> TrustedReference:
    """Fit a reference on trusted in-distribution images → `TrustedReference`.

    `settings` are `FeatureConfig` fields (method, timesteps, seed, dtype, crop, …; or give
    `config`; dtype defaults to auto: bfloat16 where `run.device` computes it natively,
    recorded in the reference); the density is fitted on all but `holdout` of the images,
    the rest calibrate the threshold at `target_fpr`. `grouping` ("parent", a regular
    expression on paths, or a `Grouping` of a Parquet column) holds back whole groups, so
    the threshold holds for groups never seen."""
    run = run or Run()
    if config is not None and settings:
        raise ConfigError(f"give config or settings, not both: {', '.join(sorted(settings))}")
    config = resolve_dtype(
        config or FeatureConfig.parse(**{"dtype": "auto", **settings}), run.device
    )
    check_fit_options(density, config.method, target_fpr, holdout)
    groups = Grouping(by=grouping) if isinstance(grouping, str) else grouping
    folder = _Folder.of(run)
    sources, model = _sources(source, folder.uri), run.model or "default"

    def check(listing: str) -> None:
        check_split(listing, groups, holdout, config.seed, target_fpr)

    shards, _ = _featurize(sources, config, folder.uri, run, model, check=check)
    uri = fit_reference_shards(
        shards, config, folder.uri, density, target_fpr, holdout, groups, model
    )
    return TrustedReference(uri, _load_reference(uri), folder)


def evaluate(
    reference: TrustedReference | str | Path,
    in_dist: Source,
    ood: Mapping[str, Source],
    *,
    run: Run | None = None,
) -> EvaluateResult:
    """AUROC (with its interval), FPR@95 and AUPR of each named OOD set against an
    in-distribution test set, on the reference's features → `EvaluateResult`."""
    run = run or Run()
    ref = reference if isinstance(reference, TrustedReference) else load_reference(reference)
    folder = _Folder.of(run)
    pinned = pin_reference(ref.uri, folder.uri)
    config, model = reference_setup(pinned, run.model)

    def shards_of(source: Source, name: str) -> list[str]:
        sources = _sources(source, join(folder.uri, "inputs", name))
        return _featurize(sources, config, folder.uri, run, model)[0]

    id_shards = shards_of(in_dist, "in_dist")
    ood_shards = {name: shards_of(source, name) for name, source in ood.items()}

    def produce(out: str, report: bool = True) -> dict[str, str]:
        metrics = score.evaluate(id_shards, ood_shards, pin_reference(ref.uri, out), out)
        outputs = {"metrics": metrics}
        if report:
            outputs["report"] = pages.evaluate_report(metrics, out)
        return outputs

    return EvaluateResult(produce(folder.uri, report=False), produce, folder)

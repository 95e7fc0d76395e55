"""The benchmark matrix: each in-distribution set against every other, methods side by side.

A spec (YAML) names datasets, pairs, methods and sizes. Each dataset splits by content hash
into `fit`, `validation` and `test` (a set with train and test files splits its train file
into fit and validation); an image's split never depends on its name or on what else is
listed, and identical images never straddle two splits.
Features come from the same shards and content cache as `screen`. Per (method, in-dist
set) a density is fitted on `fit`, then every set's `validation` and `test` images are
scored: AUROC (bootstrap 95% interval, paired across methods), FPR@95 and AUPR per pair.
The default is chosen on validation pairs only; a previous run's results flag regressions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from scipy.stats import rankdata

from diffpath.config import FeatureConfig
from diffpath.contamination import audit_scores
from diffpath.density import make_density
from diffpath.errors import ConfigError
from diffpath.identity import content_hash
from diffpath.metrics import auroc, ood_metrics, percentile_interval
from diffpath.reference import fit_reference
from diffpath.shards import ShardCounts, feature_matrix, read_shards
from diffpath.sources import (
    Grouping,
    ImageRef,
    Listing,
    list_source,
    listing_id,
    read_refs,
    write_listing,
)
from diffpath.storage import (
    exists,
    join,
    latest_pointer,
    read_bytes,
    read_json,
    read_parquet,
    write_json,
    write_parquet,
)

__all__ = [
    "BenchmarkSpec",
    "Matrix",
    "audit_accuracy",
    "bootstrap_aurocs",
    "compare",
    "evaluate_matrix",
    "feature_jobs",
    "load_features",
    "load_spec",
    "method_costs",
    "previous_results",
    "resample",
    "split_refs",
    "store_splits",
    "write_benchmark",
]

ROLES = ("fit", "validation", "test")
SPLITS = ("validation", "test")  # where images are scored


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetSpec(_Spec):
    """One image set: a single `source` (split by fractions) or `train` and `test` files."""

    source: str | None = None
    train: str | None = None
    test: str | None = None
    center_crop: int | None = Field(None, ge=8, description="crop side before resizing")

    @model_validator(mode="after")
    def _one_layout(self) -> DatasetSpec:
        if (self.source is None) == (self.train is None or self.test is None):
            raise ValueError("give either `source`, or both `train` and `test`")
        return self


class MethodSpec(_Spec):
    """A feature config (fields of `FeatureConfig`) and the density fitted on it."""

    label: str = ""
    config: dict[str, Any] = {}
    density: str = "auto"


class Sizes(_Spec):
    """Images per dataset and role (fewer where a set has fewer)."""

    fit: int = Field(400, ge=2)
    validation: int = Field(200, ge=2)
    test: int = Field(200, ge=2)


class AuditSpec(_Spec):
    """Contaminants mixed into a clean set's test images at known rates."""

    clean: str
    contaminants: list[str]
    rates: list[float] = [0.0, 0.01, 0.05, 0.15]
    group_column: str | None = Field(
        None, description="hold back whole groups (e.g. identities) to calibrate the reference"
    )


class BenchmarkSpec(_Spec):
    """What a benchmark run measures; see benchmarks/shared-data.yaml."""

    name: str = "benchmark"
    data_root: str = "."
    model: str = "default"
    datasets: dict[str, DatasetSpec]
    pairs: list[tuple[str, str]] | None = None
    methods: dict[str, MethodSpec]
    ablations: dict[str, MethodSpec] = {}
    baseline: str = "diffpath6d"
    candidates: list[str] | None = None
    sizes: Sizes = Sizes()
    full_sizes: Sizes | None = None
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.3, gt=0, lt=1)
    bootstrap: int = Field(1000, ge=0)
    seed: int = 0
    tolerance: float = Field(0.01, ge=0)
    audit: AuditSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> BenchmarkSpec:
        names = set(self.datasets)
        for a, b in self.pair_list():
            if a not in names or b not in names or a == b:
                raise ValueError(f"pair ({a}, {b}) needs two different datasets of {sorted(names)}")
        if set(self.methods) & set(self.ablations):
            raise ValueError(
                f"names in both methods and ablations: {set(self.methods) & set(self.ablations)}"
            )
        for name in [self.baseline, *(self.candidates or [])]:
            if name not in self.methods:
                raise ValueError(f"{name!r} is not one of the methods {sorted(self.methods)}")
        if self.audit and not {self.audit.clean, *self.audit.contaminants} <= names:
            raise ValueError("the audit's sets must be datasets of the spec")
        return self

    def pair_list(self) -> list[tuple[str, str]]:
        """(in-distribution, OOD) pairs: as given, else every set against every other."""
        if self.pairs is not None:
            return [tuple(p) for p in self.pairs]
        return [(a, b) for a in self.datasets for b in self.datasets if a != b]

    def run_methods(self, ablations: bool) -> dict[str, MethodSpec]:
        return {**self.methods, **(self.ablations if ablations else {})}

    def feature_config(self, method: MethodSpec, dataset: str) -> FeatureConfig:
        """The method's config on a dataset: the dataset's crop, the spec's model."""
        crop = self.datasets[dataset].center_crop
        return FeatureConfig.parse(**{"model": self.model, **method.config, "center_crop": crop})

    def uri(self, path: str) -> str:
        """A dataset path: URIs and absolute paths as given, others under `data_root`."""
        return path if "://" in path or Path(path).is_absolute() else join(self.data_root, path)


def load_spec(uri: str, data_root: str | None = None, model: str | None = None) -> BenchmarkSpec:
    """Read a spec file (any URI); a relative `data_root` is relative to the spec's folder.
    `data_root` and `model` replace the spec's own when given."""
    import yaml

    try:
        values = yaml.safe_load(read_bytes(uri))
    except yaml.YAMLError as err:
        raise ConfigError(f"cannot read benchmark spec {uri}: {err}".splitlines()[0]) from err
    if not isinstance(values, dict):
        raise ConfigError(f"benchmark spec {uri} must hold a mapping")
    root = data_root or values.get("data_root", ".")
    if data_root is None and "://" not in root and not Path(root).is_absolute():
        folder = uri.rsplit("/", 1)[0] if "/" in uri else "."
        root = join(folder, root) if "://" in uri else str((Path(folder) / root).resolve())
    try:
        return BenchmarkSpec(
            **{**values, "data_root": root, "model": model or values.get("model", "default")}
        )
    except ValidationError as err:
        reasons = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"invalid benchmark spec {uri}: " + "; ".join(reasons)) from err


def _identities(refs: Sequence[ImageRef], chunk: int = 4096) -> list[str]:
    """Each ref's content hash (read in chunks, never all bytes at once); an unreadable
    one keeps its locator, and its shard records the failure."""
    keys = []
    for start in range(0, len(refs), chunk):
        part = refs[start : start + chunk]
        contents = read_refs(part)
        keys += [
            content_hash(c) if isinstance(c, bytes) else r.locator
            for r, c in zip(part, contents, strict=True)
        ]
    return keys


def _hash64(*parts: object) -> int:
    """64 bits of the sha256 of `parts` joined by NUL: no two lists of parts share it."""
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _unit(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from an image's content hash: its place in the split —
    the same in any file or under any name, and identical images always go together."""
    return _hash64(seed, key) / 2**64


def split_refs(spec: BenchmarkSpec, name: str, sizes: Sizes) -> dict[str, list[ImageRef]]:
    """{role: refs} of a dataset, each role capped at its size, in listing order."""
    dataset = spec.datasets[name]
    roles: dict[str, list[tuple[ImageRef, str]]] = {role: [] for role in ROLES}
    if dataset.source is not None:
        test, validation = spec.test_fraction, spec.test_fraction + spec.validation_fraction
        refs = list_source(spec.uri(dataset.source))
        for ref, key in zip(refs, _identities(refs), strict=True):
            u = _unit(spec.seed, key)
            role = "test" if u < test else "validation" if u < validation else "fit"
            roles[role].append((ref, key))
    else:
        refs = list_source(spec.uri(dataset.train))
        for ref, key in zip(refs, _identities(refs), strict=True):
            role = "validation" if _unit(spec.seed, key) < spec.validation_fraction else "fit"
            roles[role].append((ref, key))
        refs = list_source(spec.uri(dataset.test))
        roles["test"] = list(zip(refs, _identities(refs), strict=True))
    chosen = {}
    for role, members in roles.items():
        keep = sorted(members, key=lambda m: _unit(spec.seed + 1, m[1]))[: getattr(sizes, role)]
        chosen[role] = sorted((ref for ref, _ in keep), key=lambda r: (r.uri, r.row or 0))
        if len(chosen[role]) < 2:
            raise ConfigError(f"dataset {name!r} has {len(chosen[role])} images for {role}")
    return chosen


def store_splits(
    spec: BenchmarkSpec, name: str, sizes: Sizes, out: str, shard_size: int
) -> dict[str, Listing]:
    """Split a dataset and store each role's listing under `out/listings/`."""
    listings = {}
    for role, refs in split_refs(spec, name, sizes).items():
        lid = listing_id(refs)
        uri = write_listing(refs, join(out, "listings", f"{lid}.parquet"), shard_size)
        listings[role] = Listing(uri=uri, listing_id=lid, n_images=len(refs), shard_size=shard_size)
    return listings


def resample(seed: int, split: str, name: str, n: int, n_boot: int) -> np.ndarray:
    """(n_boot, n) bootstrap indices of one set's images in one split: drawn once, and
    shared by every pair and method that scores those images, so a mean over pairs and a
    difference between methods keep the correlations their shared images give them."""
    return np.random.default_rng(_hash64(seed, split, name)).integers(0, n, (n_boot, n))


def bootstrap_aurocs(
    id_scores: np.ndarray, ood_scores: np.ndarray, id_index: np.ndarray, ood_index: np.ndarray
) -> np.ndarray:
    """AUROC of each bootstrap resample (a row of each index array; Mann–Whitney on ranks)."""
    n0, n1 = id_index.shape[1], ood_index.shape[1]
    ranks = rankdata(np.hstack([id_scores[id_index], ood_scores[ood_index]]), axis=1)
    return (ranks[:, n0:].sum(1) - n1 * (n1 + 1) / 2) / (n0 * n1)


Features = Mapping[tuple[str, str, str], tuple[pa.Table, np.ndarray]]  # (set, role, method)


@dataclass
class Matrix:
    """A benchmark's measurements: one row per (split, in-dist, OOD, method), the scores
    behind them, and the per-method summary."""

    rows: list[dict[str, Any]]
    scores: pa.Table
    methods: list[dict[str, Any]]
    chosen: str


def evaluate_matrix(
    spec: BenchmarkSpec,
    methods: Mapping[str, MethodSpec],
    features: Features,
    costs: Mapping[str, dict[str, float]],
) -> Matrix:
    """Fit, score and measure every (method, pair) on validation and test images.

    `features[(set, role, method)]` = (locator rows, matrix); `costs[method]` holds its
    UNet evaluations per image and measured seconds. Intervals resample test images (each
    set's once per replicate, shared by pairs and methods); the density fit stays fixed."""
    rows, score_frames, boots = [], [], {}
    first = next(iter(methods))
    index = {
        (split, name): resample(
            spec.seed,
            split,
            name,
            len(features[name, split, first][1]),
            spec.bootstrap if split == "test" else 0,  # intervals: test only
        )
        for split in SPLITS
        for name in dict.fromkeys(n for pair in spec.pair_list() for n in pair)
    }
    for m, method in methods.items():
        for a in dict.fromkeys(a for a, _ in spec.pair_list()):
            config = spec.feature_config(method, a)
            density = make_density(method.density, config.method).fit(features[a, "fit", m][1])
            scored = {}
            for split in SPLITS:
                for name in dict.fromkeys([a, *(b for x, b in spec.pair_list() if x == a)]):
                    locators, matrix = features[name, split, m]
                    scored[split, name] = density.anomaly_score(matrix)
                    score_frames.append(
                        locators.select(["uri", "row", "path", "sha256"])
                        .append_column("score", pa.array(scored[split, name]))
                        .add_column(0, "method", pa.array([m] * len(locators), pa.string()))
                        .add_column(1, "in_dist", pa.array([a] * len(locators), pa.string()))
                        .add_column(2, "split", pa.array([split] * len(locators), pa.string()))
                        .add_column(3, "dataset", pa.array([name] * len(locators), pa.string()))
                    )
            for split in SPLITS:
                for x, b in spec.pair_list():
                    if x != a:
                        continue
                    id_s, ood_s = scored[split, a], scored[split, b]
                    boot = bootstrap_aurocs(id_s, ood_s, index[split, a], index[split, b])
                    boots[split, a, b, m] = boot
                    low, high = percentile_interval(boot)
                    rows.append(
                        {
                            "split": split,
                            "in_dist": a,
                            "ood": b,
                            "method": m,
                            **ood_metrics(id_s, ood_s),
                            "auroc_low": low,
                            "auroc_high": high,
                            "n_id": len(id_s),
                            "n_ood": len(ood_s),
                            "unet_evals": costs[m]["unet_evals"],
                        }
                    )
    summary = _method_summary(spec, methods, rows, boots, costs)
    candidates = spec.candidates or list(spec.methods)
    chosen = max(
        candidates, key=lambda m: next(s["validation_auroc"] for s in summary if s["method"] == m)
    )
    return Matrix(rows, pa.concat_tables(score_frames), summary, chosen)


def _method_summary(
    spec: BenchmarkSpec,
    methods: Mapping[str, MethodSpec],
    rows: list[dict[str, Any]],
    boots: Mapping[tuple[str, str, str, str], np.ndarray],
    costs: Mapping[str, dict[str, float]],
) -> list[dict[str, Any]]:
    """Per method: mean AUROC (validation, test) with bootstrap intervals, pairs won
    against the baseline, and the mean difference to it with its paired interval."""
    pairs = spec.pair_list()
    test = {(r["in_dist"], r["ood"], r["method"]): r for r in rows if r["split"] == "test"}
    summary = []
    for m, method in methods.items():
        mean_boot = np.mean([boots["test", a, b, m] for a, b in pairs], axis=0)
        diff_boot = mean_boot - np.mean(
            [boots["test", a, b, spec.baseline] for a, b in pairs], axis=0
        )
        aurocs = [test[a, b, m]["auroc"] for a, b in pairs]
        base = [test[a, b, spec.baseline]["auroc"] for a, b in pairs]
        validation = [r["auroc"] for r in rows if r["split"] == "validation" and r["method"] == m]
        summary.append(
            {
                "method": m,
                "label": method.label or m,
                "test_auroc": float(np.mean(aurocs)),
                "test_auroc_interval": percentile_interval(mean_boot),
                "validation_auroc": float(np.mean(validation)),
                "test_fpr95": float(np.mean([test[a, b, m]["fpr95"] for a, b in pairs])),
                "wins_vs_baseline": int(sum(x > y for x, y in zip(aurocs, base, strict=True))),
                "diff_vs_baseline": float(np.mean(aurocs) - np.mean(base)),
                "diff_interval": percentile_interval(diff_boot),
                **costs[m],
            }
        )
    return summary


LATEST = "latest"


def previous_results(previous: str | None, template: str) -> str | None:
    """`previous` as a results.parquet URI: a folder holds one; "latest" is the run that
    latest.json beside a dated `out` points at (none yet: no comparison). Checked before
    any work: a previous run that is not there is a mistake, not a pass."""
    if previous is None:
        return None
    if previous == LATEST:
        pointer = latest_pointer(template)
        if pointer is None:
            raise ConfigError("--previous latest needs a dated --out (with {date})")
        return join(read_json(pointer)["out"], "results.parquet") if exists(pointer) else None
    uri = previous if previous.endswith(".parquet") else join(previous, "results.parquet")
    if not exists(uri):
        raise ConfigError(f"previous results {uri} do not exist; give a benchmark's output")
    return uri


def compare(
    rows: Sequence[Mapping[str, Any]], previous: Sequence[Mapping[str, Any]], tolerance: float
) -> tuple[list[dict[str, Any]], list[str]]:
    """Test-split AUROC deltas against a previous run's rows → (deltas, regressions): a drop
    larger than `tolerance` and than the current interval's upper half is a regression."""
    before = {(r["in_dist"], r["ood"], r["method"]): r for r in previous if r["split"] == "test"}
    deltas, regressions = [], []
    for row in rows:
        key = (row["in_dist"], row["ood"], row["method"])
        if row["split"] != "test" or key not in before:
            continue
        old, new = before[key]["auroc"], row["auroc"]
        allowed = max(tolerance, row["auroc_high"] - new)
        regressed = old - new > allowed
        deltas.append(
            {
                "in_dist": key[0],
                "ood": key[1],
                "method": key[2],
                "previous": old,
                "auroc": new,
                "delta": new - old,
                "allowed_drop": allowed,
                "regression": regressed,
            }
        )
        if regressed:
            regressions.append(
                f"{key[2]}: {key[0]} vs {key[1]} AUROC {old:.3f} -> {new:.3f} "
                f"(drop {old - new:.3f} > allowed {allowed:.3f})"
            )
    return deltas, regressions


def audit_accuracy(
    spec: BenchmarkSpec, method: str, features: Features, density: str = "auto"
) -> list[dict[str, Any]]:
    """Contaminants mixed into the clean set's test images at each rate: detection AUROC,
    suspects' precision/recall and the estimated fraction, with a reference (fitted as
    `fit-reference --group-column` does on the clean set's fit and validation images,
    holding back 30% to calibrate) and without one."""
    audit = spec.audit
    if audit is None:
        raise ConfigError(f"benchmark {spec.name} has no audit section")
    config = spec.feature_config(spec.run_methods(True)[method], audit.clean)
    clean = features[audit.clean, "test", method][1]
    pool = np.vstack([features[c, "test", method][1] for c in audit.contaminants])
    roles = [features[audit.clean, role, method] for role in ("fit", "validation")]
    trusted = np.vstack([matrix for _, matrix in roles])
    groups = None
    if audit.group_column:
        grouping = Grouping(column=audit.group_column)
        groups = grouping.labels(pa.concat_tables([rows for rows, _ in roles]))
    reference = fit_reference(trusted, config, "", density, 0.05, 0.3, spec.seed, groups)
    rng = np.random.default_rng(spec.seed)
    results = []
    for rate in audit.rates:
        n_bad = min(len(pool), round(rate * len(clean) / (1 - rate)))
        mixed = np.vstack([clean, pool[rng.choice(len(pool), n_bad, replace=False)]])
        truth = np.r_[np.zeros(len(clean), bool), np.ones(n_bad, bool)]
        for name, against in (("reference", reference), ("no reference", None)):
            scores, _, estimate = audit_scores(mixed, config.method, density, 5, spec.seed, against)
            hits = int((estimate.suspects & truth).sum())
            results.append(
                {
                    "method": method,
                    "rate": n_bad / len(mixed),
                    "n_images": len(mixed),
                    "detection_auroc": auroc(scores[~truth], scores[truth]) if n_bad else None,
                    "precision": hits / max(1, int(estimate.suspects.sum())),
                    "recall": hits / n_bad if n_bad else None,
                    **estimate.as_dict(),
                    "estimator": f"{estimate.method} ({name})",
                }
            )
    return results


Job = tuple[str, str]  # (listing id, config hash): one feature run over one listing


def feature_jobs(
    spec: BenchmarkSpec,
    methods: Mapping[str, MethodSpec],
    splits: Mapping[str, Mapping[str, Listing]],
) -> tuple[dict[Job, tuple[FeatureConfig, Listing]], dict[tuple[str, str, str], Job]]:
    """The distinct feature runs (methods with one config on one listing share a run) and
    which run serves each (set, role, method)."""
    jobs, uses = {}, {}
    for m, method in methods.items():
        for name, roles in splits.items():
            config = spec.feature_config(method, name)
            for role, listing in roles.items():
                job = (listing.listing_id, config.config_hash())
                jobs.setdefault(job, (config, listing))
                uses[name, role, m] = job
    return jobs, uses


def method_costs(
    spec: BenchmarkSpec,
    methods: Mapping[str, MethodSpec],
    counts: Mapping[tuple[str, str, str], Sequence[ShardCounts]],
) -> dict[str, dict[str, float]]:
    """Per method: UNet evaluations per image, and the seconds and features computed by its
    shard tasks (shared by methods with one config; near 0 where the cache served)."""
    first = next(iter(spec.datasets))
    return {
        m: {
            "unet_evals": spec.feature_config(method, first).unet_evals,
            "seconds": sum(c.seconds for k, cs in counts.items() if k[2] == m for c in cs),
            "features_computed": sum(
                c.n_computed for k, cs in counts.items() if k[2] == m for c in cs
            ),
        }
        for m, method in methods.items()
    }


def load_features(
    spec: BenchmarkSpec,
    methods: Mapping[str, MethodSpec],
    shards: Mapping[tuple[str, str, str], Sequence[str]],
) -> tuple[dict[tuple[str, str, str], tuple[pa.Table, np.ndarray]], str, dict[str, int]]:
    """{(set, role, method): (locator rows, features)} from the run's shards, the model
    fingerprint (one model for all) and {"set/role": images that could not be read}."""
    features, models, unreadable = {}, set(), {}
    for (name, role, m), uris in shards.items():
        config = spec.feature_config(methods[m], name)
        frame, model_id = read_shards(list(uris), config)
        features[name, role, m] = feature_matrix(frame, config)
        models.add(model_id)
        if failed := frame.num_rows - len(features[name, role, m][0]):
            unreadable[f"{name}/{role}"] = failed
    if len(models) != 1:
        raise ConfigError(f"benchmark features come from several models: {sorted(models)}")
    return features, models.pop(), unreadable


def write_benchmark(
    spec: BenchmarkSpec,
    methods: Mapping[str, MethodSpec],
    shards: Mapping[tuple[str, str, str], Sequence[str]],
    costs: Mapping[str, dict[str, float]],
    out: str,
    previous: str | None = None,
    **extra: Any,
) -> dict[str, str]:
    """Measure the matrix (and the audit) from a run's shards and write results.parquet,
    scores.parquet and summary.json under `out`; `previous` (an earlier results.parquet)
    adds deltas and regressions to the summary."""
    features, model_id, unreadable = load_features(spec, methods, shards)
    matrix = evaluate_matrix(spec, methods, features, costs)
    audits = []
    if spec.audit:
        for m in dict.fromkeys([matrix.chosen, spec.baseline]):
            audits += audit_accuracy(spec, m, features, methods[m].density)
    deltas, regressions = [], []
    if previous:
        deltas, regressions = compare(
            matrix.rows, read_parquet(previous).to_pylist(), spec.tolerance
        )
    summary = {
        "name": spec.name,
        "model_id": model_id,
        "baseline": spec.baseline,
        "chosen_default": matrix.chosen,
        "chosen_on": "mean validation AUROC over the pairs",
        "methods": matrix.methods,
        "audit": audits,
        "previous": previous,
        "deltas": deltas,
        "regressions": regressions,
        "unreadable": unreadable,  # listed but not scored: the shards' `error` column says why
        "images": {
            f"{n}/{r}": len(features[n, r, m][0]) for n, r, m in features if m == spec.baseline
        },
        "spec": spec.model_dump(mode="json"),
        **extra,
    }
    return {
        "results": write_parquet(pa.Table.from_pylist(matrix.rows), join(out, "results.parquet")),
        "scores": write_parquet(matrix.scores, join(out, "scores.parquet")),
        "summary": write_json(summary, join(out, "summary.json")),
    }

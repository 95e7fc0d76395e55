"""A benchmark spec (YAML): datasets, (in-distribution, OOD) pairs, methods, sizes and the
audit, with paths resolved against a data root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from diffpath.config import FeatureConfig
from diffpath.errors import ConfigError
from diffpath.io.storage import (
    join,
    read_bytes,
)

ROLES = ("fit", "validation", "test")
SPLITS = ("validation", "test")  # where images are scored


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetSpec(_Spec):
    """One image set: a single `source` (split by fractions) or `train` and `test` files."""

    source: str | None = None
    train: str | None = None
    test: str | None = None
    crop: str | None = Field(
        None, description="region kept before resizing, as FeatureConfig.crop (celeba-face)"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_pixel_crops(cls, values: Any) -> Any:
        if isinstance(values, dict) and "center_crop" in values:
            raise ValueError(
                "center_crop (pixels) crops another region at each resolution: use crop, "
                "a name (crop: celeba-face for CelebA's 140 px of 178x218) or a fraction"
            )
        return values

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
    bootstrap: int = Field(
        1000, ge=100, description="resamples for the test AUROC intervals (100 at least)"
    )
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
        """The method's config on a dataset: its settings with the dataset's crop."""
        crop = self.datasets[dataset].crop
        return FeatureConfig.parse(**{**method.config, "crop": crop})

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

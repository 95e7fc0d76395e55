"""The one configuration object that describes a feature run, and its stable hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from diffpath.errors import ConfigError
from diffpath.methods import METHODS, get_method

__all__ = [
    "CROPS",
    "DEFAULT_UNET_CHANNELS",
    "Crop",
    "CropBox",
    "CropOrBox",
    "FeatureConfig",
    "parse_crop",
    "read_config_file",
]

CropBox = tuple[float, float, float, float]
"""(left, top, right, bottom) as fractions of the width and height of the stored image."""

# Named crops. CelebA's 140×140 face at (19, 39) of the aligned 178×218 frame, as fractions:
# the same face at any resolution, and in frames squashed to 64×64 (celeba-extra).
CROPS: dict[str, CropBox] = {"celeba-face": (19 / 178, 39 / 218, 159 / 178, 179 / 218)}


def parse_crop(crop: str | CropBox) -> CropBox | float:
    """A crop as a box of fractions, or a float f: the central square f × the short side.

    Given by name (``celeba-face``), as a fraction of the short side (``"0.8"``), or as a
    box of fractions (``"0.1,0.2,0.9,0.8"`` or a 4-tuple). Fractions make a crop mean the
    same region at every resolution.
    """
    if isinstance(crop, str) and crop in CROPS:
        return CROPS[crop]
    try:
        values = tuple(float(v) for v in (crop.split(",") if isinstance(crop, str) else crop))
    except ValueError:
        values = ()
    if len(values) == 1 and 0 < values[0] <= 1:
        return values[0]
    if len(values) == 4 and 0 <= values[0] < values[2] <= 1 and 0 <= values[1] < values[3] <= 1:
        return values  # type: ignore[return-value]
    raise ConfigError(
        f"crop {crop!r}: give a name ({', '.join(CROPS)}), a fraction of the short side "
        "(0.8) or a box of fractions left,top,right,bottom (0.1,0.2,0.9,0.8)"
    )


def _valid_crop(crop: str | CropBox | None) -> str | CropBox | None:
    """A pydantic check: `parse_crop` refuses (a `ValueError`) what is not a crop."""
    if crop is not None:
        parse_crop(crop)
    return crop


Crop = Annotated[str | None, AfterValidator(_valid_crop)]
"""A crop as configs and flags give it: a name, a fraction of the short side, or a box."""
CropOrBox = Annotated[str | CropBox | None, AfterValidator(_valid_crop)]
"""The same, or a box as a 4-tuple (training recipes)."""

DEFAULT_UNET_CHANNELS = (64, 128, 256)  # the bundled model's UNet blocks; `train`'s default

# Run settings that configs before 0.4 held (never hashed): where the weights are and how
# big a batch is belong to the run (`RunOptions`), so stored configs drop them on reading.
RUN_FIELDS = ("model", "batch_size", "forward_batch")

# Bumped whenever the same settings give other feature values (2: counter-based noise),
# so the cache never serves features of an older algorithm.
FEATURES_VERSION = 2

# Fields added after FEATURES_VERSION 2, hashed only when they differ from these values,
# so every config that existed before keeps its hash (and its cache and references).
NEUTRAL_VALUES = {"draws": 1, "resize_via": None, "crop": None}


class FeatureConfig(BaseModel):
    """Everything that determines the features of an image.

    `method` picks DiffPathV2 (``diffpathv2``: SSIM-weighted score error, 6-D), the
    DiffPath baseline on the DDIM-inversion path (``diffpath6d``/``diffpath1d``), or both
    side by side (``diffpathv2+6d``: 12-D, the default: K = 5 and 2 noise draws unless
    given, 15 UNet evaluations per image). V2 features average `draws` noise draws.
    Timesteps index the model's training schedule; ``t_end=None`` means its last step.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str = Field("diffpathv2+6d", description="feature method: " + " | ".join(METHODS))
    timesteps: int = Field(10, ge=2, le=1000, description="K timesteps (or N DDIM steps)")
    t_start: int = Field(0, ge=0)
    t_end: int | None = Field(None, ge=1, description="last timestep; None = model's last")
    spacing: Literal["leading", "linear", "quadratic"] = "leading"
    seed: int = Field(0, ge=0)
    shared_noise: bool = Field(True, description="one noise draw per image shared by all t")
    image_size: int = Field(32, ge=8, le=1024)
    crop: Crop = Field(
        None,
        description="region to keep, the same at every resolution: a name (celeba-face: the "
        "face of an aligned CelebA frame), a fraction of the short side (0.8), or a box of "
        "fractions left,top,right,bottom",
    )
    center_crop: int | None = Field(
        None, ge=8, description="square crop in pixels (references before 0.3; use crop)"
    )
    resize_via: int | None = Field(
        None,
        ge=8,
        description="resize to this size first, then up to image_size (DiffPath's protocol "
        "for 64-px models: 32)",
    )
    ssim_window: int = Field(5, ge=3, le=31)
    ssim_weighting: bool = True
    draws: int = Field(1, ge=1, le=64, description="noise draws averaged per V2 feature")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32",
        description="auto: bfloat16 where the hardware computes it natively, else float32; "
        "resolved when a fit starts (`model.diffusion.resolve_dtype`) and recorded",
    )

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, values: Any) -> Any:
        """`timesteps` and `draws` not given (or None) take the method's defaults."""
        if not isinstance(values, dict):
            return values
        method = values.get("method") or cls.model_fields["method"].default
        given = {
            k: v for k, v in values.items() if v is not None or k not in ("timesteps", "draws")
        }
        known = METHODS.get(method) if isinstance(method, str) else None
        return {**(known.defaults if known else {}), **given}

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        get_method(method)  # an unknown name is refused in one line
        return method

    @model_validator(mode="after")
    def _check(self) -> FeatureConfig:
        if self.ssim_window % 2 == 0:
            raise ValueError(f"ssim_window must be odd, got {self.ssim_window}")
        if self.crop is not None and self.center_crop is not None:
            raise ValueError("give crop or center_crop, not both")
        if self.resize_via is not None and self.resize_via >= self.image_size:
            raise ValueError(
                f"resize_via ({self.resize_via}) must be below image_size ({self.image_size})"
            )
        if self.t_end is not None and self.t_end - self.t_start + 1 < self.timesteps:
            raise ValueError(
                f"timestep range [{self.t_start}, {self.t_end}] holds fewer than "
                f"{self.timesteps} distinct timesteps"
            )
        return self

    @classmethod
    def stored(cls, values: dict[str, Any]) -> tuple[FeatureConfig, str | None]:
        """A config as a reference or shard stored it → (config, the model location it
        carried before 0.4, if any): run settings stored with it are dropped."""
        values = dict(values)
        model = values.get("model")
        for name in RUN_FIELDS:
            values.pop(name, None)
        return cls.parse(**values), model

    @classmethod
    def parse(cls, **values: object) -> FeatureConfig:
        """Build a config, turning pydantic's validation error into `ConfigError`."""
        try:
            return cls(**values)
        except ValidationError as err:
            reasons = [
                f"{'.'.join(map(str, e['loc'])) or 'config'}: "
                + str(e["msg"]).removeprefix("Value error, ")
                for e in err.errors()
            ]
            raise ConfigError("invalid feature config: " + "; ".join(reasons)) from err

    def parts(self) -> tuple[FeatureConfig, ...]:
        """The single-method configs whose features a combination concatenates (else self);
        each part is the config a run of that method alone would have."""
        combination = get_method(self.method)
        if not combination.parts:
            return (self,)
        fields = FeatureConfig.model_fields
        return tuple(
            self.model_copy(
                update={
                    "method": part,
                    **{f: fields[f].default for f in combination.reads if f not in reads},
                }
            )
            for part, reads in ((p, get_method(p).reads) for p in combination.parts)
        )

    @property
    def unet_evals(self) -> int:
        """UNet evaluations per image: the cost of a feature, whatever the hardware."""
        return sum(get_method(p.method).evals(p) for p in self.parts())

    @property
    def geometry(self) -> dict[str, Any]:
        """How stored image bytes become the model's input: `decode_image`'s keywords."""
        return {
            "size": self.image_size,
            "crop": self.crop,
            "center_crop": self.center_crop,
            "via": self.resize_via,
        }

    @property
    def torch_dtype(self):
        """The torch dtype the model runs in for this config."""
        import torch

        self._check_resolved()
        return getattr(torch, self.dtype)

    def _check_resolved(self) -> None:
        if self.dtype == "auto":
            raise ConfigError(
                "dtype auto is resolved for a device before features are computed "
                "(model.diffusion.resolve_dtype)"
            )

    def canonical_json(self) -> str:
        """The fields as sorted, compact JSON (those added later only when set)."""
        fields = self.model_dump(mode="json")
        for name, neutral in NEUTRAL_VALUES.items():
            if fields[name] == neutral:
                del fields[name]
        fields["features_version"] = FEATURES_VERSION
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    def config_hash(self) -> str:
        """sha256 of `canonical_json`, first 16 hex digits: goes into every output."""
        self._check_resolved()
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """`FeatureConfig` fields from a JSON or YAML file (validated when the config is built)."""
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text())  # YAML is a superset of JSON
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}".splitlines()[0]) from err
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of FeatureConfig fields")
    return values

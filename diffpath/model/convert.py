"""Convert checkpoints of openai's improved-diffusion / guided-diffusion UNet (and DiffPath's,
which is improved-diffusion's) into a diffusers model folder that `load_model` reads.

The original `UNetModel` maps one to one onto diffusers' `UNet2DModel` with scale-shift
resnets; what `UNet2DModel`'s config cannot say is kept in a small patch file beside it
(`unet/openai_patch.json`, applied by `load_model` and part of the fingerprint):

- ``timestep_scale``: improved-diffusion and DiffPath feed the net ``t · 1000 / T`` as a
  float (``rescale_timesteps``); the scale is built into the timestep embedding, so the
  pipeline's integer schedule indices give exactly the original's input.
- ``attention_heads``: a fixed ``num_heads`` over layers of different widths gives head
  widths that differ per layer, which the config's one ``attention_head_dim`` cannot say.

The schedule is kept exactly: its float64 betas go into the scheduler config
(``trained_betas``), from which `load_model` computes ᾱ_t in float64, as the original did.
ε is the first 3 of the 6 output channels (learned variance), which the pipeline takes.
Checkpoints load only as tensors (``torch.load(weights_only=True)`` or safetensors).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from diffpath.errors import ConfigError, ModelError
from diffpath.io import storage

if TYPE_CHECKING:  # torch and numpy load on first use: the CLI's --help stays fast
    import numpy as np
    import torch
    from diffusers import UNet2DModel

__all__ = [
    "PRESETS",
    "OpenAIFlags",
    "apply_patch",
    "build_unet",
    "convert_model",
    "convert_state_dict",
    "load_checkpoint",
    "original_betas",
    "read_flags",
    "unet_config",
]

PATCH_FILE = "openai_patch.json"
MAX_CHECKPOINT_BYTES = 4 * 2**30  # guided-diffusion's 256-px net is 2.2 GB in float32


class OpenAIFlags(BaseModel):
    """The flags of improved-/guided-diffusion's scripts that shape the net and its schedule
    (their `model_and_diffusion_defaults()` names). Flags that only affect training or
    sampling (dropout, use_kl, use_fp16, …) are accepted and ignored.

    `rescale_timesteps` has no default: improved-diffusion and DiffPath default to True,
    guided-diffusion to False, and a wrong guess moves every output.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    image_size: int = Field(ge=8)
    num_channels: int = Field(ge=1)
    num_res_blocks: int = Field(ge=1)
    rescale_timesteps: bool
    channel_mult: str = ""
    num_heads: int = 4
    num_heads_upsample: int = -1
    num_head_channels: int = -1
    attention_resolutions: str = "16,8"
    learn_sigma: bool = False
    class_cond: bool = False
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    use_new_attention_order: bool = False
    diffusion_steps: int = Field(1000, ge=2)
    noise_schedule: Literal["linear", "cosine"] = "linear"
    norm_num_groups: int = Field(32, ge=1, description="32 in the original code")

    @property
    def mult(self) -> tuple[int, ...]:
        """The channel multipliers, as `create_model` derives them."""
        if self.channel_mult:
            return tuple(int(m) for m in self.channel_mult.split(","))
        defaults = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
        defaults[32] = (1, 2, 2, 2)
        if self.image_size not in defaults:
            raise ConfigError(f"no default channel_mult for image_size {self.image_size}")
        return defaults[self.image_size]

    @property
    def attention_levels(self) -> frozenset[int]:
        """Levels (0 = full resolution) whose blocks have attention."""
        rates = {self.image_size // int(r) for r in self.attention_resolutions.split(",") if r}
        return frozenset(level for level in range(len(self.mult)) if 2**level in rates)

    def heads(self, width: int, upsample: bool = False) -> int:
        """Attention heads of a layer `width` channels wide, as the original computes them."""
        if self.num_head_channels != -1:
            return width // self.num_head_channels
        if upsample and self.num_heads_upsample != -1:
            return self.num_heads_upsample
        return self.num_heads


# The published models' flags (their READMEs and DiffPath's configs/celeba_model_config.yaml).
_IMPROVED_32 = {
    "image_size": 32,
    "num_channels": 128,
    "num_res_blocks": 3,
    "learn_sigma": True,
    "diffusion_steps": 4000,
    "noise_schedule": "cosine",
    "rescale_timesteps": True,
}
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "diffpath-celeba32": (
        "DiffPath's CelebA 32 px (celeba_ema_0.9999_499999.pt, Hugging Face ajrheng/diffpath)",
        _IMPROVED_32,
    ),
    "improved-cifar10-32": (
        "improved-diffusion CIFAR-10 32 px (cifar10_uncond_50M_500K.pt)",
        _IMPROVED_32,
    ),
    "improved-imagenet64": (
        "improved-diffusion ImageNet 64 px (imagenet64_uncond_100M_1500K.pt), DiffPath's "
        "ImageNet base",
        {**_IMPROVED_32, "image_size": 64},
    ),
    "guided-256-uncond": (
        "guided-diffusion 256 px unconditional (256x256_diffusion_uncond.pt)",
        {
            "image_size": 256,
            "num_channels": 256,
            "num_res_blocks": 2,
            "num_head_channels": 64,
            "attention_resolutions": "32,16,8",
            "learn_sigma": True,
            "resblock_updown": True,
            "diffusion_steps": 1000,
            "noise_schedule": "linear",
            "rescale_timesteps": False,
        },
    ),
}


def read_flags(preset: str | None = None, flags_uri: str | None = None) -> OpenAIFlags:
    """Flags of a preset, or of a JSON file: flat, or as the reference fixtures hold them
    (``flags`` with ``derived.norm_num_groups``). Exactly one of the two is given."""
    if (preset is None) == (flags_uri is None):
        raise ConfigError("give the architecture with --preset NAME or --flags FILE (one)")
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
        values = PRESETS[preset][1]
    else:
        raw = storage.read_json(flags_uri)
        if not isinstance(raw, dict):
            raise ConfigError(f"flags file {flags_uri} must hold a JSON object of flags")
        values = dict(raw.get("flags", raw))
        groups = raw.get("derived", {}).get("norm_num_groups")
        if groups is not None:
            values["norm_num_groups"] = groups
    try:
        return OpenAIFlags(**values)
    except ValidationError as err:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"invalid flags ({preset or flags_uri}): {reasons}") from err


def original_betas(flags: OpenAIFlags) -> np.ndarray:
    """β_t in float64 exactly as `get_named_beta_schedule` computes them."""
    import numpy as np

    steps = flags.diffusion_steps
    if flags.noise_schedule == "linear":
        scale = 1000 / steps
        return np.linspace(scale * 0.0001, scale * 0.02, steps, dtype=np.float64)

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array(
        [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), 0.999) for i in range(steps)]
    )


def unet_config(flags: OpenAIFlags) -> dict[str, Any]:
    """The `UNet2DModel` config of the original net (its head count per layer aside)."""
    if flags.class_cond:
        raise ConfigError("class-conditional checkpoints are not supported (class_cond=True)")
    if not flags.use_scale_shift_norm:
        raise ConfigError("only use_scale_shift_norm=True nets are supported")
    mult, attn = flags.mult, flags.attention_levels
    widths = [flags.num_channels * m for m in mult]
    plain = "Resnet{}sampleBlock2D" if flags.resblock_updown else "{}Block2D"
    down = ["AttnDownBlock2D" if i in attn else plain.format("Down") for i in range(len(mult))]
    up = ["AttnUpBlock2D" if i in attn else plain.format("Up") for i in reversed(range(len(mult)))]
    updown = "resnet" if flags.resblock_updown else "conv"
    return {
        "sample_size": flags.image_size,
        "in_channels": 3,
        "out_channels": 6 if flags.learn_sigma else 3,
        "flip_sin_to_cos": True,  # cos first
        "freq_shift": 0,
        "down_block_types": down,
        "up_block_types": up,
        "block_out_channels": widths,
        "layers_per_block": flags.num_res_blocks,
        "downsample_type": updown,
        "upsample_type": updown,
        "attention_head_dim": widths[-1] // flags.heads(widths[-1]),  # right for the middle
        "norm_num_groups": flags.norm_num_groups,
        "attn_norm_num_groups": flags.norm_num_groups,
        "norm_eps": 1e-5,
        "resnet_time_scale_shift": "scale_shift",
    }


@dataclass(frozen=True)
class _Block:
    """One module of the original net: its key prefix, its diffusers prefix and its kind."""

    source: str
    target: str
    kind: Literal["plain", "resnet", "attention", "conv"]
    heads: int = 0


def _blocks(flags: OpenAIFlags) -> list[_Block]:
    """Every module of the original `UNetModel`, in its order, with its diffusers name."""
    mult, attn, n = flags.mult, flags.attention_levels, flags.num_res_blocks
    last = len(mult) - 1
    resample = "resnet" if flags.resblock_updown else "conv"
    blocks = [
        _Block("time_embed.0", "time_embedding.linear_1", "plain"),
        _Block("time_embed.2", "time_embedding.linear_2", "plain"),
        _Block("input_blocks.0.0", "conv_in", "plain"),
    ]
    index = 1
    for level, m in enumerate(mult):
        width = flags.num_channels * m
        for j in range(n):
            target = f"down_blocks.{level}"
            blocks.append(_Block(f"input_blocks.{index}.0", f"{target}.resnets.{j}", "resnet"))
            if level in attn:
                heads = flags.heads(width)
                blocks.append(
                    _Block(
                        f"input_blocks.{index}.1", f"{target}.attentions.{j}", "attention", heads
                    )
                )
            index += 1
        if level != last:
            down = f"down_blocks.{level}.downsamplers.0"
            blocks.append(_Block(f"input_blocks.{index}.0", down, resample))
            index += 1
    middle = flags.num_channels * mult[-1]
    blocks += [
        _Block("middle_block.0", "mid_block.resnets.0", "resnet"),
        _Block("middle_block.1", "mid_block.attentions.0", "attention", flags.heads(middle)),
        _Block("middle_block.2", "mid_block.resnets.1", "resnet"),
    ]
    index = 0
    for u, level in enumerate(reversed(range(len(mult)))):
        width = flags.num_channels * mult[level]
        for j in range(n + 1):
            target, part = f"up_blocks.{u}", 1
            blocks.append(_Block(f"output_blocks.{index}.0", f"{target}.resnets.{j}", "resnet"))
            if level in attn:
                heads = flags.heads(width, upsample=True)
                blocks.append(
                    _Block(
                        f"output_blocks.{index}.1", f"{target}.attentions.{j}", "attention", heads
                    )
                )
                part = 2
            if level and j == n:
                up = f"{target}.upsamplers.0"
                blocks.append(_Block(f"output_blocks.{index}.{part}", up, resample))
            index += 1
    blocks += [
        _Block("out.0", "conv_norm_out", "plain"),
        _Block("out.2", "conv_out", "plain"),
    ]
    return blocks


# Inside a residual block: the original's sub-module names → diffusers' `ResnetBlock2D`.
_RESNET = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_CONV = {"op": "conv", "conv": "conv"}  # Downsample.op, Upsample.conv


def _split_qkv(tensor: torch.Tensor, heads: int, legacy: bool) -> tuple[torch.Tensor, ...]:
    """q, k, v rows of a fused 1×1 qkv projection. Legacy order (improved-diffusion,
    guided-diffusion's default) interleaves per head: [head][q,k,v][d]; the new order is
    [q,k,v][head][d]."""
    width = tensor.shape[0] // 3
    rest = tensor.shape[1:]
    if legacy:
        parts = tensor.reshape(heads, 3, width // heads, *rest).transpose(0, 1)
    else:
        parts = tensor.reshape(3, heads, width // heads, *rest)
    return tuple(p.reshape(width, *rest) for p in parts)


def _convert_block(
    block: _Block, params: dict[str, torch.Tensor], legacy: bool
) -> dict[str, torch.Tensor]:
    """The diffusers tensors of one original module's tensors (`params`: suffix → tensor)."""
    out: dict[str, torch.Tensor] = {}
    for suffix, tensor in params.items():
        module, _, leaf = suffix.rpartition(".")
        if block.kind == "plain" and not module:
            out[f"{block.target}.{leaf}"] = tensor
        elif block.kind == "resnet" and module in _RESNET:
            out[f"{block.target}.{_RESNET[module]}.{leaf}"] = tensor
        elif block.kind == "conv" and module in _CONV:
            out[f"{block.target}.conv.{leaf}"] = tensor
        elif block.kind == "attention" and module == "norm":
            out[f"{block.target}.group_norm.{leaf}"] = tensor
        elif block.kind == "attention" and module == "proj_out":
            out[f"{block.target}.to_out.0.{leaf}"] = tensor.squeeze(-1)
        elif block.kind == "attention" and module == "qkv":
            for name, part in zip(
                ("to_q", "to_k", "to_v"), _split_qkv(tensor, block.heads, legacy), strict=True
            ):
                out[f"{block.target}.{name}.{leaf}"] = part.squeeze(-1)
        else:
            raise ModelError(f"unexpected checkpoint key {block.source}.{suffix}")
    return out


def convert_state_dict(
    state: dict[str, torch.Tensor], flags: OpenAIFlags
) -> dict[str, torch.Tensor]:
    """The diffusers state dict of an original one. Every source key must be used: one that
    no module of these flags has is refused by name."""
    blocks = _blocks(flags)
    grouped: dict[str, dict[str, torch.Tensor]] = {b.source: {} for b in blocks}
    unexpected = []
    for key, tensor in state.items():
        source = next((b.source for b in blocks if key.startswith(b.source + ".")), None)
        if source is None:
            unexpected.append(key)
        else:
            grouped[source][key[len(source) + 1 :]] = tensor
    if unexpected:
        raise ModelError(
            f"{len(unexpected)} checkpoint keys these flags do not have: " + _few(unexpected)
        )
    empty = [b.source for b in blocks if not grouped[b.source]]
    if empty:
        raise ModelError(f"{len(empty)} modules these flags need are missing: " + _few(empty))
    legacy = not flags.use_new_attention_order
    converted: dict[str, torch.Tensor] = {}
    for block in blocks:
        converted |= _convert_block(block, grouped[block.source], legacy)
    return converted


def _few(names: list[str], shown: int = 6) -> str:
    more = f" (and {len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def load_checkpoint(uri: str, max_bytes: int = MAX_CHECKPOINT_BYTES) -> tuple[dict, str]:
    """(flat mapping name → tensor, sha256 of the file) of a `.pt` state dict or a
    `.safetensors` file at any URI. Pickles load with ``weights_only=True`` only, so a file
    that holds anything but tensors and containers is refused, never executed."""
    import torch

    fs, path = storage.filesystem(uri)
    try:
        size = int(fs.size(path))
    except FileNotFoundError as err:
        raise ModelError(f"checkpoint {uri} does not exist") from err
    except OSError as err:
        raise ModelError(f"cannot read checkpoint {uri}: {err}".splitlines()[0]) from err
    if size > max_bytes:
        raise ModelError(f"checkpoint {uri} is {size:,} bytes, over the {max_bytes:,} limit")
    data = storage.read_bytes(uri)
    digest = hashlib.sha256(data).hexdigest()
    try:
        if uri.endswith(".safetensors"):
            from safetensors.torch import load as load_safetensors

            state: Any = load_safetensors(data)
        else:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle and safetensors raise many unrelated types
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f"it pickles a {found.group(1)}" if found else "not a state dict or safetensors"
        raise ModelError(
            f"checkpoint {uri} cannot be loaded as weights ({what}); only tensors are "
            "loaded, never pickled objects: save `model.state_dict()`"
        ) from err
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelError(
            f"checkpoint {uri} is not a flat mapping of names to tensors (a training "
            "checkpoint with optimizer state?): save `model.state_dict()` alone"
        )
    return {k: v.float() for k, v in state.items()}, digest


def convert_model(
    source: str,
    out: str | Path,
    preset: str | None = None,
    flags_uri: str | None = None,
) -> Path:
    """Convert an improved-/guided-diffusion or DiffPath checkpoint into a model folder at
    `out` (local) that `load_model` and ``--model`` read. Returns the folder.

    The architecture comes from a `preset` (`PRESETS`) or a flags JSON; the conversion is
    refused, naming keys, unless every checkpoint tensor fills exactly one weight of that
    architecture with the right shape.
    """
    from diffusers import DDPMScheduler

    folder = Path(out).expanduser().resolve()
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"--out {folder} is not empty: give a new folder")
    flags = read_flags(preset, flags_uri)
    state, digest = load_checkpoint(source)
    try:
        converted = convert_state_dict(state, flags)
    except ModelError as err:
        raise ModelError(f"{source} is not a {preset or flags_uri} checkpoint: {err}") from err
    unet, patch = build_unet(flags)
    expected = unet.state_dict()
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise ModelError(f"{len(missing)} weights not filled by the checkpoint: {_few(missing)}")
    wrong = [
        f"{k} {tuple(v.shape)} != {tuple(expected[k].shape)}"
        for k, v in converted.items()
        if v.shape != expected[k].shape
    ]
    if wrong:
        raise ModelError(f"checkpoint shapes do not match {preset or flags_uri}: {_few(wrong, 3)}")
    unet.load_state_dict(converted, strict=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    (folder / "unet" / PATCH_FILE).write_text(json.dumps(patch, indent=2, sort_keys=True) + "\n")
    betas = original_betas(flags)
    scheduler = DDPMScheduler(
        num_train_timesteps=flags.diffusion_steps,
        trained_betas=betas.tolist(),
        variance_type="learned_range" if flags.learn_sigma else "fixed_small",
        clip_sample=True,
    )
    scheduler.save_config(folder / "scheduler")
    n_params = sum(t.numel() for t in expected.values())
    _write_card(folder, source, digest, preset, flags, n_params, patch)
    return folder


def build_unet(flags: OpenAIFlags) -> tuple[UNet2DModel, dict[str, Any]]:
    """The original net as a `UNet2DModel` (initial weights) with its patch applied, and the
    patch: what `load_model` sets beyond the config."""
    from diffusers import UNet2DModel

    unet = UNet2DModel(**unet_config(flags))
    heads = {b.target: b.heads for b in _blocks(flags) if b.kind == "attention"}
    differing = {n: h for n, h in heads.items() if unet.get_submodule(n).heads != h}
    scale = 1000 / flags.diffusion_steps if flags.rescale_timesteps else 1.0
    patch = {"timestep_scale": scale, "attention_heads": differing}
    apply_patch(unet, patch)
    return unet, patch


def apply_patch(unet: torch.nn.Module, patch: dict[str, Any]) -> None:
    """Set what a converted model's config cannot hold: the timestep rescale and the head
    count of layers whose head width is not the config's."""
    unet.time_proj.scale = float(patch.get("timestep_scale", 1.0))
    for name, heads in patch.get("attention_heads", {}).items():
        attention = unet.get_submodule(name)
        attention.heads = int(heads)
        attention.scale = (attention.inner_dim // int(heads)) ** -0.5


def _write_card(
    folder: Path,
    source: str,
    digest: str,
    preset: str | None,
    flags: OpenAIFlags,
    n_params: int,
    patch: dict[str, Any],
) -> None:
    described = PRESETS[preset][0] if preset else "flags given by file"
    rescale = patch["timestep_scale"]
    card = f"""# Converted diffusion model

- source: `{source}`
- source sha256: `{digest}`
- architecture: {preset or "custom"} — {described}
- parameters: {n_params:,}
- schedule: {flags.diffusion_steps}-step {flags.noise_schedule}, ᾱ_t computed in float64
  from the original betas (`scheduler/scheduler_config.json`, `trained_betas`)
- timesteps: the net sees t · {rescale:g} (the original's rescale_timesteps); diffpath's
  integer schedule indices t go in unchanged
- output: {"ε in channels 0–2, learned variance in 3–5" if flags.learn_sigma else "ε"}
- converted by diffpath (`diffpath convert-model`); a plain diffusers load of `unet/` also
  needs `unet/{PATCH_FILE}` (time_proj.scale, and the head count of the layers it lists)

## Flags

```json
{json.dumps(flags.model_dump(), indent=2, sort_keys=True)}
```
"""
    (folder / "MODEL_CARD.md").write_text(card)

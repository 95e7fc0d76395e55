"""Train the base denoising model: a diffusers UNet2DModel with a DDPM schedule.

One code path for CPU and GPU: bf16 autocast where the hardware has it (CUDA, or a CPU with
AVX-512 BF16/AMX), channels-last, diffusers' `EMAModel` and `get_scheduler`. Checkpoints
(`model/checkpoint.py`) and the EMA model itself are written every `checkpoint_minutes`,
so a stopped run leaves its latest weights; `resume=True` continues exactly where a run
stopped and refuses a changed config.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from diffpath.config import DEFAULT_UNET_CHANNELS, Crop, CropOrBox
from diffpath.errors import ConfigError
from diffpath.io.sources import list_source, load_images
from diffpath.io.storage import join, write_bytes
from diffpath.model.checkpoint import load_checkpoint, save_checkpoint, save_model
from diffpath.model.diffusion import load_model, native_bfloat16
from diffpath.model.sampling import sample_grid

__all__ = [
    "TrainConfig",
    "TrainSource",
    "autocast_dtype",
    "build_unet",
    "denoising_loss",
    "load_image_tensor",
    "noise_scheduler",
    "train",
]

log = logging.getLogger(__name__)


class TrainSource(BaseModel):
    """One training image source and the crop that brings its images to the common geometry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str
    crop: CropOrBox = Field(
        None, description="region kept before the resize (`FeatureConfig.crop`'s forms)"
    )


class TrainConfig(BaseModel):
    """Hyper-parameters of a base-model training run (saved beside the model as JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: list[TrainSource] = Field(description="training image sources")
    val_data: list[TrainSource] = Field(default_factory=list, description="validation sources")
    image_size: int = 32
    crop: Crop = Field(
        None, description="crop of sources that name none (none: the central square)"
    )
    block_out_channels: tuple[int, ...] = DEFAULT_UNET_CHANNELS
    layers_per_block: int = 1
    attention: bool = Field(True, description="self-attention at the lowest resolution")
    dropout: float = Field(0.0, ge=0, lt=1, description="ResNet-block dropout")
    schedule: Literal["cosine", "linear"] = "cosine"
    num_train_timesteps: int = 1000
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = 2e-4
    lr_schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant", description="after the warm-up, over `steps` (diffusers get_scheduler)"
    )
    warmup_steps: int = 100
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    flip: bool = Field(True, description="random horizontal flips")
    precision: Literal["auto", "bfloat16", "float32"] = Field(
        "auto", description="autocast dtype; auto: bf16 where the device has it, else fp32"
    )
    compile: bool = Field(False, description="torch.compile the UNet for training")
    seed: int = 0
    checkpoint_every: int | None = Field(None, ge=1, description="also checkpoint every N steps")
    checkpoint_minutes: float = Field(10.0, gt=0, description="checkpoint at this wall interval")
    max_images: int | None = None
    init: str | None = Field(None, description="warm-start weights from this model source")
    save_dtype: Literal["float16", "float32"] = Field(
        "float16", description="dtype of the saved EMA weights (half keeps the model small)"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_crops(cls, values: Any) -> Any:
        """A source that names no crop (a plain URI, or a mapping without `crop`) takes the
        config's `crop`."""
        if not isinstance(values, dict):
            return values
        crop = values.get("crop")

        def source(given: Any) -> Any:
            if isinstance(given, str):
                return {"uri": given, "crop": crop}
            if isinstance(given, dict) and "crop" not in given:
                return given | {"crop": crop}
            return given

        return values | {
            key: [source(s) for s in values[key]] for key in ("data", "val_data") if key in values
        }


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`, or None for plain fp32."""
    if precision == "float32":
        return None
    has_bf16 = native_bfloat16(device)
    if precision == "bfloat16" and not has_bf16:
        raise ConfigError(f"precision bfloat16 asked for, but {device} has no bf16 support")
    return torch.bfloat16 if has_bf16 else None


def build_unet(config: TrainConfig) -> nn.Module:
    """A UNet2DModel: one level per channel entry, attention only at the coarsest level."""
    from diffusers import UNet2DModel

    levels = len(config.block_out_channels)
    down = ["DownBlock2D"] * levels
    up = ["UpBlock2D"] * levels
    if config.attention:
        down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=config.image_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=min(32, config.block_out_channels[0]),
        dropout=config.dropout,
    )


def noise_scheduler(config: TrainConfig):
    """The DDPM noise schedule the model is trained on (and saved with)."""
    from diffusers import DDPMScheduler

    beta_schedule = "squaredcos_cap_v2" if config.schedule == "cosine" else "linear"
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps, beta_schedule=beta_schedule
    )


def load_image_tensor(
    sources: list[TrainSource], image_size: int, limit: int | None = None
) -> torch.Tensor:
    """Decode every image of `sources` (each with its crop) into one (N, 3, S, S) tensor;
    `limit` caps the images taken from each source."""
    parts = []
    for source in sources:
        refs = list_source(source.uri)[:limit]
        images, _, errors = load_images(refs, image_size, source.crop)
        for locator, error in errors.items():
            log.warning("skipping training image %s: %s", locator, error)
        parts.append(images)
    return torch.cat(parts)


def denoising_loss(
    unet: nn.Module,
    alphas_cumprod: torch.Tensor,
    x0: torch.Tensor,
    generator: torch.Generator,
    autocast: torch.dtype | None = None,
) -> torch.Tensor:
    """Simple DDPM loss E‖ε − ε̂(√ᾱ_t x0 + √(1−ᾱ_t) ε, t)‖² (Ho et al. 2020, eq. 14)."""
    t = torch.randint(0, len(alphas_cumprod), (x0.shape[0],), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    a = alphas_cumprod[t].float().view(-1, 1, 1, 1)
    device = next(unet.parameters()).device
    x_t = (a.sqrt() * x0 + (1 - a).sqrt() * noise).to(device)
    x_t = x_t.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, autocast or torch.float32, enabled=autocast is not None):
        pred = unet(x_t, t.to(device)).sample
    return F.mse_loss(pred.float(), noise.to(device))


class TrainingRun:
    """Mutable state of a training run: model, EMA, optimizer, LR schedule, RNG, step, history."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        self.config = config
        self.unet = build_unet(config)
        if config.init:
            init = load_model(config.init, device="cpu")
            self.unet.load_state_dict(init.unet.state_dict())
        self.unet.to(device, memory_format=torch.channels_last).train()
        self.forward = torch.compile(self.unet) if config.compile else self.unet
        self.ema = EMAModel(self.unet.parameters(), decay=config.ema_decay)
        self.optimizer = torch.optim.AdamW(
            self.unet.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.lr_schedule = get_scheduler(
            "constant_with_warmup" if config.lr_schedule == "constant" else config.lr_schedule,
            self.optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=config.steps,
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.history: list[dict[str, float]] = []

    def ema_unet(self) -> nn.Module:
        """A copy of the UNet holding the EMA weights, in eval mode."""
        unet = copy.deepcopy(self.unet).eval().requires_grad_(False)
        self.ema.copy_to(unet.parameters())
        return unet


@torch.no_grad()
def validation_loss(
    unet: nn.Module,
    alphas_cumprod: torch.Tensor,
    images: torch.Tensor,
    autocast: torch.dtype | None = None,
) -> float:
    """Denoising loss on `images` with fixed noise and timesteps (comparable across steps)."""
    generator = torch.Generator().manual_seed(1234)
    losses = [
        denoising_loss(unet, alphas_cumprod, batch, generator, autocast).item()
        for batch in images.split(128)
    ]
    return float(sum(losses) / max(1, len(losses)))


def _save_outputs(
    run: TrainingRun,
    out: str,
    samples: int,
    on_save: Callable[[str, list[dict[str, float]]], None] | None,
) -> None:
    """The EMA model and its history (and `samples` DDIM samples) under `out`."""
    ema = run.ema_unet()
    save_model(ema, run.config, noise_scheduler(run.config), out)
    write_bytes(join(out, "history.json"), json.dumps(run.history, indent=1).encode())
    if samples:
        buffer = io.BytesIO()
        grid = sample_grid(
            ema, noise_scheduler(run.config), run.config.image_size, run.config.seed, samples
        )
        grid.save(buffer, format="PNG")
        write_bytes(join(out, "samples.png"), buffer.getvalue())
    if on_save:
        on_save(out, run.history)


def train(
    config: TrainConfig,
    out: str,
    resume: bool = False,
    device: str | None = None,
    max_minutes: float | None = None,
    samples: int = 64,
    progress: Callable[[int, int, float], None] | None = None,
    on_save: Callable[[str, list[dict[str, float]]], None] | None = None,
) -> str:
    """Train for `config.steps` steps (or `max_minutes`), saving checkpoints and the EMA model
    every `checkpoint_minutes`. Samples are drawn at the end, and at every checkpoint on a
    GPU, where they take seconds. `progress(step, total, loss)` is called after every step,
    `on_save(out, history)` after every save (the CLI draws the loss curve there)."""
    began = time.monotonic()  # --minutes counts everything, loading and the final save too
    torch.manual_seed(config.seed)
    device_ = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if config.init is None and not resume:
        log.warning(
            "training from random weights: minutes on a CPU give a poor model; "
            "--init default warm-starts from the bundled one"
        )
    autocast = autocast_dtype(config.precision, device_)
    images = load_image_tensor(config.data, config.image_size, config.max_images)
    seen = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:512]]
    val_images = (
        load_image_tensor(config.val_data, config.image_size, 512) if config.val_data else None
    )
    log.info(
        "training on %d images (%d validation) on %s, %s",
        len(images),
        0 if val_images is None else len(val_images),
        device_,
        autocast or torch.float32,
    )
    run = TrainingRun(config, device_)
    if resume and not load_checkpoint(run, out):
        log.info("no checkpoint under %s; starting fresh", out)
    alphas_cumprod = noise_scheduler(config).alphas_cumprod
    n_checked = len(seen) + (0 if val_images is None else len(val_images))
    finish = _finish_seconds(run.unet, config, n_checked, samples, device_)
    start = last_save = time.monotonic()
    smooth = run.history[-1]["loss"] if run.history else None
    early = (run.history[0]["step"], run.history[0]["loss"]) if run.history else None
    minutes_before = run.history[-1]["minutes"] if run.history else 0.0
    checkpoint_samples = samples if device_.type == "cuda" else 0
    while run.step < config.steps:
        index = torch.randint(0, len(images), (config.batch_size,), generator=run.generator)
        flip = torch.rand(config.batch_size, generator=run.generator) < 0.5
        x0 = images[index]
        if config.flip:
            x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
        loss = denoising_loss(run.forward, alphas_cumprod, x0, run.generator, autocast)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.unet.parameters(), 1.0)
        run.optimizer.step()
        run.lr_schedule.step()
        run.step += 1
        run.ema.step(run.unet.parameters())
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        if early is None and run.step >= min(50, max(1, config.steps // 10)):
            early = (run.step, smooth)
        if progress:
            progress(run.step, config.steps, smooth)
        now = time.monotonic()
        out_of_time = max_minutes is not None and now - began + finish > 60 * max_minutes
        done = run.step == config.steps or out_of_time
        due = now - last_save > 60 * config.checkpoint_minutes or (
            config.checkpoint_every is not None and run.step % config.checkpoint_every == 0
        )
        if due or done:
            record = {
                "step": run.step,
                "loss": smooth,
                "minutes": minutes_before + (now - start) / 60,
            }
            ema = run.ema_unet()
            record["seen_loss"] = validation_loss(ema, alphas_cumprod, seen, autocast)
            if val_images is not None:
                record["val_loss"] = validation_loss(ema, alphas_cumprod, val_images, autocast)
            run.history.append(record)
            save_checkpoint(run, out)
            _save_outputs(run, out, samples if done else checkpoint_samples, on_save)
            last_save = time.monotonic()
        if out_of_time:
            log.info("time budget of %.1f min reached at step %d", max_minutes, run.step)
            break
    if early is not None and smooth is not None:
        _warn_if_flat(early, (run.step, smooth))
    return out


def _finish_seconds(
    unet: nn.Module, config: TrainConfig, n_checked: int, samples: int, device: torch.device
) -> float:
    """What the final save costs, from one timed forward pass: the validation losses and
    the sample grid (50 steps), so that a time budget ends with the model saved in it."""
    x = torch.zeros(64, 3, config.image_size, config.image_size, device=device)
    with torch.no_grad():
        tick = time.monotonic()
        unet(x, torch.zeros(64, dtype=torch.long, device=device))
        forward = time.monotonic() - tick
    return forward * (n_checked / 64 + 50 * samples / 64) + 5.0


def _warn_if_flat(early: tuple[int, float], last: tuple[int, float]) -> None:
    """Say so when the (smoothed) training loss did not fall: a run that learned nothing."""
    (first_step, first), (last_step, final) = early, last
    if last_step > first_step and final >= 0.95 * first:
        log.warning(
            "the training loss did not fall (%.4f at step %d, %.4f at step %d): try a lower "
            "--lr, more steps, or --init default",
            first,
            first_step,
            final,
            last_step,
        )

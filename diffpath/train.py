"""Train the base denoising model: a diffusers UNet2DModel with a DDPM schedule.

One code path for CPU and GPU (bf16 autocast there). EMA weights are what is saved, in
the diffusers pipeline layout that `load_model` reads. Checkpoints hold model, EMA,
optimizer and RNG state, so `resume=True` continues exactly where a run stopped.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from diffpath.config import DEFAULT_UNET_CHANNELS
from diffpath.model import load_model
from diffpath.sources import list_source, load_images
from diffpath.storage import exists, join, read_bytes, write_bytes

__all__ = ["TrainConfig", "build_unet", "denoising_loss", "load_image_tensor", "train"]

log = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """Hyper-parameters of a base-model training run (saved beside the model as JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: list[str] = Field(description="training image sources")
    val_data: list[str] = Field(default_factory=list, description="validation sources")
    image_size: int = 32
    center_crop: int | None = Field(140, description="CelebA convention: crop 140 of 178x218")
    block_out_channels: tuple[int, ...] = DEFAULT_UNET_CHANNELS
    layers_per_block: int = 1
    attention: bool = Field(True, description="self-attention at the lowest resolution")
    schedule: Literal["cosine", "linear"] = "cosine"
    num_train_timesteps: int = 1000
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = Field(250, ge=1)
    max_images: int | None = None
    init: str | None = Field(None, description="warm-start weights from this model source")
    save_dtype: Literal["float16", "float32"] = Field(
        "float16", description="dtype of the saved EMA weights (half keeps the model small)"
    )


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
    )


def _scheduler(config: TrainConfig):
    from diffusers import DDPMScheduler

    beta_schedule = "squaredcos_cap_v2" if config.schedule == "cosine" else "linear"
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps, beta_schedule=beta_schedule
    )


def load_image_tensor(
    sources: list[str], config: TrainConfig, limit: int | None = None
) -> torch.Tensor:
    """Decode every image of `sources` (crop + resize) into one (N, 3, S, S) tensor."""
    refs = list_source(sources)[:limit]
    images, _, errors = load_images(refs, config.image_size, config.center_crop)
    for locator, error in errors.items():
        log.warning("skipping training image %s: %s", locator, error)
    return images


def denoising_loss(
    unet: nn.Module,
    alphas_cumprod: torch.Tensor,
    x0: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Simple DDPM loss E‖ε − ε̂(√ᾱ_t x0 + √(1−ᾱ_t) ε, t)‖² (Ho et al. 2020, eq. 14)."""
    t = torch.randint(0, len(alphas_cumprod), (x0.shape[0],), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    a = alphas_cumprod[t].float().view(-1, 1, 1, 1)
    device = next(unet.parameters()).device
    x_t = (a.sqrt() * x0 + (1 - a).sqrt() * noise).to(device)
    with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
        pred = unet(x_t, t.to(device)).sample
    return F.mse_loss(pred.float(), noise.to(device))


class _Run:
    """Mutable state of a training run: model, EMA, optimizer, RNG, step, history."""

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config = config
        self.unet = build_unet(config)
        if config.init:
            init = load_model(config.init, device="cpu")
            self.unet.load_state_dict(init.unet.state_dict())
        self.unet.to(device).train()
        self.ema = copy.deepcopy(self.unet).eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            self.unet.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.history: list[dict[str, float]] = []

    def lr_at(self, step: int) -> float:
        return self.config.lr * min(1.0, (step + 1) / max(1, self.config.warmup_steps))

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        for ema_p, p in zip(self.ema.parameters(), self.unet.parameters(), strict=True):
            ema_p.lerp_(p, 1 - decay)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"model.{k}": v for k, v in self.unet.state_dict().items()}
        tensors |= {f"ema.{k}": v for k, v in self.ema.state_dict().items()}
        for index, state in self.optimizer.state_dict()["state"].items():
            tensors |= {f"optim.{index}.{k}": v for k, v in state.items()}
        tensors["rng"] = self.generator.get_state()
        return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.unet.load_state_dict(part("model."))
        self.ema.load_state_dict(part("ema."))
        optim_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in part("optim.").items():
            index, name = key.split(".", 1)
            optim_state.setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict({"state": optim_state, "param_groups": meta["param_groups"]})
        self.generator.set_state(tensors["rng"])
        self.step = meta["step"]
        self.history = meta["history"]


def _checkpoint_uri(out: str) -> str:
    return join(out, "checkpoints")


def _save_checkpoint(run: _Run, out: str) -> None:
    """Write the checkpoint files, then the `latest.json` pointer: a torn write is never used."""
    name = f"step-{run.step:08d}"
    base = join(_checkpoint_uri(out), name)
    write_bytes(join(base, "state.safetensors"), save_safetensors(run.state_tensors()))
    meta = {
        "step": run.step,
        "param_groups": run.optimizer.state_dict()["param_groups"],
        "history": run.history,
        "config": run.config.model_dump(mode="json"),
    }
    write_bytes(join(base, "state.json"), json.dumps(meta).encode())
    write_bytes(join(_checkpoint_uri(out), "latest.json"), json.dumps({"name": name}).encode())
    log.info("checkpoint %s written", base)


def _load_checkpoint(run: _Run, out: str) -> bool:
    pointer = join(_checkpoint_uri(out), "latest.json")
    if not exists(pointer):
        return False
    base = join(_checkpoint_uri(out), json.loads(read_bytes(pointer))["name"])
    meta = json.loads(read_bytes(join(base, "state.json")))
    run.load_state_tensors(load_safetensors(read_bytes(join(base, "state.safetensors"))), meta)
    log.info("resumed from %s at step %d", base, run.step)
    return True


@torch.no_grad()
def validation_loss(unet: nn.Module, alphas_cumprod: torch.Tensor, images: torch.Tensor) -> float:
    """Denoising loss on `images` with fixed noise and timesteps (comparable across steps)."""
    generator = torch.Generator().manual_seed(1234)
    losses = [
        denoising_loss(unet, alphas_cumprod, batch, generator).item() for batch in images.split(128)
    ]
    return float(sum(losses) / max(1, len(losses)))


@torch.no_grad()
def sample_grid(unet: nn.Module, config: TrainConfig, n: int = 64, steps: int = 50):
    """Generate `n` images with DDIM (seeded) and tile them into a PIL image."""
    from diffusers import DDIMScheduler
    from PIL import Image

    scheduler = DDIMScheduler.from_config(_scheduler(config).config)
    scheduler.set_timesteps(steps)
    device = next(unet.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)
    x = torch.randn(n, 3, config.image_size, config.image_size, generator=generator).to(device)
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t.to(device)).sample, t, x).prev_sample
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().cpu()
    side = math.ceil(math.sqrt(n))
    size = config.image_size
    grid = torch.zeros(3, side * size, side * size, dtype=torch.uint8)
    for i, image in enumerate(pixels):
        r, c = divmod(i, side)
        grid[:, r * size : (r + 1) * size, c * size : (c + 1) * size] = image
    return Image.fromarray(grid.permute(1, 2, 0).numpy())


def _plot_loss(history: list[dict[str, float]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(
        [h["step"] for h in history],
        [h["loss"] for h in history],
        label="train (EMA of batch loss)",
    )
    val = [h for h in history if "val_loss" in h]
    if val:
        ax.plot([h["step"] for h in val], [h["val_loss"] for h in val], "o-", label="validation")
    ax.set(xlabel="step", ylabel="denoising MSE", yscale="log")
    ax.legend()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def save_model(unet: nn.Module, config: TrainConfig, out: str) -> str:
    """Save `unet` and its schedule in the diffusers pipeline layout under `out`."""
    with tempfile.TemporaryDirectory() as tmp:
        saved = copy.deepcopy(unet).to(getattr(torch, config.save_dtype))
        saved.save_pretrained(Path(tmp) / "unet", safe_serialization=True)
        _scheduler(config).save_pretrained(Path(tmp) / "scheduler")
        (Path(tmp) / "train_config.json").write_text(config.model_dump_json(indent=2))
        for local in sorted(Path(tmp).rglob("*")):
            if local.is_file():
                write_bytes(join(out, local.relative_to(tmp).as_posix()), local.read_bytes())
    return out


def train(
    config: TrainConfig,
    out: str,
    resume: bool = False,
    device: str | None = None,
    max_minutes: float | None = None,
    samples: int = 64,
    progress: Callable[[int, int, float], None] | None = None,
) -> str:
    """Train for `config.steps` steps (or `max_minutes`), checkpointing, then save the EMA model.

    `progress(step, total, loss)` is called after every step. Returns `out`.
    """
    torch.manual_seed(config.seed)
    device_ = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    images = load_image_tensor(config.data, config, config.max_images)
    val_images = load_image_tensor(config.val_data, config, 512) if config.val_data else None
    log.info(
        "training on %d images (%d validation)",
        len(images),
        0 if val_images is None else len(val_images),
    )
    run = _Run(config, device_)
    if resume and not _load_checkpoint(run, out):
        log.info("no checkpoint under %s; starting fresh", out)
    alphas_cumprod = _scheduler(config).alphas_cumprod
    start, smooth = time.monotonic(), run.history[-1]["loss"] if run.history else None
    minutes_before = run.history[-1]["minutes"] if run.history else 0.0
    while run.step < config.steps:
        index = torch.randint(0, len(images), (config.batch_size,), generator=run.generator)
        flip = torch.rand(config.batch_size, generator=run.generator) < 0.5
        x0 = torch.where(flip.view(-1, 1, 1, 1), images[index].flip(-1), images[index])
        for group in run.optimizer.param_groups:
            group["lr"] = run.lr_at(run.step)
        loss = denoising_loss(run.unet, alphas_cumprod, x0, run.generator)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.unet.parameters(), 1.0)
        run.optimizer.step()
        run.step += 1
        run.update_ema()
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        if progress:
            progress(run.step, config.steps, smooth)
        out_of_time = max_minutes is not None and time.monotonic() - start > 60 * max_minutes
        if run.step % config.checkpoint_every == 0 or run.step == config.steps or out_of_time:
            minutes = minutes_before + (time.monotonic() - start) / 60
            record = {"step": run.step, "loss": smooth, "minutes": minutes}
            if val_images is not None:
                record["val_loss"] = validation_loss(run.ema, alphas_cumprod, val_images)
            run.history.append(record)
            _save_checkpoint(run, out)
        if out_of_time:
            log.info("time budget of %.1f min reached at step %d", max_minutes, run.step)
            break
    save_model(run.ema, config, out)
    write_bytes(join(out, "loss.png"), _plot_loss(run.history))
    write_bytes(join(out, "history.json"), json.dumps(run.history, indent=1).encode())
    if samples:
        grid = sample_grid(run.ema, config, samples)
        buffer = io.BytesIO()
        grid.save(buffer, format="PNG")
        write_bytes(join(out, "samples.png"), buffer.getvalue())
    return out

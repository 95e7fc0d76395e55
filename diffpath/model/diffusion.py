"""Load a pretrained diffusion model (diffusers UNet2DModel + noise schedule) offline."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffpath.config import FeatureConfig
from diffpath.errors import ModelError
from diffpath.model.convert import PATCH_FILE, apply_patch

__all__ = [
    "DEFAULT_MODEL_DIR",
    "PREVIOUS_DEFAULTS",
    "DiffusionModel",
    "check_device",
    "gpu_count",
    "load_model",
    "model_fingerprint",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL_DIR = Path(__file__).parents[1] / "assets" / "default-model"
# Fingerprints of earlier bundled defaults, so that outputs keyed by them say what they are.
PREVIOUS_DEFAULTS = {
    "b7aa9cb5a103605e": "base model v1, the bundled default before v2: "
    "scripts/get-model-v1.sh writes its folder"
}
# Models fingerprinted before the fingerprint hashed values instead of file bytes keep
# the identity their references and caches were written under (function digest -> old).
KEPT_FINGERPRINTS = {
    "e41d1d70f07ab5b4": "ebf38c2e887af0ca",  # base model v2, the bundled default
    "c078918ae0b50567": "b7aa9cb5a103605e",  # base model v1
}
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name, as a hub id is written
CPU = torch.device("cpu")
WEIGHTS = "diffusion_pytorch_model.safetensors"


@dataclass(frozen=True)
class DiffusionModel:
    """A noise-prediction network ε̂(x_t, t) with the ᾱ_t of the schedule it was trained on.

    `unet` is any module called as ``unet(x_t, t)`` that returns (B, C', H, W) or an
    object with ``.sample``; with C' = 2C (learned variance) the first C channels are ε̂.
    Weights stay float32; `dtype` is the compute dtype (bfloat16/float16 run under autocast).
    `sample_size` is the image side it was trained on, where its config says.
    `batch_size` (images per batch) and `forward_batch` (UNet rows per call) are how a run
    drives it (`dataclasses.replace` sets them; the UNet is shared): they change speed and
    memory, never a feature.
    """

    unet: nn.Module
    alphas_cumprod: torch.Tensor  # (T,) float64 on CPU
    model_id: str = "unnamed"
    device: torch.device = CPU
    dtype: torch.dtype = torch.float32
    sample_size: int | None = None
    batch_size: int | None = None
    forward_batch: int | None = None

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """ᾱ_t for integer timesteps t, as float32 on the model's device."""
        return self.alphas_cumprod[t.cpu()].to(self.device, torch.float32)

    @property
    def batch_sizes(self) -> tuple[int, int]:
        """(images per batch, UNet rows per call): the run's, else this device's defaults:
        small calls on a CPU (cache-bound, see benchmarks/throughput.py), large on a GPU."""
        images, rows = (512, 8192) if self.device.type == "cuda" else (64, 32)
        return self.batch_size or images, self.forward_batch or rows

    @torch.inference_mode()
    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε̂(x_t, t) in float32: x_t (N, C, H, W), t (N,) integer timesteps."""
        x = x_t.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        autocast = self.dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
            out = self.unet(x, t.to(self.device, non_blocking=True))
        out = getattr(out, "sample", out)
        return out[:, : x_t.shape[1]].float().contiguous()


def model_fingerprint(source: str = "default") -> str:
    """A model's identity in every output (16 hex): sha256 of what defines its function —
    the UNet config's fields (not the diffusers version that saved it), the tensors by name,
    the schedule's ᾱ_t and a converted model's patch — the same wherever the files lie and
    whoever re-saved them. Models known by an earlier identity keep it (`KEPT_FINGERPRINTS`).
    A run asks several times (checks, tasks, the model load): files unchanged since the
    last ask in this process (path, size, mtime) are not read again.
    """
    unet_dir, scheduler_file = _layout(_resolve_folder(source))
    files = [unet_dir / "config.json", unet_dir / WEIGHTS, scheduler_file, unet_dir / PATCH_FILE]
    stamp = tuple(
        (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        for path in files
        if path.exists()
        for stat in [path.stat()]
    )
    return _fingerprint(unet_dir, scheduler_file, stamp)


@functools.lru_cache(maxsize=16)
def _fingerprint(unet_dir: Path, scheduler_file: Path, stamp: tuple) -> str:
    """`model_fingerprint`'s digest; `stamp` only keys the cache."""
    from diffusers import DDPMScheduler
    from safetensors import safe_open

    digest = hashlib.sha256()

    def add(value: object) -> None:
        digest.update(json.dumps(value, sort_keys=True, separators=(",", ":")).encode())

    config = json.loads((unet_dir / "config.json").read_text())
    add({k: v for k, v in config.items() if not k.startswith("_")})
    with safe_open(unet_dir / WEIGHTS, framework="pt") as weights:
        for name in sorted(weights.keys()):
            tensor = weights.get_tensor(name).contiguous()
            add([name, str(tensor.dtype), list(tensor.shape)])
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    schedule = _alphas_cumprod(DDPMScheduler.load_config(scheduler_file.parent))
    digest.update(schedule.numpy().tobytes())
    patch = unet_dir / PATCH_FILE
    add(json.loads(patch.read_text()) if patch.exists() else None)
    found = digest.hexdigest()[:16]
    return KEPT_FINGERPRINTS.get(found, found)


def _resolve_folder(source: str) -> Path:
    """A local folder for `source`: 'default', a path, or a hub id from the local HF cache."""
    if source == "default":
        if not (DEFAULT_MODEL_DIR / "unet" / WEIGHTS).exists():
            raise ModelError(f"the bundled default model is missing from {DEFAULT_MODEL_DIR}")
        return DEFAULT_MODEL_DIR
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"model source {source!r} is a file; pass its folder")
        return path
    missing = f"model folder {path.resolve()} does not exist"
    if not HUB_ID.fullmatch(source):
        raise ModelError(missing)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(source, local_files_only=True))
    except LocalEntryNotFoundError as err:
        raise ModelError(
            f"{missing}, and no hub model {source!r} is in the local Hugging Face cache "
            f"(nothing is downloaded at run time): give the folder, or run "
            f"`huggingface-cli download {source}` where a network is available"
        ) from err


def _layout(folder: Path) -> tuple[Path, Path]:
    """(unet folder, scheduler config file) for pipeline or flat layout, checking files."""
    if (folder / "unet").is_dir():
        unet_dir, scheduler_file = folder / "unet", folder / "scheduler" / "scheduler_config.json"
    else:
        unet_dir, scheduler_file = folder, folder / "scheduler_config.json"
    missing = [
        str(p.relative_to(folder))
        for p in (unet_dir / "config.json", unet_dir / WEIGHTS, scheduler_file)
        if not p.exists()
    ]
    if missing:
        pickled = (unet_dir / "diffusion_pytorch_model.bin").exists()
        hint = "; weights must be safetensors, .bin pickles are never loaded" if pickled else ""
        raise ModelError(f"model folder {folder} lacks {', '.join(missing)}{hint}")
    return unet_dir, scheduler_file


def _default_device_dtype() -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def check_device(device: str | torch.device | None) -> torch.device:
    """The device to run on (default: CUDA where present); a `ModelError` saying what to
    use for one this machine does not have."""
    if device is None:
        return _default_device_dtype()[0]
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ModelError(f"unknown device {str(device)!r}: use cpu, cuda or cuda:N") from err
    if device.type == "cuda" and (device.index or 0) >= gpu_count():
        raise ModelError(
            f"device {str(device)!r} asked for, but this machine has {gpu_count()} CUDA GPUs; "
            "use --device cpu or another index"
        )
    return device


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively: a CUDA GPU that supports it, a CPU with
    AVX-512 BF16 or AMX (1.9–2.3× float32 on such a CPU, docs/performance.md)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def resolve_dtype(config: FeatureConfig, device: str | torch.device | None) -> FeatureConfig:
    """`config` with `dtype: auto` made concrete for `device`: bfloat16 where it is native
    (`native_bfloat16`), float32 elsewhere. New fits start from auto; a reference records
    what it resolved to, and screening uses that, whatever the machine."""
    if config.dtype != "auto":
        return config
    dtype = "bfloat16" if native_bfloat16(check_device(device)) else "float32"
    return config.model_copy(update={"dtype": dtype})


def load_model(
    source: str = "default",
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    compile: bool = False,
) -> DiffusionModel:
    """Load a UNet2DModel and its DDPM schedule from `source`, never over the network.

    `source` is ``"default"`` (the bundled CelebA model), a diffusers folder in pipeline
    layout (``unet/``, ``scheduler/``) or flat layout (config.json, weights and
    scheduler_config.json at the top), or a hub id already in the local cache.
    Device/dtype default to CUDA+bf16 when present, else CPU+fp32; `dtype` is the
    compute dtype (autocast), the weights are held in float32, channels-last on CUDA.
    `compile` wraps the UNet in `torch.compile` (2–3.3x the UNet's throughput on an H200,
    see docs/performance.md; the first calls of each batch shape compile for a while).
    """
    from diffusers import DDPMScheduler, UNet2DModel

    folder = _resolve_folder(source)
    unet_dir, scheduler_file = _layout(folder)
    device = check_device(device)
    default_dtype = _default_device_dtype()[1]
    dtype = dtype or (default_dtype if device.type == "cuda" else torch.float32)
    try:
        unet = UNet2DModel.from_pretrained(
            unet_dir,
            use_safetensors=True,
            local_files_only=True,
            torch_dtype=torch.float32,
            low_cpu_mem_usage=False,  # small models; avoids needing `accelerate`
        )
        config = DDPMScheduler.load_config(scheduler_file.parent)
        alphas_cumprod = _alphas_cumprod(config)
        patch = unet_dir / PATCH_FILE
        if patch.exists():
            apply_patch(unet, json.loads(patch.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"cannot load model from {folder}: {err}") from err
    unet = unet.to(device).eval().requires_grad_(False)
    if device.type == "cuda":
        unet = unet.to(memory_format=torch.channels_last)
    size = unet.config.sample_size
    if compile:
        unet = torch.compile(unet)
    model_id = model_fingerprint(str(folder))
    log.info("loaded model %s from %s on %s/%s", model_id, folder, device, dtype)
    return DiffusionModel(
        unet=unet,
        alphas_cumprod=alphas_cumprod,
        model_id=model_id,
        device=device,
        dtype=dtype,
        sample_size=size if isinstance(size, int) else None,
    )


def _alphas_cumprod(config: dict) -> torch.Tensor:
    """ᾱ_t of a scheduler config, float64 (T,): from its `trained_betas` in float64 where it
    lists them (converted models keep their original schedule exactly), else diffusers'."""
    from diffusers import DDPMScheduler

    if config.get("trained_betas") is not None:
        betas = np.asarray(config["trained_betas"], dtype=np.float64)
        return torch.from_numpy(np.cumprod(1.0 - betas))
    return DDPMScheduler.from_config(config).alphas_cumprod.to(torch.float64)


def gpu_count() -> int:
    """CUDA devices this process sees."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0

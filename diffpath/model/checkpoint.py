"""A training run on storage: checkpoints that resume it exactly, and the model folder.

A checkpoint is ``<out>/checkpoints/step-NNNNNNNN/``: ``state.safetensors`` (model, EMA and
optimizer tensors, the RNG state) and ``state.json`` (step, optimizer groups, LR schedule,
EMA settings, history, config); ``checkpoints/latest.json`` names it once both are written,
so a torn write is never used. The model folder is diffusers' pipeline layout (``unet/``,
``scheduler/``) with the ``train_config.json`` it was trained with.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from diffpath.errors import ConfigError
from diffpath.io.storage import exists, join, read_bytes, write_bytes

if TYPE_CHECKING:
    from diffpath.model.train import TrainConfig, TrainingRun

__all__ = ["RESUMABLE", "load_checkpoint", "save_checkpoint", "save_model"]

log = logging.getLogger(__name__)

# Fields a resumed run may change: they decide when to stop or save, not what is learned.
RESUMABLE = frozenset({"steps", "checkpoint_every", "checkpoint_minutes", "compile"})


def _state(run: TrainingRun) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON-able metadata) of everything a resumed run needs."""
    ema = run.ema.state_dict()
    tensors = {f"model.{k}": v for k, v in run.unet.state_dict().items()}
    tensors |= {f"ema.{i}": p for i, p in enumerate(ema.pop("shadow_params"))}
    for index, state in run.optimizer.state_dict()["state"].items():
        tensors |= {f"optim.{index}.{k}": v for k, v in state.items()}
    tensors["rng"] = run.generator.get_state()
    meta = {
        "step": run.step,
        "param_groups": run.optimizer.state_dict()["param_groups"],
        "lr_schedule": run.lr_schedule.state_dict(),
        "ema": ema,
        "history": run.history,
        "config": run.config.model_dump(mode="json"),
    }
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, meta


def _restore(run: TrainingRun, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    run.unet.load_state_dict(part("model."))
    device = next(run.unet.parameters()).device
    shadow = part("ema.")
    shadow_params = [shadow[str(i)].to(device) for i in range(len(shadow))]
    run.ema.load_state_dict(meta["ema"] | {"shadow_params": shadow_params})
    optim_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in part("optim.").items():
        index, name = key.split(".", 1)
        optim_state.setdefault(int(index), {})[name] = value
    run.optimizer.load_state_dict({"state": optim_state, "param_groups": meta["param_groups"]})
    run.lr_schedule.load_state_dict(meta["lr_schedule"])
    run.generator.set_state(tensors["rng"])
    run.step = meta["step"]
    run.history = meta["history"]


def _checkpoints(out: str) -> str:
    return join(out, "checkpoints")


def save_checkpoint(run: TrainingRun, out: str) -> None:
    """Write the checkpoint files, then the `latest.json` pointer: a torn write is never used."""
    name = f"step-{run.step:08d}"
    base = join(_checkpoints(out), name)
    tensors, meta = _state(run)
    write_bytes(join(base, "state.safetensors"), save_safetensors(tensors))
    write_bytes(join(base, "state.json"), json.dumps(meta).encode())
    write_bytes(join(_checkpoints(out), "latest.json"), json.dumps({"name": name}).encode())
    log.info("checkpoint %s written", base)


def load_checkpoint(run: TrainingRun, out: str) -> bool:
    """Restore the latest checkpoint under `out` (False: there is none); a config that
    changed more than `RESUMABLE` fields is refused (ConfigError naming them)."""
    pointer = join(_checkpoints(out), "latest.json")
    if not exists(pointer):
        return False
    base = join(_checkpoints(out), json.loads(read_bytes(pointer))["name"])
    meta = json.loads(read_bytes(join(base, "state.json")))
    saved, now = meta["config"], run.config.model_dump(mode="json")
    fields = (saved.keys() | now.keys()) - RESUMABLE
    changed = sorted(k for k in fields if saved.get(k) != now.get(k))
    if changed:
        raise ConfigError(
            f"cannot resume {out}: its checkpoint was trained with other {', '.join(changed)}; "
            "train into a new --out, or resume with the same config"
        )
    _restore(run, load_safetensors(read_bytes(join(base, "state.safetensors"))), meta)
    log.info("resumed from %s at step %d", base, run.step)
    return True


def save_model(unet: nn.Module, config: TrainConfig, scheduler: Any, out: str) -> str:
    """Save `unet` (in `config.save_dtype`) and its noise `scheduler` in the diffusers
    pipeline layout under `out`, with the config it was trained with."""
    with tempfile.TemporaryDirectory() as tmp:
        saved = copy.deepcopy(unet).to(getattr(torch, config.save_dtype))
        saved.save_pretrained(Path(tmp) / "unet", safe_serialization=True)
        scheduler.save_pretrained(Path(tmp) / "scheduler")
        (Path(tmp) / "train_config.json").write_text(config.model_dump_json(indent=2))
        for local in sorted(Path(tmp).rglob("*")):
            if local.is_file():
                write_bytes(join(out, local.relative_to(tmp).as_posix()), local.read_bytes())
    return out

"""Base-model training: steps, checkpoints, exact resume, warm start, loadable output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffpath.errors import ConfigError
from diffpath.model.diffusion import DEFAULT_MODEL_DIR, load_model, native_bfloat16
from diffpath.model.train import TrainConfig, TrainSource, autocast_dtype, train
from tests.conftest import SAMPLES

pytestmark = pytest.mark.slow


def config(**kw) -> TrainConfig:
    values = dict(
        data=[str(SAMPLES / "reference.parquet")],
        val_data=[str(SAMPLES / "incoming.parquet")],
        block_out_channels=(8, 16),
        batch_size=4,
        max_images=16,
        steps=3,
        checkpoint_every=1,
        warmup_steps=2,
    )
    return TrainConfig(**(values | kw))


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def test_plain_uris_take_the_config_crop_and_sources_keep_their_own() -> None:
    parsed = TrainConfig(
        data=["a.parquet", {"uri": "b.parquet", "crop": [0.1, 0.1, 0.9, 0.9]}], crop="celeba-face"
    )
    assert parsed.data == [
        TrainSource(uri="a.parquet", crop="celeba-face"),
        TrainSource(uri="b.parquet", crop=(0.1, 0.1, 0.9, 0.9)),
    ]
    assert TrainConfig(**parsed.model_dump()) == parsed  # what train_config.json holds
    assert TrainConfig(data=["a.parquet"]).data[0].crop is None  # no crop unless told
    with pytest.raises(ValueError, match="give a name"):
        TrainConfig(data=[{"uri": "a.parquet", "crop": "face"}])


def test_precision_is_bf16_only_where_the_device_has_it() -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype("float32", cpu) is None
    has_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert autocast_dtype("auto", cpu) == (torch.bfloat16 if has_bf16 else None)
    assert native_bfloat16(cpu) is has_bf16
    if not has_bf16:
        with pytest.raises(ConfigError, match="no bf16"):
            autocast_dtype("bfloat16", cpu)


def test_three_steps_save_a_loadable_model(tmp_path: Path) -> None:
    from diffpath_tasks.train import draw_loss

    out = train(config(), str(tmp_path / "run"), samples=4, on_save=draw_loss)
    folder = Path(out)
    for name in ("loss.png", "samples.png", "history.json", "train_config.json"):
        assert (folder / name).exists()
    assert (folder / "loss.png").read_bytes().startswith(b"\x89PNG")
    history = json.loads((folder / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3]
    assert all("val_loss" in h and "seen_loss" in h for h in history)
    model = load_model(out, device="cpu")
    eps = model.predict_noise(torch.zeros(2, 3, 32, 32), torch.tensor([0, 999]))
    assert eps.shape == (2, 3, 32, 32) and torch.isfinite(eps).all()


def test_resume_continues_exactly(tmp_path: Path) -> None:
    straight = train(config(steps=4), str(tmp_path / "straight"), samples=0)
    train(config(steps=2), str(tmp_path / "split"), samples=0)
    state = load_file(tmp_path / "split" / "checkpoints" / "step-00000002" / "state.safetensors")
    resumed = train(config(steps=4), str(tmp_path / "split"), resume=True, samples=0)
    ref = load_file(Path(straight) / "checkpoints" / "step-00000002" / "state.safetensors")
    assert state.keys() == ref.keys()
    for key in ref:  # optimizer moments, weights, EMA and RNG are identical at the split point
        torch.testing.assert_close(state[key], ref[key], rtol=0, atol=0)
    a, b = weights(Path(straight)), weights(Path(resumed))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_resume_refuses_a_changed_config(tmp_path: Path) -> None:
    train(config(steps=2), str(tmp_path / "run"), samples=0)
    with pytest.raises(ConfigError, match="other lr"):
        train(config(steps=4, lr=1e-3), str(tmp_path / "run"), resume=True, samples=0)


def test_a_stopped_run_leaves_its_latest_ema_weights(tmp_path: Path) -> None:
    """Checkpoints come at a wall-clock interval and save the EMA model with them, so a run
    killed mid-way still leaves loadable weights of its last checkpoint."""
    out = tmp_path / "run"

    def stop(step: int, total: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    cfg = config(steps=5, checkpoint_every=None, checkpoint_minutes=1e-9)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, str(out), samples=0, progress=stop)
    assert [h["step"] for h in json.loads((out / "history.json").read_text())] == [1, 2]
    state = load_file(out / "checkpoints" / "step-00000002" / "state.safetensors")
    saved = weights(out)
    ema = [state[f"ema.{i}"] for i in range(len(saved))]
    model = load_model(str(out), device="cpu")
    for shadow, param in zip(ema, model.unet.parameters(), strict=True):
        torch.testing.assert_close(param, shadow.half().float())


def test_init_warm_starts_from_saved_weights(tmp_path: Path) -> None:
    first = train(config(steps=2), str(tmp_path / "first"), samples=0)
    warm = config(steps=1, init=first, lr=0.0, warmup_steps=1)
    second = train(warm, str(tmp_path / "second"), samples=0)
    a, b = weights(Path(first)), weights(Path(second))
    for key in a:  # lr 0: the EMA of unchanged weights is the initial weights
        torch.testing.assert_close(a[key], b[key])


def test_bundled_default_model_gives_finite_features() -> None:
    if not (DEFAULT_MODEL_DIR / "unet").exists():
        pytest.fail("the bundled default model is missing from the package")
    from diffpath.config import FeatureConfig
    from diffpath.features.extract import extract_features

    model = load_model("default", device="cpu")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    features = extract_features(model, x, ["a", "b"], FeatureConfig(method="diffpathv2"))
    assert features.shape == (2, 6) and torch.isfinite(torch.from_numpy(features)).all()


def test_a_time_budget_includes_the_final_save(tmp_path: Path, caplog) -> None:
    """--minutes stops early enough that the final save fits in it (its cost is measured),
    and a run from random weights whose loss does not fall says both."""
    cfg = config(steps=10_000, checkpoint_every=None)
    train(cfg, str(tmp_path / "budget"), max_minutes=0.05, samples=4)
    history = json.loads((tmp_path / "budget" / "history.json").read_text())
    assert 1 <= history[-1]["step"] < 10_000 and history[-1]["minutes"] < 0.05
    assert "random weights" in caplog.text and "did not fall" not in caplog.text
    train(config(steps=30, lr=0.0, checkpoint_every=None), str(tmp_path / "flat"), samples=0)
    assert "did not fall" in caplog.text

"""Checkpoints of the original openai / DiffPath code, converted and checked against what the
original code computes (`../shared/data/reference-unets`: random-weight nets built by it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffpath.errors import ConfigError, ModelError
from diffpath.model.convert import (
    PATCH_FILE,
    PRESETS,
    apply_patch,
    build_unet,
    convert_model,
    convert_state_dict,
    read_flags,
    unet_config,
)
from diffpath.model.diffusion import DiffusionModel, load_model, model_fingerprint
from tests.conftest import SHARED_DATA

FIXTURES = SHARED_DATA / "reference-unets"
NAMES = [
    "diffpath_celeba32",
    "improved_imagenet64",
    "guided_uncond256_at64",
    "guided_uncond256_at64_neworder",
]
TOLERANCE = 1e-4  # a correct conversion: ~2e-6; every mistake below: 0.1 or more


@pytest.fixture(scope="module")
def fixtures() -> Path:
    if not FIXTURES.exists():
        pytest.skip(f"reference UNets not found at {FIXTURES} (../shared is absent)")
    return FIXTURES


@pytest.fixture(scope="module")
def converted(fixtures: Path, tmp_path_factory) -> dict[str, Path]:
    """Each fixture converted once, through the public entry point."""
    out = tmp_path_factory.mktemp("converted")
    return {
        name: convert_model(
            str(fixtures / f"{name}.pt"), out / name, flags_uri=str(fixtures / f"{name}.json")
        )
        for name in NAMES
    }


def reference_io(name: str) -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / f"{name}.io.safetensors")


def max_error(model: DiffusionModel, io: dict[str, torch.Tensor]) -> float:
    """max |ε̂ − the original's ε| through the pipeline's entry point, integer t."""
    return (model.predict_noise(io["x"], io["t"]) - io["out"][:, :3]).abs().max().item()


@pytest.mark.parametrize("name", NAMES)
def test_converted_fixture_matches_the_original_code(converted, name) -> None:
    model = load_model(str(converted[name]), device="cpu")
    io = reference_io(name)
    assert io["t"].dtype == torch.int64
    assert max_error(model, io) < TOLERANCE
    full = model.unet(io["x"], io["t"]).sample  # the variance channels come along unchanged
    assert (full - io["out"]).abs().max().item() < TOLERANCE
    original = io["alphas_cumprod"]
    assert ((model.alphas_cumprod - original).abs() / original).max().item() < 1e-6
    assert model.sample_size == io["x"].shape[-1]


def test_the_ddim10_grid_of_a_4000_step_model_is_diffpaths(converted) -> None:
    from diffpath.config import FeatureConfig
    from diffpath.model.schedule import select_timesteps

    model = load_model(str(converted["diffpath_celeba32"]), device="cpu")
    steps = select_timesteps(FeatureConfig(method="diffpath6d"), model.num_train_timesteps)
    assert steps.tolist() == list(range(0, 4000, 400))


def mistaken(name: str, mistake: str) -> float:
    """The error against the original of a conversion made with one deliberate mistake."""
    flags = read_flags(flags_uri=str(FIXTURES / f"{name}.json"))
    io = reference_io(name)
    state = torch.load(FIXTURES / f"{name}.pt", map_location="cpu", weights_only=True)
    if mistake == "qkv layout":
        flags = flags.model_copy(
            update={"use_new_attention_order": not flags.use_new_attention_order}
        )
    unet, patch = build_unet(flags)
    unet.load_state_dict(convert_state_dict(state, flags))
    unet.eval()
    scale = patch["timestep_scale"]
    t = io["t"]
    if mistake == "sin/cos order":
        unet.time_proj.flip_sin_to_cos = False
    elif mistake == "no timestep rescale":
        patch["timestep_scale"] = 1.0
    elif mistake == "truncated timesteps":  # t·scale fed as an integer tensor
        t, patch["timestep_scale"] = (t * scale).long(), 1.0
    elif mistake == "head count":  # twice the heads everywhere; imagenet: the config's width
        attention = {n: m.heads for n, m in unet.named_modules() if type(m).__name__ == "Attention"}
        patch["attention_heads"] = {n: 2 * h for n, h in attention.items()}
        if name == "improved_imagenet64":  # 3 heads of 128 over 384 channels, not 4 of 96
            patch["attention_heads"] = {n: 3 for n in patch["attention_heads"] if "s.2." in n}
    apply_patch(unet, patch)
    with torch.no_grad():
        return (unet(io["x"], t).sample[:, :3] - io["out"][:, :3]).abs().max().item()


MISTAKES = [
    "qkv layout",
    "sin/cos order",
    "no timestep rescale",
    "truncated timesteps",
    "head count",
]
# guided-diffusion feeds t unchanged: its timestep "mistakes" are the right conversion
CASES = [(n, m) for n in NAMES for m in MISTAKES if not (n.startswith("guided") and "time" in m)]


@pytest.mark.parametrize("name, mistake", CASES)
def test_each_plausible_mistake_is_caught_by_the_fixtures(fixtures, name, mistake) -> None:
    assert mistaken(name, mistake) > 0.1  # measured 0.26 to 2.2 (docs/models.md)


def test_a_correct_conversion_passes_the_same_check(fixtures) -> None:
    assert mistaken("improved_imagenet64", "none") < TOLERANCE


def test_a_converted_folder_is_an_identity_like_any_model(converted, tmp_path) -> None:
    folder = converted["improved_imagenet64"]
    patch = json.loads((folder / "unet" / PATCH_FILE).read_text())
    assert patch["timestep_scale"] == 0.25
    assert patch["attention_heads"]  # 4 heads over 384 and 512 channels
    again = convert_model(
        str(FIXTURES / "improved_imagenet64.pt"),
        tmp_path / "again",
        flags_uri=str(FIXTURES / "improved_imagenet64.json"),
    )
    assert model_fingerprint(str(again)) == model_fingerprint(str(folder))
    assert model_fingerprint(str(folder)) != model_fingerprint(str(converted["diffpath_celeba32"]))
    card = (folder / "MODEL_CARD.md").read_text()
    assert "improved_imagenet64.pt" in card and "6dfb7743592ef6f5" in card  # source and its sha256
    (folder / "unet" / PATCH_FILE).write_text(json.dumps({**patch, "timestep_scale": 1.0}))
    try:  # the patch is part of what the model is
        assert model_fingerprint(str(folder)) != model_fingerprint(str(again))
    finally:
        (folder / "unet" / PATCH_FILE).write_text(json.dumps(patch))


def test_presets_build_the_published_architectures() -> None:
    from diffusers import UNet2DModel

    with torch.device("meta"):  # shapes only: no memory for 550M parameters
        counts = {
            name: sum(p.numel() for p in UNet2DModel(**unet_config(read_flags(name))).parameters())
            for name in PRESETS
        }
    assert counts["diffpath-celeba32"] == counts["improved-cifar10-32"] == 52_546_438
    assert counts["improved-imagenet64"] == 121_063_942
    assert counts["guided-256-uncond"] == 552_814_086


def fixture_state(name: str = "diffpath_celeba32") -> dict[str, torch.Tensor]:
    return torch.load(FIXTURES / f"{name}.pt", map_location="cpu", weights_only=True)


@pytest.mark.hostile(("a checkpoint that pickles an object", "refused before it runs, exit 1"))
def test_a_pickled_object_is_never_executed(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "payload": Payload()}, path)
    with pytest.raises(ModelError, match="never pickled objects"):
        convert_model(str(path), tmp_path / "out", preset="diffpath-celeba32")
    assert not Payload.ran


class Payload:
    ran = False

    def __reduce__(self):
        return (Payload._run, ())

    @staticmethod
    def _run() -> None:
        Payload.ran = True


@pytest.mark.hostile(
    ("a checkpoint missing a weight", "refused naming the module, exit 1"),
    ("a checkpoint with a key the architecture lacks", "refused naming the key, exit 1"),
    ("a checkpoint of another architecture", "refused naming the preset and shapes, exit 1"),
)
def test_a_partial_or_foreign_checkpoint_is_refused_by_name(fixtures, tmp_path) -> None:
    flags = str(fixtures / "diffpath_celeba32.json")
    state = fixture_state()
    cut = dict(state)
    del cut["middle_block.1.qkv.weight"]
    torch.save(cut, tmp_path / "cut.pt")
    with pytest.raises(ModelError, match=r"to_q\.weight|middle_block\.1"):
        convert_model(str(tmp_path / "cut.pt"), tmp_path / "a", flags_uri=flags)
    torch.save(state | {"label_emb.weight": torch.zeros(2, 2)}, tmp_path / "extra.pt")
    with pytest.raises(ModelError, match=r"label_emb\.weight"):
        convert_model(str(tmp_path / "extra.pt"), tmp_path / "b", flags_uri=flags)
    with pytest.raises(ModelError, match=r"diffpath-celeba32.*!="):
        convert_model(
            str(fixtures / "diffpath_celeba32.pt"), tmp_path / "c", preset="diffpath-celeba32"
        )
    nested = tmp_path / "nested.pt"
    torch.save({"model": state, "step": 3}, nested)
    with pytest.raises(ModelError, match="flat mapping"):
        convert_model(str(nested), tmp_path / "d", flags_uri=flags)


def test_flags_must_say_how_timesteps_were_fed(tmp_path) -> None:
    (tmp_path / "flags.json").write_text(
        json.dumps({"image_size": 32, "num_channels": 8, "num_res_blocks": 1})
    )
    with pytest.raises(ConfigError, match="rescale_timesteps"):
        read_flags(flags_uri=str(tmp_path / "flags.json"))
    with pytest.raises(ConfigError, match="unknown preset"):
        read_flags("celeba")


def test_an_oversized_checkpoint_is_refused_before_it_is_read(fixtures) -> None:
    from diffpath.model.convert import load_checkpoint

    with pytest.raises(ModelError, match="over the 1,000 limit"):
        load_checkpoint(str(fixtures / "diffpath_celeba32.pt"), max_bytes=1000)

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffpath.errors import ModelError
from diffpath.model.diffusion import DEFAULT_MODEL_DIR, load_model, model_fingerprint
from tests.conftest import save_tiny_model


@pytest.mark.parametrize("layout", ["pipeline", "flat"])
def test_both_layouts_load_the_same_network(tmp_path: Path, layout: str) -> None:
    model = load_model(str(save_tiny_model(tmp_path / layout, layout)), device="cpu")
    x = torch.zeros(2, 3, 16, 16)
    eps = model.predict_noise(x, torch.tensor([0, 500]))
    assert eps.shape == (2, 3, 16, 16) and eps.dtype == torch.float32
    assert model.num_train_timesteps == 1000
    assert model.alphas_cumprod[0] > model.alphas_cumprod[-1]


def test_learned_variance_model_uses_first_three_channels(tmp_path: Path) -> None:
    model = load_model(str(save_tiny_model(tmp_path, out_channels=6)), device="cpu")
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([10])
    full = model.unet(x, t).sample
    assert full.shape[1] == 6
    assert torch.equal(model.predict_noise(x, t), full[:, :3])


@pytest.mark.parametrize(
    "remove", ["unet/diffusion_pytorch_model.safetensors", "scheduler", "unet/config.json"]
)
def test_missing_files_raise_model_error_naming_them(tmp_path: Path, remove: str) -> None:
    folder = save_tiny_model(tmp_path)
    target = folder / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ModelError, match="lacks"):
        load_model(str(folder), device="cpu")


def test_missing_folder_and_uncached_hub_id(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="local Hugging Face cache"):
        load_model("someone/not-cached")


def test_hub_id_resolves_from_local_cache(tmp_path: Path, monkeypatch) -> None:
    """A model in the HF cache layout (refs/main → snapshots/<rev>) loads offline."""
    revision = "0" * 40
    snapshot = tmp_path / "hub" / "models--acme--tiny-ddpm" / "snapshots" / revision
    save_tiny_model(snapshot, layout="flat")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    model = load_model("acme/tiny-ddpm", device="cpu")
    assert model.predict_noise(torch.zeros(1, 3, 16, 16), torch.tensor([3])).shape == (1, 3, 16, 16)


def test_model_id_is_a_content_fingerprint(tmp_path: Path) -> None:
    a = load_model(str(save_tiny_model(tmp_path / "a")), device="cpu")
    b = load_model(str(save_tiny_model(tmp_path / "b")), device="cpu")
    assert a.model_id == b.model_id and len(a.model_id) == 16


def test_missing_relative_folder_is_named_absolutely(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError, match=f"model folder {tmp_path}/runs/model-tex does not exist"):
        load_model("runs/model-tex")
    with pytest.raises(ModelError) as err:
        load_model("./model-tex")
    assert "huggingface-cli" not in str(err.value)  # not shaped like a hub id: no hub hint


def test_fingerprint_is_the_model_not_the_files(tmp_path: Path) -> None:
    """Re-saving the same weights with another diffusers keeps the identity; the bundled
    default keeps the identity its references were written under; a changed weight does not."""
    copy = Path(shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "copy"))
    config = copy / "unet" / "config.json"
    saved = json.loads(config.read_text())
    config.write_text(json.dumps({**saved, "_diffusers_version": "9.9.9"}, indent=4))
    assert model_fingerprint(str(copy)) == model_fingerprint() == "ebf38c2e887af0ca"

    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, weights)
    assert model_fingerprint(str(copy)) != model_fingerprint()


def test_dtype_auto_is_bfloat16_only_where_the_hardware_has_it(monkeypatch) -> None:
    from diffpath.config import FeatureConfig
    from diffpath.errors import ConfigError
    from diffpath.model import diffusion

    auto = FeatureConfig(dtype="auto")
    with pytest.raises(ConfigError, match="resolved"):
        auto.config_hash()  # an unresolved config keys nothing
    for native, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(diffusion, "native_bfloat16", lambda device, n=native: n)
        resolved = diffusion.resolve_dtype(auto, "cpu")
        assert resolved.dtype == expected and resolved.method == auto.method
        assert resolved.config_hash() == FeatureConfig(dtype=expected).config_hash()
    assert diffusion.resolve_dtype(FeatureConfig(dtype="float32"), "cpu").dtype == "float32"

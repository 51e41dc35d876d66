"""ShowMeModel: folder round trip, clear errors for broken folders, latent layouts."""

import json
import shutil

import pytest
import torch
from diffusers import AutoencoderKL

from showme_model.model import ModelFolderError, ShowMeModel


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = ShowMeModel.from_config_name("tiny").eval()
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    return model, folder


def _unet_output(model: ShowMeModel) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 8, 2, 8, 8, generator=generator)
    images = torch.rand(1, 3, 32, 32, generator=generator) * 2 - 1
    text = model.encode_text(["push the cup"])
    context = torch.cat([text, model.encode_image_context(images)], 1)
    with torch.no_grad():
        return model.unet(sample, torch.tensor([500]), context)


def test_save_load_round_trip(saved):
    model, folder = saved
    loaded = ShowMeModel.from_pretrained(folder).eval()
    for name in ("unet", "vae", "text_encoder", "image_encoder", "image_projector"):
        original = getattr(model, name).state_dict()
        reloaded = getattr(loaded, name).state_dict()
        assert original.keys() == reloaded.keys(), name
        assert all(torch.equal(original[k], reloaded[k]) for k in original), name
    assert loaded.scheduler_config["prediction_type"] == model.scheduler_config["prediction_type"]
    torch.testing.assert_close(_unet_output(model), _unet_output(loaded), atol=1e-5, rtol=0)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["unet"] == ["showme_model", "ShowMeUNet"]


def test_load_with_dtype(saved):
    _, folder = saved
    loaded = ShowMeModel.from_pretrained(folder, device="cpu", dtype=torch.float64)
    assert loaded.dtype == torch.float64
    assert next(loaded.vae.parameters()).dtype == torch.float64


def test_latents_keep_video_and_image_layouts(saved):
    model, _ = saved
    video = torch.rand(2, 3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        latents = model.encode_latents(video)
        assert latents.shape == (2, 4, 3, 4, 4)
        assert model.decode_latents(latents).shape == video.shape
        frame = model.encode_latents(video[:, :, 1])
    torch.testing.assert_close(frame, latents[:, :, 1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="expected"):
        model.encode_latents(torch.zeros(3, 32, 32))


def test_missing_and_broken_folders(saved, tmp_path):
    _, folder = saved
    with pytest.raises(ModelFolderError, match="not found"):
        ShowMeModel.from_pretrained(tmp_path / "absent")
    with pytest.raises(ModelFolderError, match=r"model_index\.json is missing"):
        ShowMeModel.from_pretrained(tmp_path)

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelFolderError, match="'unet'"):
        ShowMeModel.from_pretrained(broken)

    shutil.copy(folder / "unet" / weights.name, weights)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelFolderError, match="'vae'"):
        ShowMeModel.from_pretrained(broken)

    index = json.loads((folder / "model_index.json").read_text())
    index["unet"] = ["os", "system"]
    (broken / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelFolderError, match="unknown class"):
        ShowMeModel.from_pretrained(broken)


def test_index_names_library_and_class_as_diffusers_does(saved):
    model, folder = saved
    index = json.loads((folder / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["unet"] == ["showme_model", "ShowMeUNet"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")  # diffusers' own loader
    assert vae.config.latent_channels == model.vae.config.latent_channels

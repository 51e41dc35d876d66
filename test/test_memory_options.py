"""Memory options on the tiny random model: weight variants, encoder offloading, per-frame VAE
decoding. (Model CPU offload is tested in test_pipeline_predict.py.)"""

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from showme_model import adapters
from showme_model.model import ModelFolderError, ShowMeModel
from showme_model.pipeline import ShowMePipeline

STEPS = 2


def tiny_model() -> ShowMeModel:
    torch.manual_seed(0)
    model = ShowMeModel.from_config_name("tiny")
    for role in ("manipulation", "prediction"):
        adapters.add_adapter(model, role, rank=4)
    with torch.no_grad():  # give the adapters an effect (fresh LoRA B is zero)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A model folder with full-precision weights and fp16 and bf16 variants."""
    path = tmp_path_factory.mktemp("model")
    tiny_model().save_pretrained(path)
    for variant, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        ShowMeModel.from_pretrained(path, dtype=dtype).save_pretrained(path, variant=variant)
    return path


def weights(model: ShowMeModel) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}


@pytest.mark.parametrize(("variant", "dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_variants_are_saved_per_component_and_load_in_their_dtype(folder, variant, dtype):
    for name in ("unet", "vae", "image_encoder", "image_projector"):
        assert (folder / name / f"diffusion_pytorch_model.{variant}.safetensors").is_file()
    assert (folder / "text_encoder" / f"model.{variant}.safetensors").is_file()
    full = ShowMeModel.from_pretrained(folder)
    loaded = ShowMeModel.from_pretrained(folder, variant=variant)
    assert {v.dtype for v in weights(loaded).values()} == {dtype}
    assert {v.dtype for v in weights(full).values()} == {torch.float32}
    expected = weights(full)
    for key, value in weights(loaded).items():
        assert torch.equal(value, expected[key].to(dtype)), key
    half = (folder / "unet" / f"diffusion_pytorch_model.{variant}.safetensors").stat().st_size
    whole = (folder / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size
    assert half < 0.55 * whole


def test_a_folder_with_only_a_variant_loads_it(folder, tmp_path):
    only = tmp_path / "fp16-only"
    shutil.copytree(folder, only)
    for path in [
        *only.glob("*/diffusion_pytorch_model.safetensors"),
        *only.glob("*/model.safetensors"),
    ]:
        path.unlink()
    loaded = ShowMeModel.from_pretrained(only, variant="fp16")
    assert loaded.dtype == torch.float16
    with pytest.raises(ModelFolderError):
        ShowMeModel.from_pretrained(only)


def test_a_variant_keeps_the_full_precision_adapters(folder):
    for role in ("manipulation", "prediction"):
        tensors = load_file(folder / "adapters" / role / "adapter_model.safetensors")
        assert {t.dtype for t in tensors.values()} == {torch.float32}


def test_missing_variant_and_mislabelled_variant_fail_clearly(folder, tmp_path):
    with pytest.raises(ModelFolderError, match="unet"):
        ShowMeModel.from_pretrained(folder, variant="int8")
    with pytest.raises(ValueError, match="cast it first"):
        tiny_model().save_pretrained(tmp_path, variant="fp16")


def test_a_variant_pipeline_runs_in_its_dtype(folder, image):
    pipeline = ShowMePipeline.from_pretrained(folder)
    reference = pipeline(image, "push", num_inference_steps=STEPS, seed=3, output_type="float")
    half = ShowMePipeline.from_pretrained(folder, variant="bf16")
    assert half.dtype == torch.bfloat16
    result = half(image, "push", num_inference_steps=STEPS, seed=3, output_type="float")
    assert np.abs(result.frames - reference.frames).max() < 0.1


@pytest.mark.parametrize("storage", ["cpu", "disk"])
def test_encoder_offload_gives_the_same_frames(image, storage, tmp_path):
    reference = ShowMePipeline(tiny_model(), image_cache_size=0)
    offloaded = ShowMePipeline(tiny_model(), image_cache_size=0)
    offloaded.enable_encoder_offload(storage, device="cpu", folder=tmp_path / "encoders")
    with pytest.raises(RuntimeError, match="offloading is enabled"):
        offloaded.to("cpu")
    text_sizes = []  # text-encoder weights present while the image encoder runs
    encode = offloaded.model.image_encoder.encode

    def recording(images):
        text_sizes.append(sum(p.numel() for p in offloaded.model.text_encoder.parameters()))
        return encode(images)

    offloaded.model.image_encoder.encode = recording
    for text, mode in (("push", "video"), ("pull the lever", "image"), ("push", "image")):
        expected = reference(image, text, mode, num_frames=3, num_inference_steps=STEPS, seed=1)
        result = offloaded(image, text, mode, num_frames=3, num_inference_steps=STEPS, seed=1)
        assert np.array_equal(result.frames, expected.frames)
        if storage == "disk":  # the encoders' weights are not held between requests
            for name in ("text_encoder", "image_encoder"):
                module = getattr(offloaded.model, name)
                assert sum(p.numel() for p in module.parameters()) == 0, name
    if storage == "disk":  # one encoder at a time
        assert text_sizes == [0, 0, 0]
    offloaded.remove_all_hooks()
    for name in ("text_encoder", "image_encoder"):
        restored = getattr(offloaded.model, name).state_dict()
        for key, value in getattr(reference.model, name).state_dict().items():
            assert torch.equal(restored[key], value), key


def test_encoder_offload_rejects_unknown_storage():
    with pytest.raises(ValueError, match="storage"):
        ShowMePipeline(tiny_model()).enable_encoder_offload("ssd")
    with pytest.raises(ValueError, match="folder"):
        ShowMePipeline(tiny_model()).enable_encoder_offload("disk")


def test_per_frame_vae_decoding_equals_batch_decoding(image):
    pipeline = ShowMePipeline(tiny_model())
    kwargs = {"num_frames": 5, "num_inference_steps": STEPS, "seed": 2, "output_type": "float"}
    batched = pipeline(image, "push", "video", **kwargs)
    decoded = []
    vae = pipeline.model.vae
    original = vae._decode

    def recording(z, *args, **kw):
        decoded.append(z.shape[0])
        return original(z, *args, **kw)

    vae._decode = recording
    vae.enable_slicing()
    try:
        sliced = pipeline(image, "push", "video", **kwargs)
    finally:
        vae.disable_slicing()
        del vae._decode
    assert decoded == [1] * 5  # one frame per decoder call
    assert np.abs(sliced.frames - batched.frames).max() < 1e-5

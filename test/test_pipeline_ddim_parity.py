"""Our DDIM (eta = 1) loop against the original DynamiCrafter DDIMSampler on a tiny model.

The fixture (test/fixtures/ddim_parity/README.md) holds the original sampler's latents and
decoded frames for the UNet weights of test/fixtures/dynamicrafter_parity/ and a tiny LDM VAE.
The original draws x_T and then each step's noise from torch's global generator after
``torch.manual_seed(seed)``; a single generator seeded the same way reproduces that stream.
"""

import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import load_file

from showme_model.model import ShowMeModel
from showme_model.pipeline import ShowMePipeline
from showme_model.presets import scheduler_config
from showme_model.resampler import ImageProjector
from showme_model.unet import ShowMeUNet
from showme_model.unet_conversion import convert_dynamicrafter_unet

FIXTURES = Path(__file__).parent / "fixtures"
DDIM = FIXTURES / "ddim_parity"
UNET = FIXTURES / "dynamicrafter_parity"


def _vae(meta: dict, weights: dict[str, torch.Tensor]) -> AutoencoderKL:
    ddconfig = meta["vae_ddconfig"]
    channels = [ddconfig["ch"] * m for m in ddconfig["ch_mult"]]
    config = {
        "down_block_types": ["DownEncoderBlock2D"] * len(channels),
        "up_block_types": ["UpDecoderBlock2D"] * len(channels),
        "block_out_channels": channels,
        "layers_per_block": ddconfig["num_res_blocks"],
        "latent_channels": ddconfig["z_channels"],
        "norm_num_groups": 32,
        "sample_size": ddconfig["resolution"],
        "scaling_factor": meta["scale_factor"],
    }
    vae = AutoencoderKL(**config)
    state = {f"first_stage_model.{k}": v.float() for k, v in weights.items()}
    vae.load_state_dict(convert_ldm_vae_checkpoint(state, config))
    return vae


@pytest.fixture(scope="module")
def reference():
    meta = json.loads((DDIM / "ddim_eta1_tiny.json").read_text())
    data = load_file(DDIM / "ddim_eta1_tiny.safetensors")
    unet_config = json.loads((UNET / "unet_config.json").read_text())
    converted = convert_dynamicrafter_unet(load_file(UNET / "unet.safetensors"), unet_config)
    assert not converted.missing and not converted.unexpected
    unet = ShowMeUNet(**unet_config)
    unet.load_state_dict({k: v.float() for k, v in converted.state_dict.items()})
    vae = _vae(meta, {k[4:]: v for k, v in data.items() if k.startswith("vae.")})
    # The sampler needs the denoiser, the VAE and the noise schedule; no encoders are used.
    projector = ImageProjector(32, 32, 32, depth=1, heads=2, dim_head=16, video_length=None)
    model = ShowMeModel(unet, vae, None, None, projector, scheduler_config("dynamicrafter-256"))
    return meta, data, ShowMePipeline(model)


def test_ddim_eta1_reproduces_the_original_sampler(reference):
    torch.set_num_threads(1)
    meta, data, pipeline = reference
    batch = meta["batch"]
    cond = torch.cat([data["text"], data["image_tokens"]], dim=1)
    uncond = torch.cat([data["empty_text"], data["zero_image_tokens"]], dim=1).expand(batch, -1, -1)
    latents = pipeline.denoise(
        [cond, uncond],
        data["concat"],
        temporal=True,
        num_inference_steps=meta["num_steps"],
        guidance_scale=meta["guidance_scale"],
        eta=meta["eta"],
        frame_stride=meta["frame_stride"],
        generator=torch.Generator().manual_seed(meta["seed"]),
    )
    with torch.no_grad():
        frames = pipeline.model.decode_latents(latents)
    assert frames.shape == data["frames"].shape
    assert (frames - data["frames"]).abs().max().item() < 1e-3
    # The tolerance is tight against the spread of the frames being compared.
    assert data["frames"].std().item() > 0.1

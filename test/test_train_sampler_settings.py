"""Model folders made by the training code store sampler settings: the assembled initial folder
(from the component config's ``sampler`` section) and a base run's export (``sampler`` in the
training config, else the starting folder's)."""

import json

import pytest
import torch
from diffusers import AutoencoderKL

from showme_model.model import ShowMeModel
from showme_model.pipeline import default_model_path
from showme_model.sampler_config import (
    REFERENCE_SAMPLER_CONFIG,
    SAMPLER_CONFIG_NAME,
    SamplerConfig,
    SamplerSettingsError,
)
from training.config import config_from_dict, load_config
from training.loops import Trainer
from training.recipes.assemble_model import assemble, read_config

MODEL_CONFIG = "training/configs/metaworld64-model.yaml"
SHIPPED_BASE_CONFIG = "training/configs/metaworld64v-base.yaml"


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=64,
    )


def test_assembled_folder_stores_the_configs_sampler_section(vae, tmp_path):
    config = read_config(MODEL_CONFIG)
    assemble(config, vae).save_pretrained(tmp_path / "init")
    written = json.loads((tmp_path / "init" / SAMPLER_CONFIG_NAME).read_text())
    assert SamplerConfig.from_dict(written) == SamplerConfig.from_dict(config["sampler"])
    del config["sampler"]
    assert assemble(config, vae).sampler_config == REFERENCE_SAMPLER_CONFIG
    config["sampler"] = {"num_inference_steps": 10, "eta": 2.0}
    with pytest.raises(SamplerSettingsError, match="sampler section: eta"):
        assemble(config, vae)


def _base_run(tmp_path, folder, **extra):
    values = {
        "mode": "base",
        "output_dir": str(tmp_path / "run"),
        "max_steps": 1,
        "batch_size": 1,
        "report_to": None,
        "model": {"folder": str(folder)},
        "data": {"synthetic": 1, "resolution": 64, "num_frames": 2},
        **extra,
    }
    trainer = Trainer(config_from_dict(values))
    trainer.train()
    return ShowMeModel.from_pretrained(trainer.export() / "model").sampler_config


def test_base_run_exports_the_training_configs_settings_else_the_folders(tmp_path):
    folder = tmp_path / "start"
    model = ShowMeModel.from_config_name("tiny")
    model.sampler_config = SamplerConfig(num_inference_steps=7, num_frames=4)
    model.save_pretrained(folder)
    assert _base_run(tmp_path / "a", folder) == model.sampler_config
    chosen = {"num_inference_steps": 12, "guidance_scale": 2.0}
    assert _base_run(tmp_path / "b", folder, sampler=chosen) == SamplerConfig(**chosen)
    with pytest.raises(ValueError, match=r"unknown key.*sampler: steps"):
        config_from_dict({"data": {"synthetic": 1}, "sampler": {"steps": 3}})


def test_the_shipped_folder_stores_its_recipes_sampler_section():
    """The base config of the shipped model's recipe exports what the shipped folder stores."""
    section = load_config(SHIPPED_BASE_CONFIG, "base").sampler
    shipped = SamplerConfig.from_pretrained(default_model_path())
    assert section == shipped

"""Assemble an untrained model folder from a component config and a trained VAE.

The folder is what ``showme-train base`` starts from (``model.folder``): a randomly initialised
UNet, image encoder and image projector, the frozen packaged MiniLM-L6 text encoder, and the
given autoencoder, whose latent scaling factor is set to one over the standard deviation of its
latents on the manifest's training frames. ``training/recipes/`` holds scripts, not an installed
package; run them from the repository root::

    python -m training.recipes.assemble_model --config training/configs/metaworld64-model.yaml \
        --vae runs/metaworld64/vae --manifest data/metaworld64/manifest.jsonl \
        --out runs/metaworld64/init
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from diffusers import AutoencoderKL

from showme_model import presets
from showme_model.encoders import MINILM_PACKAGE, ConvImageEncoder, SentenceTextEncoder
from showme_model.model import ShowMeModel
from showme_model.resampler import ImageProjector
from showme_model.sampler_config import REFERENCE_SAMPLER_CONFIG, SamplerConfig
from showme_model.unet import ShowMeUNet
from training.data.clips import read_clip, resize_center_crop
from training.data.manifest import read_manifest

SECTIONS = ("preset_schedule", "text_encoder", "image_encoder", "image_projector", "unet")


def read_config(path: str | Path) -> dict[str, Any]:
    """Read the component config, checking that every section is present."""
    data = yaml.safe_load(Path(path).read_text())
    missing = [s for s in SECTIONS if not isinstance(data, dict) or s not in data]
    if missing:
        raise ValueError(f"{path} lacks section(s): {', '.join(missing)}")
    return data


@torch.no_grad()
def latent_std(vae: AutoencoderKL, manifest: str | Path, clips: int = 64) -> float:
    """Return the standard deviation of the unscaled latents (posterior mode) of train frames."""
    manifest = Path(manifest)
    size = vae.config.sample_size
    images = []
    for record in read_manifest(manifest, split="train")[:clips]:
        frames = read_clip(record.resolve(manifest.parent), lambda n: [0, n // 2, n - 1])
        images.append(resize_center_crop(frames, size, size))
    pixels = torch.from_numpy(np.concatenate(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return float(vae.encode(pixels).latent_dist.mode().std())


def assemble(config: dict[str, Any], vae: AutoencoderKL, seed: int = 0) -> ShowMeModel:
    """Build the model: random UNet, image encoder and projector around the given VAE.

    The model's sampler settings are the config's ``sampler`` section, else the reference ones.
    """
    torch.manual_seed(seed)
    text = config["text_encoder"]
    if text["package"] != MINILM_PACKAGE:
        raise ValueError(f"text_encoder.package must be {MINILM_PACKAGE!r}")
    text_encoder = SentenceTextEncoder.from_package(
        text["max_length"], text["context_dim"], text.get("sentence_token", False)
    )
    if config["unet"]["text_length"] != text_encoder.num_tokens:
        raise ValueError(
            f"unet.text_length must be {text_encoder.num_tokens} (text_encoder.max_length"
            " + 1 with sentence_token)"
        )
    image_encoder = ConvImageEncoder(**config["image_encoder"])
    projector = ImageProjector(
        input_dim=image_encoder.dim, output_dim=text_encoder.dim, **config["image_projector"]
    )
    unet = ShowMeUNet(cross_attention_dim=text_encoder.dim, **config["unet"])
    schedule = presets.scheduler_config(config["preset_schedule"])
    sampler = (
        SamplerConfig.from_dict(config["sampler"], source="sampler section")
        if "sampler" in config
        else REFERENCE_SAMPLER_CONFIG
    )
    return ShowMeModel(unet, vae, text_encoder, image_encoder, projector, schedule, sampler)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="component config (YAML)")
    parser.add_argument("--vae", required=True, help="trained AutoencoderKL folder")
    parser.add_argument("--manifest", required=True, help="clips for the latent scaling factor")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Assemble and save the model folder."""
    args = build_parser().parse_args(argv)
    vae = AutoencoderKL.from_pretrained(args.vae).eval()
    vae.register_to_config(scaling_factor=1.0 / latent_std(vae, args.manifest))
    model = assemble(read_config(args.config), vae, args.seed)
    model.save_pretrained(args.out)
    print(
        f"wrote {args.out} (latent scaling factor {vae.config.scaling_factor:.4f}; "
        f"sampler settings {model.sampler_config})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

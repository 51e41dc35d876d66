r"""Score a frame autoencoder as the ceiling of any model built on it, before training a denoiser.

``showme-eval --off-arm`` scores a model folder's autoencoder reconstruction of each true final
frame as the ceiling of its off-arm figures and of the objects kept. This entry point gives the
same ceiling figures for a bare ``AutoencoderKL`` folder (a candidate from
``training.train_vae``), so that autoencoders can be compared on the val split before a
diffusion model is trained on one. The predictions scored next to the ceiling are copies of the
input frame. Every option after ``--vae`` is ``showme-eval``'s::

    python -m training.autoencoder_ceiling --vae runs/latent32/vae \
        --manifest runs/metaworld64v/val/manifest.jsonl --split val --off-arm \
        --out runs/latent32/eval/ceiling-val.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import numpy as np
import torch
from diffusers import AutoencoderKL

from training import evaluate


def copy_input(
    images: list[np.ndarray], instructions: list[str], seeds: list[int]
) -> list[np.ndarray]:
    """Predict the input frame (a :data:`training.evaluate.Predictor`)."""
    return [image[None] for image in images]


def vae_round_trip(vae: AutoencoderKL) -> Callable[[torch.Tensor], torch.Tensor]:
    """Frames in ``[-1, 1]`` to their reconstructions (posterior mode, then decode).

    The latents are scaled and unscaled by ``scaling_factor`` as a model's
    ``encode_latents`` / ``decode_latents`` do, so that the reconstructions are bit for bit
    those of a model folder around this autoencoder (the rounding of that product can move a
    pixel by one level).
    """
    scale = vae.config.scaling_factor

    def round_trip(pixels: torch.Tensor) -> torch.Tensor:
        latents = vae.encode(pixels.to(vae.dtype)).latent_dist.mode() * scale
        return vae.decode(latents / scale).sample.float()

    return round_trip


def main(argv: Sequence[str] | None = None) -> int:
    """Load the autoencoder and run ``showme-eval`` with it as the reconstruction."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vae", required=True, help="AutoencoderKL folder")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args, rest = parser.parse_known_args(argv)
    if "--off-arm" not in rest:
        raise SystemExit("autoencoder_ceiling: the ceiling figures need --off-arm")
    torch.set_num_threads(args.threads)
    vae = AutoencoderKL.from_pretrained(args.vae).eval()
    size = int(vae.config.sample_size)
    reconstruct = evaluate.autoencoder_reconstructor(vae_round_trip(vae), (size, size))
    return evaluate.main(["--model", args.vae, "--mode", "image", *rest], copy_input, reconstruct)


if __name__ == "__main__":
    raise SystemExit(main())

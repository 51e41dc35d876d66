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

``--pixel-grid K`` scores a reference instead of an autoencoder: each frame averaged over KxK
pixel cells (a grid K times coarser than the frame, 3 values per cell) and brought back by
bicubic interpolation. It tells how much of an outcome's detail survives a K-times coarser
grid when nothing is learned, e.g. whether two outcomes still differ off the arm on a 32x32
grid (``--pixel-grid 2``) before an autoencoder with that grid is trained.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
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


def pixel_grid_round_trip(factor: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Frames in ``[-1, 1]`` averaged over ``factor`` x ``factor`` cells, then bicubically back up.

    Raises:
        ValueError: ``factor`` is below 1.

    """
    if factor < 1:
        raise ValueError(f"the pixel grid factor must be >= 1, got {factor}")

    def round_trip(pixels: torch.Tensor) -> torch.Tensor:
        if factor == 1:
            return pixels
        cells = F.avg_pool2d(pixels, factor)
        return F.interpolate(cells, size=pixels.shape[-2:], mode="bicubic", align_corners=False)

    return round_trip


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``showme-eval`` with the autoencoder (or the pixel grid) as the reconstruction."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--vae", help="AutoencoderKL folder")
    source.add_argument(
        "--pixel-grid",
        type=int,
        metavar="K",
        help="score frames averaged over KxK pixel cells instead of an autoencoder",
    )
    parser.add_argument(
        "--resolution", type=int, default=64, help="--pixel-grid: the frame size it works at"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args, rest = parser.parse_known_args(argv)
    if "--off-arm" not in rest:
        raise SystemExit("autoencoder_ceiling: the ceiling figures need --off-arm")
    torch.set_num_threads(args.threads)
    if args.vae is not None:
        vae = AutoencoderKL.from_pretrained(args.vae).eval()
        size, round_trip, name = int(vae.config.sample_size), vae_round_trip(vae), args.vae
    else:
        if args.pixel_grid < 1 or args.resolution % args.pixel_grid:
            raise SystemExit("autoencoder_ceiling: --pixel-grid must divide --resolution")
        size, round_trip = args.resolution, pixel_grid_round_trip(args.pixel_grid)
        name = f"pixel-grid-{args.pixel_grid}"
    reconstruct = evaluate.autoencoder_reconstructor(round_trip, (size, size))
    return evaluate.main(["--model", name, "--mode", "image", *rest], copy_input, reconstruct)


if __name__ == "__main__":
    raise SystemExit(main())

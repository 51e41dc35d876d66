"""Train a small diffusers ``AutoencoderKL`` on the frames of a clip manifest.

The shipped Meta-World model needs a frame autoencoder small enough to train on a CPU. This
trainer reads every frame of the chosen split's clips, fits the autoencoder with an L1
reconstruction loss plus a small KL term, reports the reconstruction PSNR on held-out clips and
writes a diffusers folder (``config.json`` + safetensors)::

    python -m training.train_vae --config training/configs/metaworld64-vae.yaml \
        --manifest data/metaworld64/manifest.jsonl --out runs/metaworld64/vae

With ``--init`` it continues from a trained autoencoder; ``train.decoder_only`` then keeps the
encoder (and so every latent a diffusion model was trained on) fixed and sharpens the decoder.
``train.detail_weight`` weighs each pixel's L1 error by its local detail (:func:`detail_weights`),
so that thin parts (a handle, a window frame, a lever), a few pixels of a 64x64 frame, count
for more than the flat background.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from diffusers import AutoencoderKL
from tqdm import tqdm

from training.data.clips import read_clip, resize_center_crop
from training.data.manifest import read_manifest

TRAIN_KEYS = {
    "steps",
    "batch_size",
    "lr",
    "kl_weight",
    "resolution",
    "crop",
    "seed",
    "max_clips",
    "decoder_only",
    "detail_weight",
}


def load_frames(
    manifest: str | Path, split: str, resolution: int, max_clips: int | None = None
) -> np.ndarray:
    """All frames ``(N, H, W, 3)`` uint8 of a split's clips, resized to ``resolution``.

    Raises:
        ValueError: The split has no clips.

    """
    manifest = Path(manifest)
    records = read_manifest(manifest, split=split)[:max_clips]
    if not records:
        raise ValueError(f"{manifest} has no {split!r} clips")
    clips = []
    for record in records:
        frames = read_clip(record.resolve(manifest.parent), lambda n: list(range(n)))
        clips.append(resize_center_crop(frames, resolution, resolution))
    return np.concatenate(clips)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in ``[-1, 1]``."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def detail_weights(images: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel loss weights ``(N, 1, H, W)``: 1 plus ``weight`` times the relative local detail.

    The detail of a pixel is its mean absolute difference (over channels) from the 3x3 mean
    around it, divided by the batch's mean detail; ``weight`` 0 gives the plain L1 loss.
    """
    local_mean = F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)
    detail = (images - local_mean).abs().mean(1, keepdim=True)
    return 1.0 + weight * detail / detail.mean().clamp(min=1e-8)


def l1_loss(recon: torch.Tensor, images: torch.Tensor, detail_weight: float) -> torch.Tensor:
    """Mean L1 error, each pixel weighted by :func:`detail_weights` when ``detail_weight`` > 0."""
    error = (recon - images).abs()
    if detail_weight:
        error = error * detail_weights(images, detail_weight)
    return error.mean()


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKL, images: torch.Tensor, batch: int = 64) -> float:
    """Mean PSNR (dB, images in ``[0, 1]``) of the posterior-mode reconstruction."""
    vae.eval()
    values = []
    for chunk in images.split(batch):
        recon = vae.decode(vae.encode(chunk).latent_dist.mode()).sample.clamp(-1, 1)
        mse = ((recon - chunk) / 2).pow(2).flatten(1).mean(1).clamp(min=1e-10)
        values.append(-10 * torch.log10(mse))
    vae.train()
    return float(torch.cat(values).mean())


def train(
    vae: AutoencoderKL,
    images: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    kl_weight: float,
    seed: int,
    crop: int | None = None,
    decoder_only: bool = False,
    detail_weight: float = 0.0,
) -> list[float]:
    """Fit ``vae`` on ``images`` (``[-1, 1]``); return the loss every 50 steps.

    With ``crop`` set, each batch is a random ``crop x crop`` window of its images (one window per
    batch): the autoencoder is fully convolutional, so it trains on windows at a fraction of the
    cost and still encodes whole frames. With ``decoder_only`` the encoder is frozen and the
    decoder learns from posterior-mode latents. ``detail_weight`` weighs the L1 error of each
    pixel (:func:`detail_weights`).
    """
    height, width = images.shape[-2:]
    crop_h, crop_w = (crop, crop) if crop else (height, width)
    generator = torch.Generator().manual_seed(seed)
    vae.requires_grad_(True)
    if decoder_only:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    trained = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=lr * 0.1)
    losses = []
    vae.train()
    for step in tqdm(range(steps), desc="vae", unit="step"):
        batch = images[torch.randint(len(images), (batch_size,), generator=generator)]
        top = int(torch.randint(height - crop_h + 1, (1,), generator=generator))
        left = int(torch.randint(width - crop_w + 1, (1,), generator=generator))
        batch = batch[..., top : top + crop_h, left : left + crop_w]
        if decoder_only:
            with torch.no_grad():
                latents = vae.encode(batch).latent_dist.mode()
            loss = l1_loss(vae.decode(latents).sample, batch, detail_weight)
        else:
            posterior = vae.encode(batch).latent_dist
            recon = vae.decode(posterior.sample(generator)).sample
            loss = l1_loss(recon, batch, detail_weight) + kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0:
            losses.append(float(loss.detach()))
    return losses


def read_config(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the ``vae`` (AutoencoderKL keyword arguments) and ``train`` sections of a YAML file.

    Raises:
        ValueError: A section is missing or ``train`` has unknown keys.

    """
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not {"vae", "train"} <= set(data):
        raise ValueError(f"{path} needs 'vae' and 'train' sections")
    unknown = set(data["train"]) - TRAIN_KEYS
    if unknown:
        raise ValueError(f"unknown key(s) in {path} train: {', '.join(sorted(unknown))}")
    return data["vae"], data["train"]


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML with 'vae' and 'train' sections")
    parser.add_argument("--manifest", required=True, help="clip manifest (JSONL)")
    parser.add_argument("--out", required=True, help="output folder (diffusers AutoencoderKL)")
    parser.add_argument(
        "--val-manifest", help="manifest whose 'val' clips are held out (default: --manifest)"
    )
    parser.add_argument("--init", help="continue from this trained AutoencoderKL folder")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Train, evaluate on the validation split (before and after, with ``--init``) and save."""
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    vae_kwargs, settings = read_config(args.config)
    torch.manual_seed(settings.get("seed", 0))
    resolution = settings.get("resolution", 64)
    start = time.perf_counter()
    images = to_tensor(load_frames(args.manifest, "train", resolution, settings.get("max_clips")))
    held_out = to_tensor(load_frames(args.val_manifest or args.manifest, "val", resolution, 16))
    vae = AutoencoderKL.from_pretrained(args.init) if args.init else AutoencoderKL(**vae_kwargs)
    init_psnr = reconstruction_psnr(vae, held_out) if args.init else None
    losses = train(
        vae,
        images,
        steps=settings["steps"],
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        kl_weight=settings["kl_weight"],
        seed=settings.get("seed", 0),
        crop=settings.get("crop"),
        decoder_only=settings.get("decoder_only", False),
        detail_weight=settings.get("detail_weight", 0.0),
    )
    vae.save_pretrained(args.out)
    report = {
        "train_frames": len(images),
        "val_frames": len(held_out),
        "init_val_psnr": init_psnr,
        "val_psnr": reconstruction_psnr(vae, held_out),
        "parameters": sum(p.numel() for p in vae.parameters()),
        "losses": losses,
        "seconds": time.perf_counter() - start,
    }
    (Path(args.out) / "train_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"val reconstruction PSNR {report['val_psnr']:.2f} dB in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

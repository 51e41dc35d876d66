"""Train the small depth network on simulator frames against the depth the renderer produced.

The Meta-World generator stores a ``depth`` array (T, H, W, metres) beside the ``frames`` of each
clip. This trainer reads a few frames per clip, fits :class:`SmallDepthNet` with an L1 loss on
depth clipped to ``--max-depth`` (the far background carries no structure), reports errors on
held-out clips and writes one safetensors file, later frozen as the structure reward's depth
critic::

    python -m training.train_depth --manifest data/metaworld/manifest.jsonl \
        --out runs/metaworld64/small_depth.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.data.manifest import read_manifest
from training.rewards.small_depth import SmallDepthNet


def load_frames_and_depth(
    manifest: str | Path,
    split: str,
    frames_per_clip: int,
    max_clips: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Collect (image, depth) pairs from the clips of one split.

    Args:
        manifest: JSONL manifest whose clips are ``.npz`` files with ``frames`` and ``depth``.
        split: Which split to read.
        frames_per_clip: Frames taken per clip (first, last and evenly between).
        max_clips: Read at most this many clips (a seeded random subset).
        seed: Seed of that subset.

    Returns:
        Images (N, H, W, 3) uint8, depth (N, H, W) float32, and counts of skipped clips by reason.

    """
    manifest = Path(manifest)
    records = read_manifest(manifest, split=split)
    if max_clips is not None and len(records) > max_clips:
        keep = np.random.default_rng(seed).choice(len(records), max_clips, replace=False)
        records = [records[i] for i in sorted(keep)]
    images, depths, skipped = [], [], Counter()
    for record in tqdm(records, desc=f"reading {split} depth", unit="clip"):
        path = record.resolve(manifest.parent)
        try:
            with np.load(path) as data:
                frames, depth = data["frames"], data["depth"]
        except (OSError, ValueError, KeyError, EOFError):
            skipped["missing" if not path.exists() else "no_depth_or_corrupt"] += 1
            continue
        if frames.shape[:3] != depth.shape[:3] or frames.ndim != 4:
            skipped["shape_mismatch"] += 1
            continue
        index = np.unique(np.rint(np.linspace(0, len(frames) - 1, frames_per_clip)).astype(int))
        images.append(frames[index])
        depths.append(depth[index].astype(np.float32))
    if not images:
        raise ValueError(f"no clip with frames and depth in split {split!r} of {manifest}")
    return np.concatenate(images), np.concatenate(depths), dict(skipped)


def to_tensors(images: np.ndarray, depth: np.ndarray, max_depth: float) -> tuple[torch.Tensor, ...]:
    """Images to (N, 3, H, W) in [-1, 1]; depth to (N, 1, H, W) clipped to ``max_depth``."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    y = torch.from_numpy(np.minimum(depth, max_depth))[:, None].float()
    return x, y


@torch.no_grad()
def depth_errors(
    model: SmallDepthNet | float, x: torch.Tensor, y: torch.Tensor
) -> dict[str, float]:
    """Measure standard depth errors: mean absolute, absolute relative, RMSE, delta < 1.25.

    Args:
        model: The network, or one constant depth (the reference a network must beat).
        x: Images (N, 3, H, W) in [-1, 1].
        y: True depth (N, 1, H, W).

    """
    if isinstance(model, SmallDepthNet):
        model.eval()
        pred = torch.cat([model(x[i : i + 64]) for i in range(0, len(x), 64)])
    else:
        pred = torch.full_like(y, float(model))
    ratio = torch.maximum(pred / y, y / pred)
    return {
        "abs": float((pred - y).abs().mean()),
        "abs_rel": float(((pred - y).abs() / y).mean()),
        "rmse": float(((pred - y) ** 2).mean().sqrt()),
        "delta1": float((ratio < 1.25).float().mean()),
    }


def train(
    model: SmallDepthNet,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
) -> list[float]:
    """Fit the model with AdamW, cosine-decayed learning rate and horizontal-flip augmentation.

    Returns:
        The training loss of every step.

    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps))
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="training depth", unit="step"):
        index = torch.randint(len(x), (batch_size,), generator=generator)
        images, target = x[index], y[index]
        flip = torch.rand(batch_size, generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        target = torch.where(flip[:, None, None, None], target.flip(-1), target)
        loss = F.l1_loss(model(images), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the depth trainer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="Meta-World manifest with depth")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--frames-per-clip", type=int, default=4)
    parser.add_argument("--max-clips", type=int, default=1000, help="train clips read at most")
    parser.add_argument("--max-depth", type=float, default=3.0, help="depth clip, metres")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 96])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Train, report train/validation errors, and save the network and a JSON report."""
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    images, depth, skipped = load_frames_and_depth(
        args.manifest, "train", args.frames_per_clip, args.max_clips, args.seed
    )
    x, y = to_tensors(images, depth, args.max_depth)
    try:
        val_images, val_depth, _ = load_frames_and_depth(
            args.manifest, "val", args.frames_per_clip, args.max_clips, args.seed
        )
        val = to_tensors(val_images, val_depth, args.max_depth)
    except ValueError:
        val = None
    median = float(y.median())
    model = SmallDepthNet(channels=tuple(args.channels))
    losses = train(model, x, y, args.steps, args.batch_size, args.lr, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    report = {
        "train_pairs": len(x),
        "val_pairs": 0 if val is None else len(val[0]),
        "skipped_clips": skipped,
        "parameters": sum(p.numel() for p in model.parameters()),
        "first_loss": losses[0] if losses else None,
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "train_errors": depth_errors(model, x, y),
        "val_errors": None if val is None else depth_errors(model, *val),
        "val_errors_constant_median": None if val is None else depth_errors(median, *val),
        "seconds": round(time.perf_counter() - start, 1),
        "settings": vars(args),
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    shown = ("train_errors", "val_errors", "val_errors_constant_median", "seconds")
    print(json.dumps({k: report[k] for k in shown}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

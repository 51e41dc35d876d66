"""Loader throughput: stage-2 clips per minute on one core.

Usage:
    python benchmarks/bench_loader.py [--manifest data/metaworld64/manifest.jsonl] [--clips 300]

Without a manifest (or when it is missing) synthetic clips are written to a temporary folder:
Meta-World-like ``.npz`` (16 frames, 64x64) and ``.mp4`` videos (48 frames, 128x96).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from training.data.dataset import ClipDataset
from training.data.manifest import ClipRecord, write_manifest


def _synthetic(folder: Path, kind: str, count: int) -> Path:
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        if kind == "npz":
            base = cv2.resize(rng.integers(0, 255, (16, 16, 3), np.uint8), (64, 64))
            frames = np.stack([np.roll(base, t, axis=1) for t in range(16)])
            name = f"c{i}.npz"
            np.savez_compressed(folder / name, frames=frames)
        else:
            base = cv2.resize(rng.integers(0, 255, (24, 32, 3), np.uint8), (128, 96))
            name = f"c{i}.mp4"
            writer = cv2.VideoWriter(
                str(folder / name), cv2.VideoWriter_fourcc(*"mp4v"), 12, (128, 96)
            )
            for t in range(48):
                writer.write(np.roll(base, t, axis=1))
            writer.release()
        records.append(ClipRecord(id=name, path=name, instruction="move it"))
    write_manifest(folder / f"{kind}.jsonl", records)
    return folder / f"{kind}.jsonl"


def _measure(manifest: Path, clips: int, size: int, frames: int) -> tuple[int, float]:
    dataset = ClipDataset(manifest, frames=frames, size=size)
    n = min(clips, len(dataset))
    dataset[0]  # warm-up
    start = time.perf_counter()
    for i in range(n):
        dataset[i]
    return n, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=Path("data/metaworld64/manifest.jsonl"))
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sources = []
        if args.manifest.exists():
            sources.append(("metaworld npz", args.manifest))
        sources.append(("synthetic npz 16f 64px", _synthetic(Path(tmp), "npz", args.clips)))
        sources.append(("synthetic mp4 48f 128x96", _synthetic(Path(tmp), "mp4", args.clips)))
        for name, manifest in sources:
            n, seconds = _measure(manifest, args.clips, args.size, args.frames)
            rows.append((name, n, seconds, n / seconds * 60))
    print(f"\nstage-2 clips ({args.frames} frames, {args.size}x{args.size}), one core, 1 process")
    print(f"{'source':<26} {'clips':>6} {'seconds':>8} {'clips/min':>10}")
    for name, n, seconds, rate in rows:
        print(f"{name:<26} {n:>6} {seconds:>8.2f} {rate:>10.0f}")
    print("\ncommand: python " + " ".join(sys.argv))


if __name__ == "__main__":
    main()

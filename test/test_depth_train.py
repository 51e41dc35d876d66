"""train_depth: learns a depth rule from (frame, depth) clips and writes a loadable network."""

import json

import numpy as np
import torch

from training.data.manifest import ClipRecord, write_manifest
from training.rewards.small_depth import SmallDepthNet
from training.train_depth import depth_errors, load_frames_and_depth, main, to_tensors


def _write_clips(root, count: int, split: str, seed: int) -> list[ClipRecord]:
    """Clips whose depth is a known function of colour: red is near, blue is far."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        frames = np.zeros((4, 32, 32, 3), np.uint8)
        for t in range(4):
            x0, y0 = rng.integers(0, 20, 2)
            frames[t, :, :, 2] = 200
            frames[t, y0 : y0 + 12, x0 : x0 + 12] = (220, 30, 30)
        depth = np.where(frames[..., 0] > 100, 0.8, 2.0).astype(np.float16)
        name = f"{split}-{i}"
        np.savez_compressed(root / f"{name}.npz", frames=frames, depth=depth)
        records.append(ClipRecord(name, f"{name}.npz", "x", split, "synthetic"))
    return records


def test_trainer_learns_depth_and_saves_a_loadable_net(tmp_path):
    torch.set_num_threads(1)
    records = _write_clips(tmp_path, 12, "train", 0) + _write_clips(tmp_path, 4, "val", 1)
    records.append(ClipRecord("gone", "gone.npz", "x", "train"))
    write_manifest(tmp_path / "manifest.jsonl", records)
    out = tmp_path / "depth.safetensors"
    argv = ["--manifest", str(tmp_path / "manifest.jsonl"), "--out", str(out)]
    argv += ["--steps", "120", "--batch-size", "8", "--channels", "8", "16", "--lr", "5e-3"]
    assert main(argv) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["skipped_clips"] == {"missing": 1}
    assert report["train_pairs"] == 48 and report["val_pairs"] == 16

    images, depth, _ = load_frames_and_depth(tmp_path / "manifest.jsonl", "val", 4)
    x, y = to_tensors(images, depth, max_depth=3.0)
    untrained = depth_errors(SmallDepthNet(channels=(8, 16)), x, y)
    trained = depth_errors(SmallDepthNet.from_file(out), x, y)
    assert trained["abs"] < 0.25 < untrained["abs"]
    assert report["val_errors"]["abs"] == trained["abs"]

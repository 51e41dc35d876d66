"""train_vae: a decoder-only pass keeps every latent and is measured on a separate val manifest."""

import json

import numpy as np
import torch
import yaml
from diffusers import AutoencoderKL

from training.data.manifest import ClipRecord, write_manifest
from training.train_vae import detail_weights, main

TINY_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D"],
    "block_out_channels": [8],
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "latent_channels": 2,
    "sample_size": 16,
}


def write_split(root, split: str, count: int, seed: int):
    """A manifest of ``count`` clips of random 16x16 frames in ``split``; return its path."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(count):
        name = f"{split}-{i}"
        frames = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
        np.savez_compressed(root / f"{name}.npz", frames=frames)
        records.append(ClipRecord(name, f"{name}.npz", "x", split, "synthetic"))
    write_manifest(root / "manifest.jsonl", records)
    return root / "manifest.jsonl"


def test_a_decoder_pass_keeps_the_encoder_and_reports_val_before_and_after(tmp_path):
    train = write_split(tmp_path / "train", "train", 4, seed=0)
    val = write_split(tmp_path / "val", "val", 2, seed=1)
    torch.manual_seed(0)
    AutoencoderKL(**TINY_VAE).save_pretrained(tmp_path / "first")
    config = tmp_path / "decoder.yaml"
    settings = {"resolution": 16, "steps": 3, "batch_size": 2, "lr": 1e-3, "kl_weight": 0.0}
    config.write_text(yaml.safe_dump({"vae": {}, "train": {**settings, "decoder_only": True}}))
    argv = ["--config", str(config), "--manifest", str(train), "--out", str(tmp_path / "second")]
    argv += ["--val-manifest", str(val), "--init", str(tmp_path / "first"), "--threads", "1"]
    assert main(argv) == 0
    report = json.loads((tmp_path / "second" / "train_report.json").read_text())
    assert report["val_frames"] == 4 and report["train_frames"] == 8
    assert np.isfinite([report["init_val_psnr"], report["val_psnr"]]).all()
    assert report["init_val_psnr"] != report["val_psnr"]
    first = AutoencoderKL.from_pretrained(tmp_path / "first").state_dict()
    second = AutoencoderKL.from_pretrained(tmp_path / "second").state_dict()
    frozen = [name for name in first if name.startswith(("encoder.", "quant_conv."))]
    assert frozen and all(torch.equal(first[name], second[name]) for name in frozen)
    assert any(not torch.equal(w, second[n]) for n, w in first.items() if n.startswith("decoder."))


def test_detail_weights_favour_thin_parts_over_flat_background():
    image = torch.full((1, 3, 16, 16), -0.5)
    image[:, :, 4:12, 8] = 1.0  # a one-pixel-wide bar, like a handle
    weights = detail_weights(image, 4.0)
    assert weights.shape == (1, 1, 16, 16)
    assert weights[0, 0, 8, 8] > 3 * weights[0, 0, 8, 2]  # on the bar vs far from it
    assert torch.allclose(weights[0, 0, 8, 2], torch.tensor(1.0))  # flat: the plain L1 weight
    assert torch.equal(detail_weights(image, 0.0), torch.ones(1, 1, 16, 16))


def test_a_detail_weighted_pass_trains_differently(tmp_path):
    train = write_split(tmp_path / "train", "train", 2, seed=0)
    val = write_split(tmp_path / "val", "val", 1, seed=1)
    torch.manual_seed(0)
    AutoencoderKL(**TINY_VAE).save_pretrained(tmp_path / "first")
    outputs = {}
    for weight in (0.0, 4.0):
        config = tmp_path / f"detail-{weight}.yaml"
        settings = {"resolution": 16, "steps": 2, "batch_size": 2, "lr": 1e-3, "kl_weight": 0.0}
        settings |= {"decoder_only": True, "detail_weight": weight}
        config.write_text(yaml.safe_dump({"vae": {}, "train": settings}))
        out = tmp_path / f"out-{weight}"
        argv = ["--config", str(config), "--manifest", str(train), "--out", str(out)]
        argv += ["--val-manifest", str(val)]
        assert main([*argv, "--init", str(tmp_path / "first"), "--threads", "1"]) == 0
        outputs[weight] = AutoencoderKL.from_pretrained(out).state_dict()
    name = next(n for n in outputs[0.0] if n.startswith("decoder.") and n.endswith("weight"))
    assert not torch.equal(outputs[0.0][name], outputs[4.0][name])

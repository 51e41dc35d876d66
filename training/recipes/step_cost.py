"""Time base-mode training steps of a model folder's architecture, side by side, on one thread.

The cost is CPU time of the process (one torch thread), which a shared machine does not inflate;
wall time is printed next to it.

Each setting (frames per clip, batch size, UNet channels) trains the folder's UNet without its
adapters (a random one when other channels are given) on synthetic 64x64 clips, with the
folder's frozen VAE and encoders; the first steps are warm-up and not timed. From the
repository root::

    python -m training.recipes.step_cost --model showme_model/weights/showme-metaworld-64 \
        --setting 2x8 --setting 8x8 --setting 16x4 --setting 8x8:64,96,96
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from showme_model.model import ShowMeModel
from showme_model.unet import ShowMeUNet
from training.config import config_from_dict
from training.loops import Trainer


def parse_setting(text: str) -> tuple[int, int, tuple[int, ...] | None]:
    """``FRAMESxBATCH[:C1,C2,C3]`` -> (frames, batch, UNet channels or None)."""
    shape, _, channels = text.partition(":")
    frames, _, batch = shape.partition("x")
    try:
        widths = tuple(int(c) for c in channels.split(",")) if channels else None
        return int(frames), int(batch), widths
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad setting {text!r}: FRAMESxBATCH[:C1,C2,C3]") from None


def model_folder(base: Path, channels: tuple[int, ...] | None, out: Path) -> Path:
    """Write a copy of the base folder without adapters, its UNet with other channels if given."""
    model = ShowMeModel.from_pretrained(base, load_adapters=False)
    if channels is not None:  # a random UNet of the same design
        config = {k: v for k, v in model.unet.config.items() if not k.startswith("_")}
        model.unet = ShowMeUNet(**{**config, "block_out_channels": list(channels)})
    model.save_pretrained(out)
    return out


def time_steps(
    folder: Path, frames: int, batch: int, steps: int, warmup: int
) -> tuple[float, float, int]:
    """CPU and wall seconds per optimizer step, and the number of trained parameters."""
    with tempfile.TemporaryDirectory() as tmp:
        config = config_from_dict(
            {
                "mode": "base",
                "output_dir": tmp,
                "batch_size": batch,
                "max_steps": steps + warmup,
                "report_to": None,
                "video_concat": 1.0,
                "model": {"preset": None, "folder": str(folder)},
                "data": {"synthetic": 64, "resolution": 64, "num_frames": frames},
            }
        )
        trainer = Trainer(config)
        batches = iter(trainer._loader())
        for _ in range(warmup):
            trainer.step([next(batches)])
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(steps):
            trainer.step([next(batches)])
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return cpu / steps, wall / steps, sum(p.numel() for p in trainer.parameters)


def main(argv: Sequence[str] | None = None) -> None:
    """Print CPU seconds per step (and per clip frame) for each setting."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="model folder")
    parser.add_argument("--setting", type=parse_setting, action="append", required=True)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for index, (frames, batch, channels) in enumerate(args.setting):
            folder = model_folder(args.model, channels, Path(tmp) / f"model-{index}")
            cpu, wall, params = time_steps(folder, frames, batch, args.steps, args.warmup)
            print(
                f"frames {frames:2d} batch {batch:2d} unet {channels or 'folder'}: "
                f"{params / 1e6:.2f} M trained, {cpu:.2f} CPU-s/step "
                f"({1000 * cpu / (frames * batch):.1f} ms per frame), wall {wall:.2f} s/step",
                flush=True,
            )


if __name__ == "__main__":
    main()

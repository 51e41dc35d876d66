r"""``showme predict``: goal images and rollouts from the command line.

Example::

    showme predict --model DIR --image in.png --instruction "open the drawer" \\
        --mode video --out out.mp4

Sampler options left out take the model folder's stored settings (``sampler_config.json``; see
:mod:`showme_model.sampler_config`). ``--out`` takes ``.png`` (goal image; in video mode one PNG
per frame), ``.gif`` or ``.mp4``.
With several ``--instruction`` values, one file per candidate is written, named
``<stem>_<i><suffix>``. ``--strip`` also writes input | output frames side by side as a PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from showme_model import adapters
from showme_model.pipeline import ShowMePipeline, default_model_path
from showme_model.schedulers import SCHEDULERS
from showme_model.writers import make_strip, write_frames, write_png

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_parser() -> argparse.ArgumentParser:
    """Build the ``showme`` argument parser."""
    parser = argparse.ArgumentParser(prog="showme", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="predict a goal image or a rollout")
    predict.add_argument("--model", type=Path, help="model folder (default: the shipped model)")
    predict.add_argument("--image", type=Path, required=True, help="input image file")
    predict.add_argument(
        "--instruction", action="append", required=True, help="instruction; repeat for candidates"
    )
    predict.add_argument("--mode", choices=("image", "video"), default="image")
    predict.add_argument("--out", type=Path, required=True, help="output .png, .gif or .mp4")
    stored = " (default: the model's sampler_config.json)"
    predict.add_argument("--num-frames", type=int, help="rollout length (video)" + stored)
    predict.add_argument(
        "--num-inference-steps",
        "--steps",
        dest="num_inference_steps",
        type=int,
        help="denoising steps" + stored,
    )
    predict.add_argument("--guidance-scale", type=float, help="guidance scale" + stored)
    predict.add_argument(
        "--image-guidance-scale", type=float, default=None, help="enables two-scale guidance"
    )
    predict.add_argument("--eta", type=float, help="DDIM noise scale" + stored)
    predict.add_argument("--frame-stride", type=int, help="frame-stride condition" + stored)
    predict.add_argument("--scheduler", choices=sorted(SCHEDULERS), help="sampler" + stored)
    predict.add_argument(
        "--keep-scene",
        action=argparse.BooleanOptionalAction,
        help="composite the frames over the input where they do not change it" + stored,
    )
    predict.add_argument(
        "--adapters",
        nargs="*",
        choices=sorted(adapters.ROLES),
        metavar="ROLE",
        help="adapter roles acting in this mode, none when given alone (default: the model "
        "folder's choice, mode_adapters.json, else the method's)",
    )
    predict.add_argument("--seed", type=int, default=None, help="random when not given")
    predict.add_argument("--resize-mode", choices=("crop", "stretch"), default="crop")
    predict.add_argument(
        "--restore-size", action="store_true", help="resize outputs to the input region's size"
    )
    predict.add_argument("--fps", type=float, default=8.0, help="GIF/MP4 frame rate")
    predict.add_argument("--strip", type=Path, default=None, help="also write a PNG strip")
    predict.add_argument("--metadata", type=Path, default=None, help="also write metadata JSON")
    predict.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    predict.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    return parser


def read_image(path: Path) -> np.ndarray:
    """Read an image file as stored (grey, BGR or BGRA; 8 or 16 bit)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileNotFoundError(f"cannot read an image from {path}")
    if image.dtype == np.uint16:
        image = image.astype(np.float32) / 65535.0
    return image


def output_paths(out: Path, count: int) -> list[Path]:
    """One output path per candidate: ``out`` itself, or ``<stem>_<i><suffix>``."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(count)]


def predict(args: argparse.Namespace) -> list[Path]:
    """Run one prediction and write its files; returns the paths written."""
    model_folder = args.model or default_model_path()
    pipeline = ShowMePipeline.from_pretrained(
        model_folder, device=args.device, dtype=DTYPES[args.dtype]
    )
    if args.adapters is not None:
        adapters.set_mode_roles(pipeline.model, args.mode, args.adapters)
    image = read_image(args.image)
    with tqdm(desc=f"showme {args.mode}", unit="step") as bar:

        def advance(pipe: ShowMePipeline, step: int, timestep: torch.Tensor, tensors: dict) -> dict:
            bar.total = pipe.num_timesteps
            bar.update(1)
            return tensors

        result = pipeline(
            image,
            args.instruction,
            mode=args.mode,
            num_inference_steps=args.num_inference_steps,
            guidance_scale=args.guidance_scale,
            image_guidance_scale=args.image_guidance_scale,
            eta=args.eta,
            num_frames=args.num_frames,
            frame_stride=args.frame_stride,
            scheduler=args.scheduler,
            keep_scene=args.keep_scene,
            seed=args.seed,
            callback_on_step_end=advance,
            channel_order="bgr",
            resize_mode=args.resize_mode,
            restore_size=args.restore_size,
        )
    written: list[Path] = []
    for frames, path in zip(result.frames, output_paths(args.out, len(result.frames)), strict=True):
        written += write_frames(path, frames, fps=args.fps)
    if args.strip is not None:
        source = cv2.cvtColor(cv2.imread(str(args.image), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        # One row per candidate; rows have equal widths (same frame count and size).
        rows = [make_strip(source, rollout=frames) for frames in result.frames]
        written.append(write_png(args.strip, np.concatenate(rows)))
    if args.metadata is not None:
        args.metadata.write_text(json.dumps(result.metadata, indent=2) + "\n")
        written.append(args.metadata)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``showme`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        written = predict(args)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

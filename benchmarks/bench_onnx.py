"""onnxruntime against eager PyTorch on the CPU, side by side, for the shipped model.

    python benchmarks/bench_onnx.py [--onnx DIR] [--frames 8] [--repeats 5]

Both run on one thread (``torch.set_num_threads(1)``, onnxruntime ``intra_op_num_threads=1``).
Per UNet forward: the eager UNet as the pipeline runs it (adapters active, unmerged), the eager
UNet with the mode's adapters merged (what the graphs contain), and the exported graph, on the
same inputs. Per call: ``ShowMePipeline`` against ``onnx_pipeline`` for a goal image and a rollout
with the model's stored sampler settings and the same seed. The measurements of one repeat are
taken back to back and the repeats interleave, so load on a shared machine hits all of them alike;
times are process CPU seconds, median of the repeats. Without ``--onnx`` the graphs are exported
first (``showme-export onnx`` with ``--num-frames FRAMES``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from showme_model import adapters
from showme_model.onnx_export import example_inputs, export_model, merged_unet
from showme_model.onnx_unet import onnx_pipeline
from showme_model.pipeline import SHIPPED_MODEL, ShowMePipeline

FIXTURE = (
    Path(__file__).resolve().parents[1]
    / "test/fixtures/metaworld_heldout/coffee-002028_coffee-pull_first.png"
)


def cpu_seconds(run: Callable[[], object]) -> tuple[float, object]:
    """Process CPU seconds of one call, and what it returned."""
    start = time.process_time()
    value = run()
    return time.process_time() - start, value


def median_times(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median CPU seconds of each run over interleaved repeats (after one warm-up each)."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(cpu_seconds(run)[0])
    return {name: float(np.median(values)) for name, values in times.items()}


def forward_runs(
    eager: ShowMePipeline, onnx: ShowMePipeline, mode: str, frames: int, batch: int
) -> dict[str, Callable[[], object]]:
    """One UNet forward of ``mode`` three ways, on the same inputs."""
    model = eager.model
    roles = adapters.roles_for_mode(model, mode)
    merged = merged_unet(model.unet, roles)
    inputs = example_inputs(model, mode, frames, batch)
    stride = inputs[3] if mode == "video" else None
    temporal = mode == "video"

    def unmerged() -> torch.Tensor:
        with adapters.active_adapters(model, roles):
            return model.unet(*inputs[:3], stride, temporal=temporal)

    return {
        "eager": unmerged,
        "eager, adapters merged": lambda: merged(*inputs[:3], stride, temporal=temporal),
        "onnxruntime": lambda: onnx.model.unet(*inputs[:3], stride, temporal=temporal),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--onnx", type=Path, help="showme-export onnx folder (else exported)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    eager = ShowMePipeline.from_pretrained(SHIPPED_MODEL)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.onnx
        if folder is None:
            folder = Path(scratch)
            seconds, _ = cpu_seconds(
                lambda: export_model(eager.model, folder, num_frames=args.frames)
            )
            print(f"exported both graphs in {seconds:.0f} CPU s")
        onnx = onnx_pipeline(SHIPPED_MODEL, folder, threads=1)
        run_table(eager, onnx, args)


@torch.no_grad()
def run_table(eager: ShowMePipeline, onnx: ShowMePipeline, args: argparse.Namespace) -> None:
    from PIL import Image

    image = np.asarray(Image.open(FIXTURE).convert("RGB"))
    settings = eager.sampler_config
    steps = settings.num_inference_steps
    batch = 1 if settings.guidance_scale == 1.0 else 2
    rows = []
    for mode, frames in (("image", 1), ("video", args.frames)):
        name = "goal image" if mode == "image" else f"{frames}-frame rollout"
        times = median_times(forward_runs(eager, onnx, mode, frames, batch), args.repeats)
        rows += [(f"UNet forward, {name}, batch {batch}", times, "")]

        def call(pipeline: ShowMePipeline, mode: str = mode) -> np.ndarray:
            options = {"mode": mode, "num_frames": args.frames, "seed": 0, "output_type": "float"}
            return pipeline(image, "pull the coffee cup", **options).frames

        times = median_times({"eager": lambda: call(eager), "onnxruntime": lambda: call(onnx)}, 3)
        difference = np.abs(call(eager) - call(onnx)).max()
        rows += [(f"call, {name}, {steps} steps", times, f"max frame difference {difference:.1e}")]
    print(
        f"\nCommand: `python benchmarks/bench_onnx.py --frames {args.frames} --repeats "
        f"{args.repeats}` (torch {torch.__version__}, onnxruntime {ort.__version__}, 1 thread "
        "each, process CPU seconds, median of interleaved repeats; shipped model, its sampler: "
        f"{steps} DDIM steps, guidance {settings.guidance_scale})\n"
    )
    print("| measurement | runtime | CPU s | speed-up vs eager | output |")
    print("| --- | --- | ---: | ---: | --- |")
    for measurement, times, note in rows:
        for label, seconds in times.items():
            text = note if label == "onnxruntime" else ""
            ratio = times["eager"] / seconds
            print(f"| {measurement} | {label} | {seconds:.3f} | {ratio:.2f}x | {text} |")


if __name__ == "__main__":
    main()

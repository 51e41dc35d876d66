"""CPU speed of the shipped model against its FLOP floor, one thread, side by side in one run.

    python benchmarks/bench_cpu_speed.py [--repeats 7] [--onnx DIR] [--compile] [--bfloat16]

The shipped model (``showme-metaworld-64``, 64x64 frames) with its stored sampler settings and
adapters per mode (named in the table's header), called as the ROS node calls it (image cache off;
the text cache is warm, as it is for a repeated instruction). Each variant gets its own pipeline
on the same weights; calls alternate between the variants so that load on a shared machine
falls on all of them alike. Time is the process's CPU time; the median of ``--repeats`` calls
after a warm-up call is reported.

The floor of a call is its FLOPs (``torch.utils.flop_counter`` over the whole call: encoders,
UNet steps, VAE; the compiled variant takes the reference's count) divided by the rate of a
1024x1024x1024 float32 matmul on one thread, measured in the same run (median of the same
alternation).

Variants: ``reference`` (LoRA layers run at every step), ``merged adapters``
(``ShowMePipeline(merge_adapters=True)``, the node's PyTorch path on the CPU), ``merged +
channels-last`` (convolution weights and activations in channels-last layout), ``ONNX graphs``
(the node's path with ``model.onnx_path``: the UNet's graphs in onnxruntime, one intra-op
thread, the rest in PyTorch; its floor takes the merged count, the computation the graphs hold)
and, with ``--compile``, the node's path with ``model.compile``
(``ShowMePipeline(merge_adapters=True, compile_unet=True)``: ``torch.compile`` of each mode's
merged UNet; the first call's wall time, which compiles, is reported; its floor takes the
merged count) and, with ``--bfloat16`` as well, the same in bfloat16 (the node's ``dtype:
bfloat16`` with ``model.compile``, whose merged copies compute attention as matmul, softmax,
matmul; oneDNN runs bfloat16 matmuls and convolutions on AMX where the CPU has it; its floor
keeps the float32 rate and the merged count). Every variant's frames
are compared with the reference's (max absolute difference in [0, 1]). The graphs are those of
``--onnx DIR`` (``showme-export onnx`` of the shipped model with the rollout length of its
stored settings), or exported to a temporary folder first. The table names the CPU: the floor
is relative to its matmul rate.

A second table times the 8-frame UNet forward (merged weights, batch 1 and 2) with this UNet's
temporal layers against diffusers' ``TemporalConvLayer`` / ``TransformerTemporalModel`` forward
on the same weights (the layout before the temporal convolutions ran as 2-D convolutions).
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from diffusers.models.resnet import TemporalConvLayer
from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel
from torch.utils.flop_counter import FlopCounterMode

from showme_model import adapters
from showme_model.model import ShowMeModel
from showme_model.onnx_export import context_length, export_model, latent_size, merged_unet
from showme_model.onnx_unet import onnx_pipeline
from showme_model.pipeline import ShowMePipeline, default_model_path
from showme_model.unet import ShowMeUNet

MATMUL_SIZE = 1024
INSTRUCTION = "open the drawer"
MODES = ("image", "video")
ONNX_VARIANT = "ONNX graphs (model.onnx_path)"
COMPILE_VARIANT = "merged + torch.compile (model.compile)"
BFLOAT16_VARIANT = "bfloat16, merged + torch.compile (dtype, model.compile)"
MATMUL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
"""CPU flags that set the matmul rate (``cpu_model`` names those the CPU has)."""
UNET_REPEATS_PER_CALL = 4  # UNet forwards per repeat of a call in the UNet table


def to_channels_last(module: torch.nn.Module) -> None:
    """Store every 2-D convolution weight of ``module`` in channels-last layout."""
    for layer in module.modules():
        if isinstance(layer, torch.nn.Conv2d):
            layer.weight.data = layer.weight.data.contiguous(memory_format=torch.channels_last)


def cpu_model() -> str:
    """The CPU's model name and matmul instruction sets (``/proc/cpuinfo``).

    The floor is relative to the CPU's own matmul rate, so the ratios depend on the CPU: a
    table names the one it was measured on.
    """
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return platform.processor() or "unknown CPU"
    lines = cpuinfo.read_text().split("\n\n")[0].splitlines()  # the first processor's
    fields = {key.strip(): value.strip() for key, _, value in (x.partition(":") for x in lines)}
    name = fields.get("model name", "unknown CPU")
    flags = fields.get("flags", "").split()
    present = [flag for flag in MATMUL_FLAGS if flag in flags]
    return f"{name} ({', '.join(present) or 'no AVX2'})"


def cpu_seconds(run: Callable[[], object]) -> float:
    """CPU time of one call of ``run``."""
    start = time.process_time()
    run()
    return time.process_time() - start


def with_diffusers_temporal_layers(unet: ShowMeUNet) -> ShowMeUNet:
    """A copy of ``unet`` whose temporal layers run diffusers' own forward (same weights)."""
    unet = copy.deepcopy(unet)
    for module in unet.modules():
        for diffusers_class in (TemporalConvLayer, TransformerTemporalModel):
            if isinstance(module, diffusers_class):
                module.__class__ = diffusers_class
    return unet


def temporal_layer_rows(folder: Path, frames: int, repeats: int) -> list[str]:
    """Rows timing the UNet forward with this UNet's and with diffusers' temporal layers."""
    model = ShowMeModel.from_pretrained(folder).eval()
    unet = merged_unet(model.unet, adapters.roles_for_mode(model, "video"))
    variants = {"diffusers' layers": with_diffusers_temporal_layers(unet), "this UNet's": unet}
    config = unet.config
    rows = []
    for batch in (1, 2):
        generator = torch.Generator().manual_seed(batch)
        inputs = (
            torch.randn(
                batch, config.in_channels, frames, *latent_size(model), generator=generator
            ),
            torch.full((batch,), 500.0),
            torch.randn(
                batch, context_length(model), config.cross_attention_dim, generator=generator
            ),
            torch.ones(batch),
        )
        times: dict[str, list[float]] = {name: [] for name in variants}
        with torch.no_grad():
            outputs = {name: forward(*inputs) for name, forward in variants.items()}
            for _ in range(repeats * UNET_REPEATS_PER_CALL):
                for name, forward in variants.items():
                    times[name].append(cpu_seconds(lambda f=forward, x=inputs: f(*x)))
        before = statistics.median(times["diffusers' layers"])
        for name, samples in times.items():
            seconds = statistics.median(samples)
            diff = (outputs[name] - outputs["diffusers' layers"]).abs().max().item()
            rows.append(
                f"| {frames}-frame UNet forward, batch {batch} | {name} | {seconds * 1e3:.1f} | "
                f"{before / seconds:.3f}x | {diff:.1e} |"
            )
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--onnx", type=Path, help="showme-export onnx folder of the shipped model (else exported)"
    )
    parser.add_argument("--compile", action="store_true", help="also torch.compile the UNet")
    parser.add_argument(
        "--bfloat16", action="store_true", help="with --compile: also the compiled path in bfloat16"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    folder = default_model_path()
    with tempfile.TemporaryDirectory() as scratch:
        return run(args, folder, args.onnx or export_graphs(folder, Path(scratch)))


def export_graphs(folder: Path, out: Path) -> Path:
    """Export the shipped model's graphs, the video graph at its stored rollout length."""
    model = ShowMeModel.from_pretrained(folder).eval()
    frames = model.sampler_config.num_frames
    export_model(model, out, num_frames=frames)
    return out


def run(args: argparse.Namespace, folder: Path, onnx_folder: Path) -> str:
    """Time the variants' calls and the UNet forwards; print and return the tables."""
    variants = {
        "reference": ShowMePipeline.from_pretrained(folder, image_cache_size=0),
        "merged adapters": ShowMePipeline.from_pretrained(
            folder, image_cache_size=0, merge_adapters=True
        ),
        "merged + channels-last": ShowMePipeline.from_pretrained(
            folder, image_cache_size=0, merge_adapters=True
        ),
    }
    # The node's pipeline with model.onnx_path set (showme_ros.engine.Engine.load).
    variants[ONNX_VARIANT] = onnx_pipeline(
        folder, onnx_folder, threads=1, image_cache_size=0, eager_fallback=True
    )
    to_channels_last(variants["merged + channels-last"].model)
    settings = variants["reference"].sampler_config
    compile_seconds: dict[str, float] = {}
    if args.compile:  # the node's PyTorch path with model.compile set
        variants[COMPILE_VARIANT] = ShowMePipeline.from_pretrained(
            folder, image_cache_size=0, merge_adapters=True, compile_unet=True
        )
        if args.bfloat16:
            variants[BFLOAT16_VARIANT] = ShowMePipeline.from_pretrained(
                folder,
                dtype=torch.bfloat16,
                image_cache_size=0,
                merge_adapters=True,
                compile_unet=True,
            )
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    rows = []
    for mode in MODES:

        def call(pipeline: ShowMePipeline, mode: str = mode) -> np.ndarray:
            return pipeline(image, INSTRUCTION, mode, seed=0, output_type="float").frames

        outputs = {}
        for name, pipeline in variants.items():
            start = time.perf_counter()
            outputs[name] = call(pipeline)  # warm-up (and compilation)
            compile_seconds[f"{name} {mode}"] = time.perf_counter() - start
        gflop = {}
        for name in variants:
            compiled = (ONNX_VARIANT, COMPILE_VARIANT, BFLOAT16_VARIANT)
            counted = "merged adapters" if name in compiled else name
            if counted not in gflop:
                with FlopCounterMode(display=False) as counter:
                    call(variants[counted])
                gflop[counted] = counter.get_total_flops() / 1e9
            gflop[name] = gflop[counted]
        times: dict[str, list[float]] = {name: [] for name in variants}
        matmul: list[float] = []
        for _ in range(args.repeats):
            for name, pipeline in variants.items():
                times[name].append(cpu_seconds(lambda p=pipeline: call(p)))
            matmul.append(cpu_seconds(lambda: a @ b))
        rate = 2 * MATMUL_SIZE**3 / statistics.median(matmul) / 1e9
        reference = statistics.median(times["reference"])
        for name, samples in times.items():
            seconds = statistics.median(samples)
            floor = gflop[name] / rate
            diff = np.abs(outputs[name] - outputs["reference"]).max()
            label = "goal image" if mode == "image" else f"{settings.num_frames}-frame rollout"
            note = ""
            if name in (COMPILE_VARIANT, BFLOAT16_VARIANT):
                note = f" (first call {compile_seconds[f'{name} {mode}']:.0f} s wall)"
            rows.append(
                f"| {label} | {name}{note} | {seconds:.3f} | {reference / seconds:.2f}x | "
                f"{gflop[name]:.2f} | {rate:.0f} | {floor:.3f} | {seconds / floor:.2f}x | "
                f"{diff:.1e} |"
            )
    roles = {mode: adapters.roles_for_mode(variants["reference"].model, mode) for mode in MODES}
    header = (
        f"Command: `{' '.join(['python', *sys.argv])}` (torch {torch.__version__}, "
        f"{cpu_model()}, 1 thread, CPU seconds, median of {args.repeats}; showme-metaworld-64, "
        f"{settings.num_inference_steps} {settings.scheduler.upper()} steps, guidance "
        f"{settings.guidance_scale:g}, {settings.num_frames}-frame rollouts; adapters: image mode "
        f"{', '.join(roles['image']) or 'none'}, video mode {', '.join(roles['video']) or 'none'})"
        "\n\n| call | variant | CPU s | speed-up | GFLOP | matmul GFLOP/s | floor s | "
        "x floor | max frame diff |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    unet_rows = temporal_layer_rows(folder, settings.num_frames, args.repeats)
    table = (
        header
        + "\n".join(rows)
        + "\n\n| forward | temporal layers | CPU ms | speed-up | max output diff |\n"
        + "| --- | --- | ---: | ---: | ---: |\n"
        + "\n".join(unet_rows)
        + "\n"
    )
    print(table)
    return table


if __name__ == "__main__":
    main()

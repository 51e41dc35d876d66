"""The shipped model's UNet forward alone against its FLOP floor, one thread, per runtime.

    python benchmarks/bench_unet_floor.py [--repeats 30]

Where a call's time goes beyond its floor (``bench_cpu_speed.py``): one UNet forward of each
mode at the node's shapes (batch 2, the conditional and unconditional branch of guidance 2; a
goal image is one frame, a rollout the stored number of frames), with the mode's adapters merged,
run eagerly in PyTorch, by onnxruntime from the ``showme-export onnx`` graphs (one intra-op
thread), through ``torch.compile`` with inductor's defaults, with weight freezing
(``freezing``: constant folding, prepacked oneDNN weights) and with freezing and the C++
wrapper (``cpp_wrapper``: no Python between kernels), and in bfloat16 (eager, and compiled
with freezing; oneDNN runs bfloat16 matmuls and convolutions on AMX where the CPU has it).
Rows marked "math attention" compute attention as matmul, softmax, matmul
(``unet_blocks.set_attention_kernel(unet, "math")``, what the pipeline's merged copies use in
bfloat16 on the CPU); the others with PyTorch's fused SDPA kernel.
The floor is the forward's FLOPs (``torch.utils.flop_counter``) divided by the rate of a
1024x1024x1024 float32 matmul on one thread, measured in the same alternation; the bfloat16
rows keep that floor (the same FLOPs) and name the bfloat16 matmul rate. Median CPU time of
``--repeats`` forwards per runtime, alternating between runtimes (each compiled variant with the
eager forward); the outputs are compared with the eager float32 forward's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch._inductor.config as inductor_config
from bench_cpu_speed import MATMUL_SIZE, cpu_model, cpu_seconds, export_graphs
from torch.utils.flop_counter import FlopCounterMode

from showme_model import adapters
from showme_model.model import ShowMeModel
from showme_model.onnx_export import context_length, latent_size, merged_unet
from showme_model.onnx_unet import onnx_pipeline
from showme_model.pipeline import default_model_path
from showme_model.unet_blocks import AttentionKernel, set_attention_kernel

BATCH = 2
FREEZING = {"freezing": True}
COMPILED = (
    ("torch.compile", torch.float32, {}, "sdpa"),
    ("torch.compile, freezing", torch.float32, FREEZING, "sdpa"),
    (
        "torch.compile, freezing + cpp_wrapper",
        torch.float32,
        {**FREEZING, "cpp_wrapper": True},
        "sdpa",
    ),
    ("torch.compile, freezing, math attention", torch.float32, FREEZING, "math"),
    ("bfloat16 torch.compile, freezing", torch.bfloat16, FREEZING, "sdpa"),
    ("bfloat16 torch.compile, freezing, math attention", torch.bfloat16, FREEZING, "math"),
)
"""Compiled variants: row name, dtype, inductor options, attention kernel."""


def merged_copy(
    model: ShowMeModel,
    mode: str,
    dtype: torch.dtype = torch.float32,
    kernel: AttentionKernel = "sdpa",
) -> torch.nn.Module:
    """A new UNet with ``mode``'s adapters merged, in ``dtype``, attending with ``kernel``."""
    unet = merged_unet(model.unet, adapters.roles_for_mode(model, mode)).eval().to(dtype)
    set_attention_kernel(unet, kernel)
    return unet


def time_block(
    runtimes: dict[str, tuple[Callable, tuple]], kwargs: dict, repeats: int
) -> tuple[dict[str, float], float, float]:
    """Median CPU seconds per runtime, alternating, and the float32 / bfloat16 matmul rates."""
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    a_bf16, b_bf16 = a.bfloat16(), b.bfloat16()
    times: dict[str, list[float]] = {name: [] for name in runtimes}
    matmul, matmul_bf16 = [], []
    for _ in range(repeats):
        for name, (f, x) in runtimes.items():
            times[name].append(cpu_seconds(lambda f=f, x=x: f(*x, **kwargs)))
        matmul.append(cpu_seconds(lambda: a @ b))
        matmul_bf16.append(cpu_seconds(lambda: a_bf16 @ b_bf16))
    medians = {name: statistics.median(samples) for name, samples in times.items()}
    rates = [2 * MATMUL_SIZE**3 / statistics.median(m) / 1e9 for m in (matmul, matmul_bf16)]
    return medians, rates[0], rates[1]


def forward_rows(folder: Path, onnx_folder: Path, repeats: int) -> list[str]:
    """One row per mode and runtime: CPU ms, floor, ratio, compile wall time, output diff."""
    model = ShowMeModel.from_pretrained(folder).eval()
    graphs = onnx_pipeline(folder, onnx_folder, threads=1, image_cache_size=0).model.unet
    rows = []
    for mode, frames in (("image", 1), ("video", model.sampler_config.num_frames)):
        with torch.inference_mode():
            rows += mode_rows(model, graphs, mode, frames, repeats)
    return rows


def mode_rows(
    model: ShowMeModel, graphs: Callable, mode: str, frames: int, repeats: int
) -> list[str]:
    """The rows of one mode's forward.

    The runtimes that need no compiling are timed in one alternation; each compiled variant is
    compiled afresh (dynamo's cache reset, so that its inductor options apply) and timed in its
    own alternation with the eager forward, whose matmul rate gives that row's floor.
    """
    eager = merged_copy(model, mode)
    generator = torch.Generator().manual_seed(0)
    channels, width = eager.config.in_channels, eager.config.cross_attention_dim
    sample = torch.randn(BATCH, channels, frames, *latent_size(model), generator=generator)
    context = torch.randn(BATCH, context_length(model), width, generator=generator)
    temporal = mode == "video"
    stride = torch.full((BATCH,), model.sampler_config.frame_stride) if temporal else None
    inputs = (sample, torch.tensor(500), context)
    inputs_bf16 = (sample.bfloat16(), inputs[1], context.bfloat16())
    kwargs = {"frame_stride": stride, "temporal": temporal}
    reference = eager(*inputs, **kwargs)
    with FlopCounterMode(display=False) as counter:
        eager(*inputs, **kwargs)
    gflop = counter.get_total_flops() / 1e9
    label = f"{mode}, {frames} frame{'s' * (frames > 1)}"
    rows = []

    def add_row(name: str, f: Callable, x: tuple, seconds: float, rate: float, note: str) -> None:
        diff = (f(*x, **kwargs).float() - reference).abs().max().item()
        floor = gflop / rate
        rows.append(
            f"| {label} | {name}{note} | {gflop:.3f} | {rate:.0f} | {floor * 1e3:.2f} | "
            f"{seconds * 1e3:.2f} | {seconds / floor:.2f}x | {diff:.1e} |"
        )

    plain = {
        "eager (merged)": (eager, inputs),
        "onnxruntime": (graphs, inputs),
        "bfloat16 eager": (merged_copy(model, mode, torch.bfloat16), inputs_bf16),
        "bfloat16 eager, math attention": (
            merged_copy(model, mode, torch.bfloat16, "math"),
            inputs_bf16,
        ),
    }
    medians, rate, rate_bf16 = time_block(plain, kwargs, repeats)
    for name, (f, x) in plain.items():
        note = f" (bfloat16 matmul {rate_bf16:.0f} GFLOP/s)" if x is inputs_bf16 else ""
        add_row(name, f, x, medians[name], rate, note)
    for name, dtype, options, kernel in COMPILED:
        x = inputs_bf16 if dtype == torch.bfloat16 else inputs
        torch._dynamo.reset()
        with inductor_config.patch(options):
            start = time.perf_counter()
            compiled = torch.compile(merged_copy(model, mode, dtype, kernel))
            compiled(*x, **kwargs)  # the first call compiles
            wall = time.perf_counter() - start
            block = {"eager (merged)": (eager, inputs), name: (compiled, x)}
            medians, rate, rate_bf16 = time_block(block, kwargs, repeats)
            note = f" (compiled in {wall:.0f} s wall"
            note += f"; bfloat16 matmul {rate_bf16:.0f} GFLOP/s)" if x is inputs_bf16 else ")"
            add_row(name, compiled, x, medians[name], rate, note)
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    folder = default_model_path()
    with tempfile.TemporaryDirectory() as scratch:
        rows = forward_rows(folder, export_graphs(folder, Path(scratch)), args.repeats)
    table = (
        f"Command: `{' '.join(['python', *sys.argv])}` (torch {torch.__version__}, "
        f"{cpu_model()}, 1 thread, "
        f"CPU ms, median of {args.repeats}; showme-metaworld-64, batch {BATCH}, adapters "
        "merged per mode)\n\n"
        "| forward | runtime | GFLOP | matmul GFLOP/s | floor ms | CPU ms | x floor | "
        "max output diff |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        + "\n".join(rows)
        + "\n"
    )
    print(table)
    return table


if __name__ == "__main__":
    main()

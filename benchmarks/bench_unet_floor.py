"""The shipped model's UNet forward alone against its FLOP floor, one thread, per runtime.

    python benchmarks/bench_unet_floor.py [--repeats 30]

Where a call's time goes beyond its floor (``bench_cpu_speed.py``): one UNet forward of each
mode at the node's shapes (batch 2, the conditional and unconditional branch of guidance 2; a
goal image is one frame, a rollout the stored number of frames), with the mode's adapters merged,
run eagerly in PyTorch, by onnxruntime from the ``showme-export onnx`` graphs (one intra-op
thread) and through ``torch.compile``. The floor is the forward's FLOPs
(``torch.utils.flop_counter``) divided by the rate of a 1024x1024x1024 float32 matmul on one
thread, measured in the same alternation. Median CPU time of ``--repeats`` forwards per runtime,
alternating between runtimes; the outputs are compared with the eager forward's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_cpu_speed import MATMUL_SIZE, cpu_seconds, export_graphs
from torch.utils.flop_counter import FlopCounterMode

from showme_model import adapters
from showme_model.model import ShowMeModel
from showme_model.onnx_export import context_length, latent_size, merged_unet
from showme_model.onnx_unet import onnx_pipeline
from showme_model.pipeline import default_model_path

BATCH = 2


def forward_rows(folder: Path, onnx_folder: Path, repeats: int) -> list[str]:
    """One row per mode and runtime: CPU ms, floor, ratio, compile wall time, output diff."""
    model = ShowMeModel.from_pretrained(folder).eval()
    graphs = onnx_pipeline(folder, onnx_folder, threads=1, image_cache_size=0).model.unet
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    rows = []
    for mode, frames in (("image", 1), ("video", model.sampler_config.num_frames)):
        eager = merged_unet(model.unet, adapters.roles_for_mode(model, mode)).eval()
        generator = torch.Generator().manual_seed(0)
        channels, width = eager.config.in_channels, eager.config.cross_attention_dim
        sample = torch.randn(BATCH, channels, frames, *latent_size(model), generator=generator)
        context = torch.randn(BATCH, context_length(model), width, generator=generator)
        temporal = mode == "video"
        stride = torch.full((BATCH,), model.sampler_config.frame_stride) if temporal else None
        inputs = (sample, torch.tensor(500), context)
        kwargs = {"frame_stride": stride, "temporal": temporal}
        with torch.inference_mode():
            reference = eager(*inputs, **kwargs)
            with FlopCounterMode(display=False) as counter:
                eager(*inputs, **kwargs)
            start = time.perf_counter()
            compiled = torch.compile(eager)
            compiled_output = compiled(*inputs, **kwargs)  # the first call compiles
            compile_seconds = time.perf_counter() - start
            runtimes = {"eager (merged)": eager, "onnxruntime": graphs, "torch.compile": compiled}
            outputs = {
                "eager (merged)": reference,
                "onnxruntime": graphs(*inputs, **kwargs),
                "torch.compile": compiled_output,
            }
            times: dict[str, list[float]] = {name: [] for name in runtimes}
            matmul = []
            for _ in range(repeats):
                for name, f in runtimes.items():
                    times[name].append(cpu_seconds(lambda f=f, x=inputs, k=kwargs: f(*x, **k)))
                matmul.append(cpu_seconds(lambda: a @ b))
        gflop = counter.get_total_flops() / 1e9
        rate = 2 * MATMUL_SIZE**3 / statistics.median(matmul) / 1e9
        floor = gflop / rate
        for name, samples in times.items():
            seconds = statistics.median(samples)
            diff = (outputs[name] - reference).abs().max().item()
            note = f" (compiled in {compile_seconds:.0f} s wall)" if name == "torch.compile" else ""
            rows.append(
                f"| {mode}, {frames} frame{'s' * (frames > 1)} | {name}{note} | {gflop:.3f} | "
                f"{rate:.0f} | {floor * 1e3:.2f} | {seconds * 1e3:.2f} | {seconds / floor:.2f}x | "
                f"{diff:.1e} |"
            )
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
        f"Command: `{' '.join(['python', *sys.argv])}` (torch {torch.__version__}, 1 thread, "
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

"""GPU benchmark: dynamicrafter-256 with random weights, bf16, SDPA attention, 50 DDIM steps, CFG.

    python benchmarks/bench_pipeline_gpu.py [--compile] [--peak-tflops 989]

Times a goal image and a 16-frame rollout (denoising loop with cond and uncond in one forward,
then VAE decoding) against the floor time from the meta-device FLOP count, and reports peak GPU
memory. Text and image encoders are left out (they run once per call, outside the loop); their
tokens are random. Random weights give the same cost as trained ones.
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_pipeline import A100_SECONDS, dynamicrafter_flops
from diffusers import AutoencoderKL

from showme_model.model import ShowMeModel
from showme_model.pipeline import ShowMePipeline
from showme_model.presets import scheduler_config, unet_config
from showme_model.resampler import ImageProjector
from showme_model.unet import ShowMeUNet


def sd_vae() -> AutoencoderKL:
    """A randomly initialised autoencoder of the LDM f8 layout DynamiCrafter uses."""
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=256,
        scaling_factor=0.18215,
    )


def run(pipeline: ShowMePipeline, frames: int, temporal: bool) -> tuple[float, float]:
    """Seconds and peak GiB of one 50-step CFG sample plus decoding."""
    device, dtype = pipeline.device, pipeline.model.dtype
    context = torch.randn(1, 77 + 256, 1024, device=device, dtype=dtype)
    concat = torch.zeros(1, 4, frames, 32, 32, device=device, dtype=dtype)
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        latents = pipeline.denoise(
            [context, context],
            concat,
            temporal=temporal,
            generator=torch.Generator().manual_seed(0),
        )
        pipeline.model.decode_latents(latents)
    torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    unet = ShowMeUNet(**unet_config("dynamicrafter-256"))
    config = scheduler_config("dynamicrafter-256")
    model = ShowMeModel(unet, sd_vae(), None, None, ImageProjector(), config)
    pipeline = ShowMePipeline(model, compile_unet=args.compile).to("cuda", torch.bfloat16)
    flops = dynamicrafter_flops()
    print(f"{torch.cuda.get_device_name()}, bf16, compile={args.compile}")
    print("| output | seconds | floor (s) | fraction of peak | peak memory (GiB) |")
    print("| --- | --- | --- | --- | --- |")
    for name, frames, temporal in (("goal image", 1, False), ("16-frame rollout", 16, True)):
        run(pipeline, frames, temporal)  # warm-up (and compilation)
        seconds, memory = run(pipeline, frames, temporal)
        floor = flops[name] * 2 * 50 / args.peak_tflops
        print(f"| {name} | {seconds:.2f} | {floor:.2f} | {floor / seconds:.0%} | {memory:.1f} |")
    print(f"published: {A100_SECONDS:.0f} s for a 16-frame video on an A100")


if __name__ == "__main__":
    main()

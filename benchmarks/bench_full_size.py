"""Full-size run on the CPU: dynamicrafter-256 with random weights through ShowMePipeline.

    python benchmarks/bench_full_size.py [--frames 16] [--steps 1] [--threads 1]

Every configuration (goal image / rollout x float32 / bfloat16) runs in a fresh subprocess, one
at a time, so each peak RSS is that configuration's alone. The model is the full-size one: the
UNet of the ``dynamicrafter-256`` preset with ShowMe's two LoRA adapters (rank 128 and 64), the
OpenCLIP ViT-H-14 text tower (23 blocks, OpenCLIP's tokenizer from the open-clip-torch package)
and image tower (32 blocks, 224x224), the Resampler (16 x 16 queries) and the LDM f8
autoencoder; all weights random, built directly in the run's dtype (nothing is downloaded).
Each call makes 256x256 frames with classifier-free guidance (cond and uncond in one UNet
forward). Reported: peak RSS, RSS after building the model, seconds per UNet forward (wall and
process CPU), the pipeline's encode / denoise / decode seconds, the output shape, and the frame
stamps the node gives such an output (``showme_ros.outputs.frame_offsets``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

# showme_ros of this source tree, not a copy installed earlier.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import psutil
import torch
from bench_pipeline_gpu import sd_vae
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModel

from showme_model import adapters
from showme_model.encoders import OpenCLIPImageEncoder, OpenCLIPTextEncoder, openclip_tokenizer
from showme_model.model import ShowMeModel
from showme_model.pipeline import ShowMePipeline
from showme_model.presets import scheduler_config, unet_config
from showme_model.resampler import ImageProjector
from showme_model.unet import ShowMeUNet

PRESET = "dynamicrafter-256"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FRAME_PERIOD = 0.1  # seconds between predicted frames, for the frame-stamp check
# Free memory a configuration needs before it starts (weights plus working memory), GiB.
NEEDED_GIB = {"float32": 13.0, "bfloat16": 7.5}


def openclip_text_encoder() -> OpenCLIPTextEncoder:
    """OpenCLIP ViT-H-14's text tower up to the penultimate block (DynamiCrafter's context)."""
    tokenizer = openclip_tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=23,
        num_attention_heads=16,
        max_position_embeddings=77,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return OpenCLIPTextEncoder(CLIPTextModel(config), tokenizer)


def openclip_image_encoder() -> OpenCLIPImageEncoder:
    """OpenCLIP ViT-H-14's visual tower (257 tokens of width 1280)."""
    config = CLIPVisionConfig(
        hidden_size=1280,
        intermediate_size=5120,
        num_hidden_layers=32,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    return OpenCLIPImageEncoder(CLIPVisionModel(config))


def showme_unet() -> ShowMeUNet:
    """The preset's UNet as ShowMe's release runs it (temporal convolutions on in image mode)."""
    return ShowMeUNet(**{**unet_config(PRESET), "image_mode_temporal_convs": True})


def full_size_model(dtype: torch.dtype) -> ShowMeModel:
    """dynamicrafter-256 with ShowMe's adapters, random weights created in ``dtype``."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = ShowMeModel(
            showme_unet(),
            sd_vae(),
            openclip_text_encoder(),
            openclip_image_encoder(),
            ImageProjector(),
            scheduler_config(PRESET),
        )
        for role in ("manipulation", "prediction"):
            adapters.add_adapter(model, role)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def unet_tflop(mode: str, frames: int, batch: int) -> float:
    """TFLOP of one UNet forward as the run makes it (adapters acting), counted on meta tensors."""
    with torch.device("meta"):
        model = ShowMeModel(
            showme_unet(), None, None, None, ImageProjector(), scheduler_config(PRESET)
        )
        for role in ("manipulation", "prediction"):
            adapters.add_adapter(model, role)
    roles = adapters.IMAGE_MODE_ROLES if mode == "image" else adapters.VIDEO_MODE_ROLES
    count = frames if mode == "video" else 1
    sample = torch.zeros(batch, 8, count, 32, 32, device="meta")
    context = torch.zeros(batch, 77 + 256, 1024, device="meta")
    timestep = torch.full((batch,), 500, device="meta")
    with (
        adapters.active_adapters(model, roles),
        torch.no_grad(),
        FlopCounterMode(display=False) as counter,
    ):
        model.unet(sample, timestep, context, temporal=mode == "video")
    return counter.get_total_flops() / 1e12


def run_configuration(mode: str, dtype: str, frames: int, steps: int, guidance: float) -> dict:
    """Build the model, make one prediction, return the measurements."""
    start = time.perf_counter()
    model = full_size_model(DTYPES[dtype])
    pipeline = ShowMePipeline(model)
    built = time.perf_counter() - start
    rss_built = psutil.Process().memory_info().rss
    forwards: list[tuple[float, float]] = []
    clock: dict[str, float] = {}

    def before(*_: object) -> None:
        clock["wall"], clock["cpu"] = time.perf_counter(), time.process_time()

    def after(*_: object) -> None:
        forwards.append((time.perf_counter() - clock["wall"], time.process_time() - clock["cpu"]))

    model.unet.register_forward_pre_hook(before)
    model.unet.register_forward_hook(after)
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    result = pipeline(
        image,
        "open the top drawer",
        mode=mode,
        num_frames=frames,
        num_inference_steps=steps,
        guidance_scale=guidance,
        seed=0,
        output_type="float",
    )
    output = np.asarray(result.frames)
    return {
        "mode": mode,
        "dtype": dtype,
        "steps": steps,
        "unet_parameters": sum(p.numel() for p in model.unet.parameters()),
        "parameters": sum(p.numel() for p in model.parameters()),
        "build_seconds": built,
        "rss_built": rss_built,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "forward_wall": [wall for wall, _ in forwards],
        "forward_cpu": [cpu for _, cpu in forwards],
        "forward_batch": 2 if guidance != 1.0 else 1,
        "seconds": result.metadata["seconds"],
        "shape": list(output.shape),
        "finite": bool(np.isfinite(output).all()),
        "num_frames": result.metadata["num_frames"],
    }


def frame_stamps(mode: str, frame_count: int, default_frames: int) -> list[float]:
    """Seconds after the input image at which the node stamps the frames of an output."""
    from std_msgs.msg import Header

    from showme_ros.jobs import Job
    from showme_ros.outputs import frame_offsets

    job = Job(
        np.zeros((1, 1, 3), np.uint8),
        Header(),
        [""],
        mode,
        frame_count,
        1,
        1.0,
        1.0,
        "ddim",
        None,
        0,
    )
    return frame_offsets(job, frame_count, FRAME_PERIOD, default_frames)


def check(result: dict, frames: int) -> list[str]:
    """Problems with an output's shape, values or frame stamps (empty when it is right)."""
    count = frames if result["mode"] == "video" else 1
    problems = []
    if result["shape"] != [1, count, 256, 256, 3]:
        problems.append(f"shape {result['shape']} != [1, {count}, 256, 256, 3]")
    if result["num_frames"] != count:
        problems.append(f"metadata num_frames {result['num_frames']} != {count}")
    if not result["finite"]:
        problems.append("non-finite output")
    if len(result["forward_wall"]) != result["steps"]:
        problems.append(f"{len(result['forward_wall'])} UNet forwards for {result['steps']} steps")
    stamps = frame_stamps(result["mode"], result["shape"][1], frames)
    expected = [k * FRAME_PERIOD for k in range(count)]
    if result["mode"] == "image":
        expected = [(frames - 1) * FRAME_PERIOD]  # the goal is the end of a rollout
    if not np.allclose(stamps, expected):
        problems.append(f"frame stamps {stamps} != {expected}")
    return problems


def wait_for_memory(dtype: str, timeout: float = 3600.0) -> None:
    """Wait until the machine has the memory a configuration needs (others may be using it)."""
    deadline = time.monotonic() + timeout
    while psutil.virtual_memory().available < NEEDED_GIB[dtype] * 2**30:
        if time.monotonic() > deadline:
            raise SystemExit(f"{dtype}: {NEEDED_GIB[dtype]} GiB of free memory never came")
        time.sleep(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["image", "video"])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--one", nargs=2, metavar=("MODE", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        result = run_configuration(*args.one, args.frames, args.steps, args.guidance)
        print(json.dumps(result))
        return
    rows = []
    for mode in args.modes:
        for dtype in args.dtypes:
            wait_for_memory(dtype)
            command = [sys.executable, str(Path(__file__).resolve()), "--one", mode, dtype]
            command += ["--frames", str(args.frames), "--steps", str(args.steps)]
            command += ["--guidance", str(args.guidance), "--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{mode} {dtype} failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result["problems"] = check(result, args.frames)
            print(json.dumps(result), file=sys.stderr, flush=True)
            rows.append(result)
    print(
        f"Command: `python benchmarks/bench_full_size.py --frames {args.frames} --steps "
        f"{args.steps} --guidance {args.guidance} --threads {args.threads} --modes "
        f"{' '.join(args.modes)} --dtypes {' '.join(args.dtypes)}` "
        f"(torch {torch.__version__}, {args.threads} thread(s); UNet "
        f"{rows[0]['unet_parameters'] / 1e9:.2f} B parameters with adapters, model "
        f"{rows[0]['parameters'] / 1e9:.2f} B)\n"
    )
    print(
        "| output | dtype | peak RSS (GiB) | RSS after build (GiB) | UNet forward, batch "
        f"{rows[0]['forward_batch']}: wall / CPU s | TFLOP / forward (GFLOP/CPU-s) | "
        "encode / denoise / decode s | output | frame stamps | check |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
    for row in rows:
        name = "goal image" if row["mode"] == "image" else f"{args.frames}-frame rollout"
        seconds = " / ".join(f"{row['seconds'][k]:.1f}" for k in ("encode", "denoise", "decode"))
        stamps = frame_stamps(row["mode"], row["shape"][1], args.frames)
        tflop = unet_tflop(row["mode"], args.frames, row["forward_batch"])
        rate = tflop * 1e3 / np.median(row["forward_cpu"])
        print(
            f"| {name} | {row['dtype']} | {row['peak_rss'] / 2**30:.2f} | "
            f"{row['rss_built'] / 2**30:.2f} | {np.median(row['forward_wall']):.1f} / "
            f"{np.median(row['forward_cpu']):.1f} | {tflop:.2f} ({rate:.0f}) | {seconds} | "
            f"{tuple(row['shape'])} | "
            f"{stamps[0]:.1f}..{stamps[-1]:.1f} s ({len(stamps)}) | "
            f"{'; '.join(row['problems']) or 'ok'} |"
        )


if __name__ == "__main__":
    main()

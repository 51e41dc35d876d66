"""Peak memory of each memory option, measured on the CPU with the full-size model.

    python benchmarks/bench_memory.py [--frames 2] [--results rows.jsonl]

The model is ``dynamicrafter-256`` with ShowMe's adapters and OpenCLIP ViT-H-14 encoders at
their real sizes, random weights (``bench_full_size.full_size_model``), written once as a
``bf16`` weight variant and loaded from it (``variant="bf16"``) by every configuration. Each
configuration runs in a fresh subprocess: load (its peak RSS recorded), copy the weights out of
the memory-mapped files into the process's own memory (which RSS counts reliably), one warm-up
prediction (its activations' memory is returned to the system), then the measured
prediction (256x256, 1 DDIM step, CFG 7.5: cond and uncond in one UNet forward); peak RSS from
``getrusage`` and the RSS sampled every 5 ms, split by the pipeline's encode / denoise / decode
phases. On the CPU the process's memory is what a device with memory shared by CPU and GPU
(Jetson) holds, less the CUDA runtime.
``--results`` keeps each configuration's measurement in a JSON-lines file and skips those already
there, so a long run can be resumed.

The GPU figures are computed, not measured: bytes of the weights on the device under each
option (exact, from the parameters) plus the activations measured here (RSS during a phase less
RSS before the call), with float32 at twice the bf16 bytes. Rollout activations are scaled from
the measured frame count to ``--target-frames`` (frames are folded into the batch, so denoising
and batched decoding activations grow in proportion; per-frame decoding does not).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from showme_model.pipeline import ShowMePipeline

CONFIGURATIONS = {
    "image": ("image", ()),
    "image+encoder-offload": ("image", ("encoder-offload",)),
    "video": ("video", ()),
    "video+per-frame-decode": ("video", ("per-frame-decode",)),
    "video+encoder-offload+per-frame-decode": ("video", ("encoder-offload", "per-frame-decode")),
}
COMPONENTS = ("unet", "vae", "text_encoder", "image_encoder", "image_projector")
GIB = 2**30
JETSON_GIB = (8, 16, 32, 64)  # Orin memory classes (shared by CPU and GPU)


def write_model(folder: Path) -> None:
    """Write the full-size random model as a bf16 variant (skipped when already there)."""
    if (folder / "model_index.json").is_file():
        return
    from bench_full_size import full_size_model

    full_size_model(torch.bfloat16).save_pretrained(folder, variant="bf16")


class RssSampler(threading.Thread):
    """Samples the process's RSS every ``period`` seconds as ``(time, bytes)``."""

    def __init__(self, period: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.period, self.samples, self.running = period, [], True
        self.process = psutil.Process()

    def run(self) -> None:
        while self.running:
            self.samples.append((time.perf_counter(), self.process.memory_info().rss))
            time.sleep(self.period)

    def peak(self, start: float, end: float) -> int:
        """Largest RSS sampled in ``[start, end]``."""
        return max((rss for t, rss in self.samples if start <= t <= end), default=0)


def run_configuration(name: str, folder: Path, frames: int) -> dict:
    """Load the model, apply the options of ``name``, make one prediction, report memory."""
    mode, options = CONFIGURATIONS[name]
    pipeline = ShowMePipeline.from_pretrained(folder, variant="bf16", image_cache_size=0)
    load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with torch.no_grad():  # own memory, not pages of the memory-mapped files the system may drop
        for parameter in pipeline.model.parameters():
            parameter.data = parameter.data.clone()
    weight_bytes = {
        component: sum(
            p.numel() * p.element_size() for p in getattr(pipeline.model, component).parameters()
        )
        for component in COMPONENTS
    }
    if "encoder-offload" in options:
        pipeline.enable_encoder_offload("disk", device="cpu", folder=folder / "offloaded-encoders")
    if "per-frame-decode" in options:
        pipeline.model.vae.enable_slicing()
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)

    def predict() -> dict:
        return pipeline(
            image,
            "open the top drawer",
            mode=mode,
            num_frames=frames,
            num_inference_steps=1,
            guidance_scale=7.5,
            seed=0,
            output_type="uint8",
        )

    predict()  # warm-up: one-time allocations happen here, activations are returned
    sampler = RssSampler()
    sampler.start()
    time.sleep(0.05)
    before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    result = predict()
    sampler.running = False
    sampler.join()
    seconds = result.metadata["seconds"]
    bounds = np.cumsum([start, seconds["encode"], seconds["denoise"], seconds["decode"]])
    phases = {
        phase: sampler.peak(bounds[i], bounds[i + 1])
        for i, phase in enumerate(("encode", "denoise", "decode"))
    }
    return {
        "name": name,
        "mode": mode,
        "options": list(options),
        "weight_bytes": weight_bytes,
        "load_peak_rss": load_peak,
        "rss_before_call": before,
        "phase_peak_rss": phases,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "frames": frames if mode == "video" else 1,
        "seconds": seconds,
        "shape": list(np.asarray(result.frames).shape),
    }


def activations(row: dict, phase: str, scale: float = 1.0) -> float:
    """RSS growth over the call's start during ``phase``, times ``scale``."""
    return scale * max(row["phase_peak_rss"][phase] - row["rss_before_call"], 0)


def gpu_estimates(rows: dict[str, dict], target_frames: int) -> dict[str, dict[str, float]]:
    """Computed device memory (bytes) per mode and option set, for bf16 and float32 weights."""
    estimates = {}
    for mode, resident, sliced in (
        ("image", "image", "image"),
        (f"{target_frames}-frame rollout", "video", "video+per-frame-decode"),
    ):
        weights = rows[resident]["weight_bytes"]
        scale = target_frames / rows[resident]["frames"] if resident == "video" else 1.0
        act = {
            "encode": activations(rows[resident], "encode"),
            "denoise": activations(rows[resident], "denoise", scale),
            "decode": activations(rows[resident], "decode", scale),
        }
        act_sliced = activations(rows[sliced], "decode")
        total = sum(weights.values())
        encoders = weights["text_encoder"] + weights["image_encoder"]
        largest_encoder = max(weights["text_encoder"], weights["image_encoder"])
        options = [("", act["decode"])]
        if resident == "video":
            options.append(("+per-frame-decode", act_sliced))
        for label, decode_act in options:
            on_device = {
                "all resident": total + max(act["encode"], act["denoise"], decode_act),
                "encoder offload": total
                - encoders
                + max(largest_encoder + act["encode"], act["denoise"], decode_act),
                "model CPU offload": max(
                    weights["text_encoder"] + act["encode"],
                    weights["image_encoder"] + act["encode"],
                    weights["unet"] + act["denoise"],
                    weights["vae"] + decode_act,
                ),
            }
            for option, value in on_device.items():
                estimates[f"{mode}{label}: {option}"] = {"bf16": value, "fp32": 2 * value}
    return estimates


def jetson_rows(
    estimates: dict[str, dict[str, float]], runtime: float, reserve: float
) -> list[str]:
    """Rows of the Jetson table: memory a mode needs on a shared-memory device, and the class.

    On a Jetson CPU and GPU share one memory, so offloading to CPU memory (model CPU offload,
    ``storage="cpu"``) saves nothing; encoder offload counts in its ``disk`` form.
    """
    rows = []
    for label, value in estimates.items():
        if "model CPU offload" in label:
            continue
        for dtype in ("bf16", "fp32"):
            need = (value[dtype] + runtime) / GIB + reserve
            fits = next((f"{size} GB" for size in JETSON_GIB if need <= size), "none")
            name = "fp16 / bf16" if dtype == "bf16" else "fp32"
            rows.append(
                f"| {label.replace('encoder offload', 'encoder offload (disk)')} | "
                f"{name} | {need:.1f} | {fits} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=2, help="rollout frames measured")
    parser.add_argument("--target-frames", type=int, default=16, help="rollout frames computed")
    parser.add_argument(
        "--reserve-gib",
        type=float,
        default=2.0,
        help="memory a Jetson keeps for the OS and the CUDA context (an assumption)",
    )
    parser.add_argument("--results", type=Path, default=None, help="JSON lines, resumable")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/showme-dc256-bf16"))
    parser.add_argument("--configurations", nargs="+", default=list(CONFIGURATIONS))
    parser.add_argument("--one", choices=list(CONFIGURATIONS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(run_configuration(args.one, args.folder, args.frames)))
        return
    write_model(args.folder)
    rows = {}
    if args.results is not None and args.results.is_file():
        for line in args.results.read_text().splitlines():
            row = json.loads(line)
            rows[row["name"]] = row
    # Every allocation above 128 KiB gets its own mapping, returned to the system when freed, so
    # RSS follows the live tensors (glibc's adaptive threshold would keep freed activations).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    for name in args.configurations:
        if name in rows:
            continue
        command = [sys.executable, str(Path(__file__).resolve()), "--one", name]
        command += ["--frames", str(args.frames), "--threads", str(args.threads)]
        command += ["--folder", str(args.folder)]
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        rows[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(rows[name]), file=sys.stderr, flush=True)
        if args.results is not None:
            with args.results.open("a") as handle:
                handle.write(json.dumps(rows[name]) + "\n")
    first = next(iter(rows.values()))
    weights = first["weight_bytes"]
    print(
        f"Command: `python benchmarks/bench_memory.py --frames {args.frames} --target-frames "
        f"{args.target_frames} --threads {args.threads}` (torch {torch.__version__}; "
        "dynamicrafter-256 + adapters, bf16 "
        f"variant, weights {sum(weights.values()) / GIB:.2f} GiB: "
        + ", ".join(f"{k} {v / GIB:.2f}" for k, v in weights.items())
        + ")\n"
    )
    print(
        "| configuration | output | peak RSS while loading (GiB) | RSS before the call | "
        "call's peak RSS | in encode / denoise / decode | seconds encode / denoise / decode |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows.values():
        phases = " / ".join(
            f"{row['phase_peak_rss'][p] / GIB:.2f}" for p in ("encode", "denoise", "decode")
        )
        seconds = " / ".join(f"{row['seconds'][p]:.1f}" for p in ("encode", "denoise", "decode"))
        print(
            f"| {row['name']} | {tuple(row['shape'])} | {row['load_peak_rss'] / GIB:.2f} | "
            f"{row['rss_before_call'] / GIB:.2f} | "
            f"{max(row['phase_peak_rss'].values()) / GIB:.2f} | {phases} | {seconds} |"
        )
    if {"image", "video", "video+per-frame-decode"} <= rows.keys():
        print(
            "\nComputed device memory (GiB; weights on the device + activations measured above):\n"
        )
        print("| mode and options | bf16 / fp16 weights | fp32 weights |")
        print("| --- | ---: | ---: |")
        estimates = gpu_estimates(rows, args.target_frames)
        for label, value in estimates.items():
            print(f"| {label} | {value['bf16'] / GIB:.2f} | {value['fp32'] / GIB:.2f} |")
        runtime = min(
            rows[name]["rss_before_call"] - sum(rows[name]["weight_bytes"].values())
            for name in ("image", "video")
        )
        print(
            f"\nJetson (computed): the device figure + this process's own memory without weights "
            f"({runtime / GIB:.2f} GiB, measured) + {args.reserve_gib:.1f} GiB for the OS and "
            "the CUDA context (assumed); smallest Orin memory class that holds it:\n"
        )
        print("| mode and options | weights | needs (GiB) | smallest Orin |")
        print("| --- | --- | ---: | --- |")
        print("\n".join(jetson_rows(estimates, runtime, args.reserve_gib)))


if __name__ == "__main__":
    main()

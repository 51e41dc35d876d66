"""Training-step cost per stage, with and without each reward (tiny model, CPU, 1 thread).

Each row runs in its own subprocess so that its peak memory (max RSS) is its own. Rewards are
forced onto every sample (thresholds 1000 / -1), so a row shows the cost of a rewarded step;
with the paper's thresholds (t < 200, t > 500) about 20% / 50% of samples pay it.

    python benchmarks/bench_training.py [--steps 5] [--resolution 64] [--out table.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = {
    "stage1 noise loss only": ("stage1", {"structure": {"enabled": False}}),
    "stage1 + VAE decode (grad) + Sobel edges": (
        "stage1",
        {"structure": {"threshold": 1000, "edge_model": "sobel"}},
    ),
    "stage1 + VAE decode (grad) + HED edges": (
        "stage1",
        {"structure": {"threshold": 1000, "edge_model": "hed"}},
    ),
    "stage1 + VAE decode (grad) + HED edges + small depth": (
        "stage1",
        {"structure": {"threshold": 1000, "edge_model": "hed", "depth_kind": "small"}},
    ),
    "stage2 noise loss only": ("stage2", {"motion": {"enabled": False}}),
    "stage2 + motion reward": ("stage2", {"motion": {"threshold": -1}}),
    "base (full UNet + projector)": ("base", {}),
}
PAPER_TABLE7 = {
    "stage1 + VAE decode (grad) + Sobel edges": "VAE decode (grad): +1.92 GB, 187 ms",
    "stage1 + VAE decode (grad) + HED edges": "+ Edge reward: +0.19 GB, 368 ms, 810 GFLOPs",
    "stage1 + VAE decode (grad) + HED edges + small depth": (
        "+ Depth reward: +0.14 GB, 1022 ms, 641 GFLOPs"
    ),
    "stage2 + motion reward": "+ Motion reward: +0.79 GB, 453 ms, 1559 GFLOPs",
}


def run_row(mode: str, overrides: dict, steps: int, resolution: int, work: Path) -> dict:
    """Time ``steps`` optimizer steps of one configuration (called in a fresh process)."""
    import torch

    torch.set_num_threads(1)
    from torch.utils.flop_counter import FlopCounterMode

    from training.config import config_from_dict
    from training.loops import Trainer, collate
    from training.rewards.small_depth import SmallDepthNet

    values = {
        "mode": mode,
        "output_dir": str(work / "run"),
        "batch_size": 2,
        "report_to": None,
        "data": {"synthetic": 8, "resolution": resolution, "num_frames": 4},
        **overrides,
    }
    if values.get("structure", {}).get("depth_kind") == "small":
        torch.manual_seed(0)
        SmallDepthNet().save(work / "depth.safetensors")
        values["structure"]["depth_path"] = str(work / "depth.safetensors")
    trainer = Trainer(config_from_dict(values))
    batch = collate([trainer.dataset[i] for i in range(2)])
    trainer.step([batch])  # warm-up: allocates optimizer state and caches
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.step([batch])
        times.append(time.perf_counter() - start)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with FlopCounterMode(display=False) as counter:
        trainer.step([batch])
    return {
        # The fastest step is the least disturbed by other work on a shared machine.
        "ms": 1000 * min(times),
        "median_ms": 1000 * sorted(times)[len(times) // 2],
        "peak_mb": peak_rss / 1024,
        "gflops": counter.get_total_flops() / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: run one row
    args = parser.parse_args()

    if args.row:
        mode, overrides = ROWS[args.row]
        with tempfile.TemporaryDirectory() as work:
            result = run_row(mode, overrides, args.steps, args.resolution, Path(work))
        print("RESULT " + json.dumps(result))
        return

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    results = {}
    for name in ROWS:
        command = [sys.executable, __file__, "--row", name, "--steps", str(args.steps),
                   "--resolution", str(args.resolution)]  # fmt: skip
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        line = next(x for x in output.stdout.splitlines() if x.startswith("RESULT "))
        results[name] = json.loads(line[len("RESULT ") :])
        print(f"{name}: {results[name]}", file=sys.stderr)

    reference = {
        "stage1": results["stage1 noise loss only"],
        "stage2": results["stage2 noise loss only"],
    }
    lines = [
        f"Tiny model, {args.resolution}x{args.resolution} frames, batch 2, stage 2 and base with "
        f"4 frames; CPU, 1 thread; fastest (median) of {args.steps} steps after a warm-up step; "
        "peak RSS of the row's process and its increase over the stage's noise-only row; "
        "GFLOPs counted by torch.utils.flop_counter (matmuls and convolutions, forward and "
        "backward).",
        "",
        "| configuration | step time, ms | vs. noise-only | peak RSS, MB | + RSS, MB "
        "| GFLOPs / step | paper Table 7 (GPU, 256x256, per step) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, row in results.items():
        ref = reference.get(ROWS[name][0])
        ratio = f"{row['ms'] / ref['ms']:.2f}x" if ref else "–"
        extra = f"{row['peak_mb'] - ref['peak_mb']:+.0f}" if ref else "–"
        lines.append(
            f"| {name} | {row['ms']:.0f} ({row['median_ms']:.0f}) | {ratio} | "
            f"{row['peak_mb']:.0f} | {extra} | {row['gflops']:.2f} | {PAPER_TABLE7.get(name, '')} |"
        )
    command = "OMP_NUM_THREADS=1 python benchmarks/bench_training.py " + " ".join(
        f"--{k} {v}" for k, v in (("steps", args.steps), ("resolution", args.resolution))
    )
    lines += ["", f"Command: `{command}`"]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()

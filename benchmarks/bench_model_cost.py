"""CPU cost of two model folders side by side: a goal image and a rollout, one thread.

    python benchmarks/bench_model_cost.py BASELINE_FOLDER [CANDIDATE_FOLDER] [--repeats 5]

Each folder is loaded as the node loads it (adapters merged) and called with its own stored
sampler settings on the same frame and instruction. Calls alternate between the two folders so
that load on a shared machine falls on both alike; the median process CPU time of ``--repeats``
calls after a warm-up call is reported, with the candidate's cost as a multiple of the
baseline's. The candidate defaults to the shipped model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from showme_model.pipeline import ShowMePipeline, default_model_path  # noqa: E402

INSTRUCTION = "open the drawer"


def call_seconds(pipeline: ShowMePipeline, frame: np.ndarray, mode: str) -> float:
    """Process CPU seconds of one prediction."""
    start = time.process_time()
    pipeline.predict([frame], [INSTRUCTION], mode=mode, seed=0)
    return time.process_time() - start


def main(argv: list[str] | None = None) -> None:
    """Time both folders and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("candidate", type=Path, nargs="?", default=default_model_path())
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    folders = {"baseline": args.baseline, "candidate": args.candidate}
    pipelines = {
        name: ShowMePipeline.from_pretrained(folder, merge_adapters=True)
        for name, folder in folders.items()
    }
    frame = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    print(f"Command: `python benchmarks/bench_model_cost.py {' '.join(sys.argv[1:])}`")
    print(f"(torch {torch.__version__}, 1 thread, process CPU s, median of {args.repeats})\n")
    print("| call | baseline s | candidate s | candidate / baseline |")
    print("| --- | ---: | ---: | ---: |")
    for mode, label in (("image", "goal image"), ("video", "rollout")):
        seconds: dict[str, list[float]] = {name: [] for name in pipelines}
        for repeat in range(args.repeats + 1):
            for name, pipeline in pipelines.items():
                elapsed = call_seconds(pipeline, frame, mode)
                if repeat:  # the first call of each is a warm-up
                    seconds[name].append(elapsed)
        base, cand = (statistics.median(seconds[name]) for name in ("baseline", "candidate"))
        print(f"| {label} | {base:.3f} | {cand:.3f} | {cand / base:.2f}x |")


if __name__ == "__main__":
    main()

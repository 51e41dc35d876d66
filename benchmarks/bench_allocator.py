"""glibc malloc settings for the node: model speed and resident memory under frame churn.

Each setting runs in fresh subprocesses, applied before the interpreter allocates much: glibc's
default, a fixed 4 MiB mmap threshold (the node's earlier setting, through glibc's environment
tunable) and the node's own setting (``showme_ros.allocator.keep_memory_flat``: one malloc
arena). Per setting:

- the CPU seconds of a goal image and of an 8-frame rollout of the shipped model as the node
  runs it (adapters merged, stored sampler settings, one thread; best of ``--calls`` after a
  warm-up), the settings' processes alternating for ``--rounds`` rounds;
- the resident memory after six threads each allocated and freed thirty 27 MiB camera frames
  (the workload of ``test/test_node_allocator.py``).

Prints a markdown table and the command::

    python benchmarks/bench_allocator.py --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from test.test_node_allocator import CHURN  # noqa: E402

NODE_SETTING = "one arena (the node's)"
# name -> (environment added, whether the process applies the node's setting)
SETTINGS = {
    "glibc default": ({}, False),
    "mmap threshold 4 MiB (earlier)": ({"MALLOC_MMAP_THRESHOLD_": str(4 << 20)}, False),
    NODE_SETTING: ({}, True),
}
SPEED = textwrap.dedent(
    """
    import json, sys, time
    from showme_ros.allocator import keep_memory_flat
    if sys.argv[3] == "on":
        keep_memory_flat()
    import numpy as np, torch
    torch.set_num_threads(1)
    from showme_model.pipeline import ShowMePipeline
    pipe = ShowMePipeline.from_pretrained(sys.argv[1], merge_adapters=True)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    def call(mode):
        pipe(image, "open the drawer", mode=mode, generator=torch.Generator().manual_seed(0))
    times = {}
    for mode in ("image", "video"):
        call(mode)
        runs = []
        for _ in range(int(sys.argv[2])):
            start = time.process_time()
            call(mode)
            runs.append(time.process_time() - start)
        times[mode] = min(runs)
    print(json.dumps(times))
    """
)


def run(code: str, env: dict[str, str], *args: str) -> str:
    """Run ``code`` in a fresh interpreter with ``env`` added; return its last stdout line."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=environment,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def main() -> int:
    """Measure every setting and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "showme_model/weights/showme-metaworld-64"))
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per setting")
    parser.add_argument("--calls", type=int, default=3, help="timed calls per process and mode")
    args = parser.parse_args()
    times: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, (env, node) in SETTINGS.items():
            flag = "on" if node else "off"
            times[name].append(json.loads(run(SPEED, env, args.model, str(args.calls), flag)))
    # CHURN prints whether it applied the node's setting, then the RSS in MiB.
    rss = {
        name: int(run(CHURN, env, "on" if node else "off").split()[-1])
        for name, (env, node) in SETTINGS.items()
    }
    reference = NODE_SETTING
    best = {
        name: {mode: float(np.min([t[mode] for t in runs])) for mode in ("image", "video")}
        for name, runs in times.items()
    }
    print(
        f"Command: `python benchmarks/bench_allocator.py --rounds {args.rounds} --calls "
        f"{args.calls}` (1 thread, process CPU s, best of {args.calls} calls x {args.rounds} "
        "alternating processes)\n"
    )
    columns = ("goal image CPU s", "8-frame rollout CPU s", "rollout vs one arena")
    print(f"| glibc setting | {' | '.join(columns)} | RSS after frame churn (MiB) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in SETTINGS:
        ratio = best[name]["video"] / best[reference]["video"]
        print(
            f"| {name} | {best[name]['image']:.3f} | {best[name]['video']:.3f} | {ratio:.2f}x | "
            f"{rss[name]} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

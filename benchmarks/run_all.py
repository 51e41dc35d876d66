"""Run the benchmarks that need neither a GPU nor a long closed-loop run (``make bench``).

    python benchmarks/run_all.py [--list] [--only NAME ...]

Each benchmark runs in its own process with one CPU thread and prints its own table; a summary
of wall times and exit statuses follows. The others are listed with the reason they are left
out and are run by hand (their commands are in docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name -> arguments: the CPU-cheap benchmarks, run by default.
CPU_CHEAP = {
    "bench_allocator": [],
    "bench_loader": [],
    "bench_pipeline": [],
    "bench_training": [],
}
# name -> why it is not run here.
LEFT_OUT = {
    "bench_pipeline_gpu": "needs a CUDA GPU",
    "bench_planning": "a closed loop of three nodes over every held-out layout, and it rewrites "
    "its section of docs/BENCHMARKS.md",
    "soak_node": "1000 requests to a live node: a soak test, not a quick benchmark",
}


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; return 1 when any of them failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--only", nargs="+", choices=sorted(CPU_CHEAP), help="run only these")
    args = parser.parse_args(argv)
    unknown = {p.stem for p in HERE.glob("*.py")} - set(CPU_CHEAP) - set(LEFT_OUT) - {"run_all"}
    if unknown:
        print(f"not listed in benchmarks/run_all.py, not run: {', '.join(sorted(unknown))}")
    if args.list:
        for name in CPU_CHEAP:
            print(f"{name}: run by make bench")
        for name, reason in LEFT_OUT.items():
            print(f"{name}: left out ({reason})")
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = []
    for name in args.only or CPU_CHEAP:
        command = [sys.executable, str(HERE / f"{name}.py"), *CPU_CHEAP[name]]
        print(f"\n== {' '.join(command)}", flush=True)
        started = time.perf_counter()
        status = subprocess.run(command, env=env, check=False).returncode
        results.append((name, status, time.perf_counter() - started))
    print("\n== benchmarks")
    for name, status, seconds in results:
        print(f"{name}: {'ok' if status == 0 else f'FAILED ({status})'}, {seconds:.0f} s")
    for name, reason in LEFT_OUT.items():
        print(f"{name}: not run ({reason})")
    return int(any(status != 0 for _, status, _ in results))


if __name__ == "__main__":
    sys.exit(main())

"""Load test: clients call ``/showme/predict`` at once for a while; every call must be answered.

Starts the node as the launch file does (tiny steps by default, so the node is busy most of the
time), runs ``--clients`` threads each calling the service in a loop for ``--seconds``, and
prints the calls served, rejected as busy and failed otherwise, the latencies, and the node's
resident memory at the start and the end::

    python -m showme_ros.examples.load_test --clients 4 --seconds 60
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np
import psutil
import rclpy

from showme_ros.client import ShowMeClient, make_request
from showme_ros.launch_command import SOURCE_ROOT, node_command
from showme_ros.middleware import free_transport_buffers
from showme_ros.msg import ErrorCode


def _client_loop(index: int, seconds: float, outcomes: Counter, latencies: list[float]) -> None:
    client = ShowMeClient(f"load_client_{index}")
    image = np.random.default_rng(index).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.monotonic()
            try:
                response = client.predict(make_request("push the block", image=image), 120.0)
            except TimeoutError:
                outcomes["unanswered"] += 1
                continue
            if response.success:
                outcomes["served"] += 1
                latencies.append(time.monotonic() - started)
            elif response.error_code.value == ErrorCode.BUSY:
                outcomes["busy"] += 1
            else:
                outcomes[f"failed: {response.message}"] += 1
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """Run the load test; exit status 1 if a call went unanswered or the node died."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per call")
    args = parser.parse_args(argv)
    command = [*node_command({"device": "cpu"}), "-p", f"inference.num_steps:={args.steps}"]
    env = {**os.environ, "PYTHONPATH": str(SOURCE_ROOT)}
    node = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    free_transport_buffers()
    rclpy.init()
    probe = ShowMeClient("load_probe")
    outcomes: Counter = Counter()
    latencies: list[float] = []
    try:
        if not probe.wait_until_active(600.0):
            print("the node did not become active", file=sys.stderr)
            return 1
        probe.predict(make_request("warm", image=np.zeros((64, 64, 3), np.uint8)))
        memory = psutil.Process(node.pid)
        rss_start = memory.memory_info().rss
        threads = [
            threading.Thread(target=_client_loop, args=(i, args.seconds, outcomes, latencies))
            for i in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        alive = node.poll() is None
        rss_end = memory.memory_info().rss if alive else 0
    finally:
        probe.close()
        rclpy.shutdown()
        node.send_signal(signal.SIGINT)
        code = node.wait(timeout=60)
    print(f"clients {args.clients}, {args.seconds:.0f} s, {args.steps} steps per call")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {outcome}: {count}")
    if latencies:
        print(f"  served latency p50 {np.median(latencies):.3f} s, max {max(latencies):.3f} s")
    print(f"  node RSS start {rss_start / 2**20:.0f} MiB, end {rss_end / 2**20:.0f} MiB")
    print(f"  node alive through the test: {alive}; exit status {code}")
    ok = alive and code == 0 and not outcomes["unanswered"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

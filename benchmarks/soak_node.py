"""Soak and burst test of the node, started as the launch file starts it.

1. Bursts: ``--burst-mixed`` service calls and as many action goals sent at once, then
   ``--burst-calls`` service calls at once; every request must get an answer (OK or BUSY).
2. Soak: ``--requests`` mixed requests one after another (goal images and rollouts through the
   service and the action, full-size camera frames of ``--big-side`` pixels (a 4096x3072 rgb8
   frame is 36 MiB), compressed frames on the topic, malformed requests), sampling the node's
   resident memory. RSS must stay within 10% of its value after the first ``--settle`` requests.

Prints a table and the command; exit status 1 when a request went unanswered, the node died or
RSS grew by more than 10%::

    python benchmarks/soak_node.py --requests 1000
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import psutil
import rclpy
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

# The node and the client of this source tree, not a copy installed earlier.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from showme_ros.client import ShowMeClient, make_request, to_goal
from showme_ros.diagnostics import CODE_NAMES
from showme_ros.launch_command import SOURCE_ROOT, node_command
from showme_ros.middleware import free_transport_buffers


def header(sec: int, frame: str) -> Header:
    stamp = Header(frame_id=frame)
    stamp.stamp.sec = sec
    return stamp


def stop_node(node: psutil.Popen) -> int:
    node.send_signal(signal.SIGINT)
    try:
        return node.wait(timeout=60)
    except psutil.TimeoutExpired:
        node.kill()
        return node.wait()


def burst(client: ShowMeClient, calls: int, goals: int, timeout: float) -> Counter:
    """Send ``calls`` service requests and ``goals`` action goals at once; count the answers."""
    request = make_request("push the block", image=np.zeros((64, 64, 3), np.uint8))
    call_futures = [client.predict_client.call_async(request) for _ in range(calls)]
    goal_futures = [client.action_client.send_goal_async(to_goal(request)) for _ in range(goals)]
    result_futures: dict[int, object] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.executor.spin_once(timeout_sec=0.05)
        for index, sent in enumerate(goal_futures):
            if index not in result_futures and sent.done() and sent.result() is not None:
                result_futures[index] = sent.result().get_result_async()
        goals_done = len(result_futures) == goals and all(f.done() for f in result_futures.values())
        if goals_done and all(f.done() for f in call_futures):
            break
    counts: Counter = Counter()
    for future in call_futures:
        counts[CODE_NAMES[future.result().error_code.value] if future.done() else "unanswered"] += 1
    for index in range(goals):
        future = result_futures.get(index)
        done = future is not None and future.done()
        counts[CODE_NAMES[future.result().result.error_code.value] if done else "unanswered"] += 1
    return counts


def soak(
    client: ShowMeClient, process: psutil.Process, requests: int, big_side: int, settle: int
) -> tuple[Counter, list[tuple[int, int]]]:
    """Run ``requests`` mixed requests; return outcome counts and (request, RSS) samples."""
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (big_side * 3 // 4, big_side, 3), dtype=np.uint8)
    small = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    _, jpeg = cv2.imencode(".jpg", small)
    compressed = CompressedImage(header=header(1, "cam"), format="jpeg")
    compressed.data = jpeg.tobytes()
    topic = client.publisher(CompressedImage, "/showme/image/compressed")
    outcomes: Counter = Counter()
    samples: list[tuple[int, int]] = []
    for index in range(requests):
        kind = index % 10
        if kind in (0, 1, 2, 3):
            request = make_request("open the drawer", image=small)
        elif kind == 4:
            request = make_request("open the drawer", image=big, header=header(index, "cam"))
        elif kind == 5:
            request = make_request("open the drawer", image=small, video=True)
        elif kind == 6:
            topic.publish(compressed)
            time.sleep(0.02)
            request = make_request("open the drawer")
        elif kind == 7:
            request = make_request("close it", image=small, candidates=["open it", "do nothing"])
        else:
            request = make_request("x", image=small, guidance_scale=1e6)  # refused
        if kind == 9:
            _, result = client.rollout(to_goal(make_request("open", image=small, video=True)))
            outcomes[f"action {CODE_NAMES[result.error_code.value]}"] += 1
        else:
            response = client.predict(request, 300.0)
            outcomes[f"service {CODE_NAMES[response.error_code.value]}"] += 1
        if index % 50 == 0 or index == settle or index == requests - 1:
            samples.append((index, process.memory_info().rss))
    return outcomes, samples


def main(argv: list[str] | None = None) -> int:
    """Run the bursts and the soak; exit status 1 on an unanswered request, death or growth."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--settle", type=int, default=100)
    parser.add_argument("--big-side", type=int, default=4096)
    parser.add_argument("--burst-mixed", type=int, default=10)
    parser.add_argument("--burst-calls", type=int, default=100)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument(
        "--param", action="append", default=[], help="extra node parameter, name:=value"
    )
    args = parser.parse_args(argv)
    overrides = ["-p", f"inference.num_steps:={args.steps}", "-p", "limits.max_frame_age:=0.0"]
    for item in args.param:
        overrides += ["-p", item]
    command = [*node_command({"device": "cpu"}), *overrides]
    env = {**os.environ, "PYTHONPATH": str(SOURCE_ROOT), "OMP_NUM_THREADS": "1"}
    node = psutil.Popen(command, env=env, stdout=sys.stderr, stderr=sys.stderr)
    free_transport_buffers()
    rclpy.init()
    client = ShowMeClient("soak_client")
    try:
        if not client.wait_until_active(600.0):
            print("the node did not become active", file=sys.stderr)
            return 1
        started = time.monotonic()
        mixed = burst(client, args.burst_mixed, args.burst_mixed, 300.0)
        calls = burst(client, args.burst_calls, 0, 300.0)
        outcomes, samples = soak(client, node, args.requests, args.big_side, args.settle)
        seconds = time.monotonic() - started
        alive = node.poll() is None
    finally:
        client.close()
        rclpy.shutdown()
        code = stop_node(node)
    settled = dict(samples)[args.settle] if args.settle < args.requests else samples[0][1]
    end = samples[-1][1]
    growth = end / settled - 1
    print(
        f"\n`python benchmarks/soak_node.py {' '.join(argv or sys.argv[1:])}` ({seconds:.0f} s)\n"
    )
    print("| check | result |\n|---|---|")
    print(f"| burst: {args.burst_mixed} calls + {args.burst_mixed} goals at once | {dict(mixed)} |")
    print(f"| burst: {args.burst_calls} calls at once | {dict(calls)} |")
    for outcome, count in sorted(outcomes.items()):
        print(f"| soak: {outcome} | {count} |")
    print(f"| node RSS after {args.settle} requests | {settled / 2**20:.0f} MiB |")
    print(f"| node RSS after {args.requests} requests | {end / 2**20:.0f} MiB ({growth:+.1%}) |")
    trajectory = ", ".join(f"{i}: {rss / 2**20:.0f}" for i, rss in samples[::2])
    print(f"| node RSS (MiB) by request | {trajectory} |")
    print(f"| node alive, exit status | {alive}, {code} |")
    unanswered = mixed["unanswered"] + calls["unanswered"]
    ok = alive and code == 0 and unanswered == 0 and growth <= 0.10
    print(f"\n{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

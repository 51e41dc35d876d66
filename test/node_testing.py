"""Starting the node as the launch file starts it, and the inputs tests send it."""

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
from std_msgs.msg import Header

from showme_ros.launch_command import node_command

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 300.0


def header(sec: int, frame: str) -> Header:
    stamp = Header(frame_id=frame)
    stamp.stamp.sec, stamp.stamp.nanosec = sec, 123
    return stamp


def picture(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def start_node(tmp: Path, launch_args: dict, extra: list[str]) -> tuple[subprocess.Popen, Path]:
    """Start the node with the launch file's command line plus ``-p`` overrides ``extra``."""
    log = tmp / "node.log"
    command = node_command(launch_args)
    for item in extra:
        command += ["-p", item]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp / "cache")}
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    return process, log


def stop_node(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()

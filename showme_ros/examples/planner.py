"""A planner that uses predicted states: pick the instruction whose goal image is nearest a target.

It calls ``/showme/predict`` once, with every candidate instruction in the same request (the node
predicts them as one batch), and ranks the predicted goal images by their distance to the
target image. Run it beside a running node::

    python -m showme_ros.examples.planner --image now.png --target goal.png \
        --candidates "open the drawer" "close the drawer" "push the button"
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import cv2
import numpy as np
import rclpy

from showme_ros.client import ShowMeClient, make_request
from showme_ros.image_conversion import image_to_rgb


@dataclass(frozen=True)
class Plan:
    """The chosen instruction and every candidate's distance to the target (lower is closer)."""

    instruction: str
    distances: dict[str, float]


def distance(predicted: np.ndarray, target: np.ndarray) -> float:
    """Mean squared pixel difference, with the target resized to the prediction's size."""
    height, width = predicted.shape[:2]
    resized = cv2.resize(target, (width, height), interpolation=cv2.INTER_AREA)
    return float(np.mean((predicted.astype(np.float32) - resized.astype(np.float32)) ** 2))


def plan(
    client: ShowMeClient,
    image: np.ndarray,
    target: np.ndarray,
    candidates: list[str],
    seed: int = 0,
) -> Plan:
    """Predict a goal image for each candidate in one call and choose the closest to ``target``.

    Raises:
        RuntimeError: The node refused the request (its message says why).

    """
    request = make_request(candidates[0], image=image, seed=seed, candidates=candidates[1:])
    response = client.predict(request)
    if not response.success:
        raise RuntimeError(f"prediction refused: {response.message}")
    distances = {
        p.instruction: distance(image_to_rgb(p.frames[-1]), target) for p in response.predictions
    }
    return Plan(min(distances, key=distances.get), distances)


def _read_rgb(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: print the candidates ranked by distance and the choice."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", required=True, help="current camera image (PNG/JPEG)")
    parser.add_argument("--target", required=True, help="image of the desired outcome")
    parser.add_argument("--candidates", nargs="+", required=True, help="candidate instructions")
    parser.add_argument("--namespace", default="/showme", help="namespace of the node")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    args = parser.parse_args(argv)
    rclpy.init()
    client = ShowMeClient("showme_planner", args.namespace)
    try:
        chosen = plan(
            client, _read_rgb(args.image), _read_rgb(args.target), args.candidates, args.seed
        )
    finally:
        client.close()
        rclpy.shutdown()
    for instruction, value in sorted(chosen.distances.items(), key=lambda item: item[1]):
        print(f"{value:10.1f}  {instruction}")
    print(f"chosen: {chosen.instruction}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

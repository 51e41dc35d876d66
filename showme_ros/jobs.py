"""Validated prediction jobs from service requests, action goals and continuous mode."""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from showme_ros.image_conversion import (
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    is_empty,
)
from showme_ros.msg import PredictedRollout
from showme_ros.parameters import Settings

MODES = {PredictedRollout.MODE_GOAL_IMAGE: "image", PredictedRollout.MODE_ROLLOUT: "video"}
MAX_SEED = 2**32 - 1


class RequestError(ValueError):
    """A request that cannot be served; its message is sent back to the caller."""


@dataclass
class Job:
    """Everything one batched prediction needs."""

    image: np.ndarray
    header: Header
    instructions: list[str]
    mode: str
    num_frames: int
    num_steps: int
    guidance_scale: float
    eta: float
    frame_stride: int | None
    seed: int


class LatestInputs:
    """The newest camera frame and instruction, kept by the subscription callbacks.

    Only the newest frame is kept; a frame replaced before any prediction used it counts as
    dropped.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: Image | CompressedImage | None = None
        self._frame_used = True
        self._instruction = ""
        self.frames_received = 0
        self.frames_dropped = 0

    def set_frame(self, msg: Image | CompressedImage) -> None:
        """Keep ``msg`` as the newest frame."""
        with self._lock:
            self.frames_received += 1
            if not self._frame_used:
                self.frames_dropped += 1
            self._frame, self._frame_used = msg, False

    def set_instruction(self, text: str) -> None:
        """Keep ``text`` as the newest instruction."""
        with self._lock:
            self._instruction = text

    def take(self) -> tuple[Image | CompressedImage | None, str]:
        """Return the newest frame (marking it used) and instruction."""
        with self._lock:
            self._frame_used = True
            return self._frame, self._instruction


def decode_frame(msg: Image | CompressedImage, max_side: int) -> np.ndarray:
    """RGB array of a camera message of either type."""
    if isinstance(msg, CompressedImage):
        return compressed_to_rgb(msg, max_side)
    return image_to_rgb(msg, max_side)


def build_job(request: object, latest: LatestInputs, settings: Settings, image_topic: str) -> Job:
    """Validate a ``Predict`` request (or ``PredictRollout`` goal) into a :class:`Job`.

    Raises:
        RequestError: With a message saying what is wrong and what is allowed.

    """
    frame, latest_instruction = latest.take()
    if request.mode not in MODES:
        raise RequestError(
            f"unknown mode {request.mode}; use MODE_GOAL_IMAGE (0) or MODE_ROLLOUT (1)"
        )
    if not is_empty(request.image):
        frame = request.image
    elif frame is None:
        raise RequestError(
            f"no image: the request has none and no frame has arrived on {image_topic}"
        )
    try:
        image = decode_frame(frame, settings.max_image_side)
    except ImageConversionError as error:
        raise RequestError(f"bad image: {error}") from error
    instruction = request.instruction or latest_instruction
    if not instruction:
        raise RequestError(
            "no instruction: the request has none and none was published on the instruction topic"
        )
    if len(request.candidates) > settings.max_candidates:
        raise RequestError(
            f"{len(request.candidates)} candidates; at most {settings.max_candidates} are "
            "accepted (limits.max_candidates)"
        )
    instructions = [instruction, *request.candidates]
    for index, text in enumerate(instructions):
        _check_instruction(text, index, settings.max_instruction_length)
    mode = MODES[request.mode]
    return Job(
        image=image,
        header=frame.header,
        instructions=instructions,
        mode=mode,
        num_frames=_num_frames(request.num_frames, mode, settings),
        num_steps=_num_steps(request.num_steps, settings),
        guidance_scale=_guidance(request.guidance_scale, settings),
        eta=settings.eta,
        frame_stride=settings.frame_stride or None,
        seed=_seed(request.seed, len(instructions)),
    )


def continuous_job(image: np.ndarray, header: Header, instruction: str, settings: Settings) -> Job:
    """Return a job with the node's defaults, for continuous mode."""
    mode = settings.continuous_mode
    return Job(
        image=image,
        header=header,
        instructions=[instruction[: settings.max_instruction_length]],
        mode=mode,
        num_frames=settings.num_frames if mode == "video" else 1,
        num_steps=settings.num_steps,
        guidance_scale=settings.guidance_scale,
        eta=settings.eta,
        frame_stride=settings.frame_stride or None,
        seed=_seed(settings.seed, 1),
    )


def _check_instruction(text: str, index: int, limit: int) -> None:
    name = "instruction" if index == 0 else f"candidate {index - 1}"
    if not text.strip():
        raise RequestError(f"{name} is empty")
    if len(text) > limit:
        raise RequestError(
            f"{name} has {len(text)} characters; at most {limit} are accepted "
            "(limits.max_instruction_length)"
        )


def _num_frames(requested: int, mode: str, settings: Settings) -> int:
    if mode == "image":
        return 1
    frames = requested or settings.num_frames
    if not 2 <= frames <= settings.max_num_frames:
        raise RequestError(
            f"num_frames {frames} is beyond the model: a rollout has 2 to "
            f"{settings.max_num_frames} frames (limits.max_num_frames)"
        )
    return frames


def _num_steps(requested: int, settings: Settings) -> int:
    steps = requested or settings.num_steps
    if steps > settings.max_num_steps:
        raise RequestError(
            f"num_steps {steps} is too many: at most {settings.max_num_steps} "
            "(limits.max_num_steps); 0 = the default"
        )
    return steps


def _guidance(requested: float, settings: Settings) -> float:
    if not math.isfinite(requested) or requested < 0:
        raise RequestError(f"guidance_scale must be a finite number >= 0, got {requested}")
    return float(requested) or settings.guidance_scale


def _seed(requested: int, batch: int) -> int:
    """Return the base seed of a batch; item ``i`` uses ``seed + i``, which must fit uint32."""
    largest = MAX_SEED - batch + 1
    if requested == -1:
        return random.randint(0, largest)
    if not 0 <= requested <= largest:
        raise RequestError(f"seed must be -1 (random) or 0 to {largest}, got {requested}")
    return requested

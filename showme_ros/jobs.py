"""Validated prediction jobs from service requests, action goals and continuous mode.

All three go through :func:`build_job`, so they share one set of checks and one set of errors
(:mod:`showme_ros.errors`).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from showme_ros.errors import (
    BadImageError,
    NoInputError,
    RequestError,
    StaleFrameError,
)
from showme_ros.image_conversion import (
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    is_empty,
)
from showme_ros.msg import PredictedRollout
from showme_ros.parameters import Settings

MODES = {PredictedRollout.MODE_GOAL_IMAGE: "image", PredictedRollout.MODE_ROLLOUT: "video"}
MODE_CODES = {name: code for code, name in MODES.items()}
MAX_SEED = 2**32 - 1


KEEP_SCENE = {"": None, "on": True, "off": False}
"""``inference.keep_scene`` to the pipeline's ``keep_scene`` (None: the model's setting)."""


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
    scheduler: str
    keep_scene: bool | None
    frame_stride: int | None
    seed: int


@dataclass(frozen=True)
class CameraTopics:
    """Resolved names of the camera subscriptions, for messages about their frames."""

    raw: str
    compressed: str


@dataclass(frozen=True)
class Frame:
    """The newest camera message, when it arrived (node clock, ns) and its sequence number."""

    msg: Image | CompressedImage
    received_ns: int
    index: int


class LatestInputs:
    """The newest camera frame and instruction, kept by the subscription callbacks.

    Counters (all thread-safe):

    - ``frames_received``: camera messages that arrived;
    - ``frames_superseded``: replaced by a newer one before any prediction read them (normal
      whenever the camera is faster than the requests);
    - ``frames_dropped``: frames a prediction needed but could not use (malformed, too large,
      too old, or continuous mode busy): the frames a user lost.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._frame_used = True
        self._dropped_index = -1
        self._instruction = ""
        self.frames_received = 0
        self.frames_superseded = 0
        self.frames_dropped = 0

    def set_frame(self, msg: Image | CompressedImage, received_ns: int) -> None:
        """Keep ``msg``, received at ``received_ns``, as the newest frame."""
        with self._lock:
            self.frames_received += 1
            if not self._frame_used:
                self.frames_superseded += 1
            self._frame = Frame(msg, received_ns, self.frames_received)
            self._frame_used = False

    def set_instruction(self, text: str) -> None:
        """Keep ``text`` as the newest instruction."""
        with self._lock:
            self._instruction = text

    def take(self) -> tuple[Frame | None, str]:
        """Return the newest frame (marking it used) and instruction."""
        with self._lock:
            self._frame_used = True
            return self._frame, self._instruction

    def drop(self, frame: Frame) -> None:
        """Count ``frame`` as dropped (once, however many requests failed on it)."""
        with self._lock:
            if frame.index != self._dropped_index:
                self._dropped_index = frame.index
                self.frames_dropped += 1

    def newest_age(self, now_ns: int) -> float | None:
        """Seconds since the newest frame arrived; None before the first."""
        with self._lock:
            return None if self._frame is None else (now_ns - self._frame.received_ns) / 1e9


def decode_frame(msg: Image | CompressedImage, max_side: int) -> np.ndarray:
    """RGB array of a camera message of either type."""
    if isinstance(msg, CompressedImage):
        return compressed_to_rgb(msg, max_side)
    return image_to_rgb(msg, max_side)


def build_job(
    request: object,
    latest: LatestInputs,
    settings: Settings,
    topics: CameraTopics,
    now_ns: int,
) -> Job:
    """Validate a ``Predict`` request (or ``PredictRollout`` goal) into a :class:`Job`.

    An empty image takes the newest camera frame (from either of ``topics``), which must be at most
    ``settings.max_frame_age`` seconds old; an empty instruction takes the newest one.

    Raises:
        RequestError: A subclass naming the failure, with a message saying what is wrong and
            what is allowed.

    """
    frame, latest_instruction = latest.take()
    if request.mode not in MODES:
        raise RequestError(
            f"unknown mode {request.mode}; use MODE_GOAL_IMAGE (0) or MODE_ROLLOUT (1)"
        )
    mode = MODES[request.mode]
    instruction = request.instruction or latest_instruction
    if not instruction:
        raise NoInputError(
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
    num_frames = _num_frames(request.num_frames, mode, settings)
    num_steps = request.num_steps or settings.num_steps
    guidance_scale = float(request.guidance_scale) or settings.guidance_scale
    _check_sampler(num_steps, guidance_scale, num_frames, settings)
    seed = _seed(request.seed, len(instructions))
    if is_empty(request.image):
        image, header = _camera_frame(frame, latest, settings, topics, now_ns)
    else:
        _check_frame_id(request.image.header, settings, "the request's image")
        image = _decode(request.image, settings, "in the request")
        header = request.image.header
    return Job(
        image=image,
        header=header,
        instructions=instructions,
        mode=mode,
        num_frames=num_frames,
        num_steps=num_steps,
        guidance_scale=guidance_scale,
        eta=settings.eta,
        scheduler=settings.scheduler,
        keep_scene=KEEP_SCENE[settings.keep_scene],
        frame_stride=settings.frame_stride or None,
        seed=seed,
    )


def _camera_frame(
    frame: Frame | None, latest: LatestInputs, settings: Settings, topics: CameraTopics, now_ns: int
) -> tuple[np.ndarray, Header]:
    if frame is None:
        raise NoInputError(
            f"no image: the request has none and no frame has arrived on {topics.raw} or "
            f"{topics.compressed}"
        )
    topic = topics.compressed if isinstance(frame.msg, CompressedImage) else topics.raw
    age = (now_ns - frame.received_ns) / 1e9
    try:
        if settings.max_frame_age > 0 and age > settings.max_frame_age:
            raise StaleFrameError(
                f"the latest frame on {topic} arrived {age:.1f} s ago; frames older than "
                f"{settings.max_frame_age:g} s are refused (limits.max_frame_age)"
            )
        _check_frame_id(frame.msg.header, settings, f"the frame on {topic}")
        return _decode(frame.msg, settings, f"on {topic}"), frame.msg.header
    except RequestError:
        latest.drop(frame)
        raise


def _decode(msg: Image | CompressedImage, settings: Settings, where: str) -> np.ndarray:
    try:
        return decode_frame(msg, settings.max_image_side)
    except ImageConversionError as error:
        raise BadImageError(f"bad image {where}: {error}") from error


def _check_frame_id(header: Header, settings: Settings, what: str) -> None:
    if len(header.frame_id) > settings.max_frame_id_length:
        raise RequestError(
            f"frame_id of {what} has {len(header.frame_id)} characters; at most "
            f"{settings.max_frame_id_length} are accepted (limits.max_frame_id_length)"
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
    if frames < 2:
        raise RequestError(f"num_frames {frames}: a rollout has at least 2 frames")
    return frames


def _check_sampler(
    num_steps: int, guidance_scale: float, num_frames: int, settings: Settings
) -> None:
    """Check the sampler settings with the model library's one validation."""
    from showme_model.sampler_config import SamplerSettingsError, validate_request

    try:
        validate_request(
            num_steps,
            guidance_scale,
            settings.eta,
            num_frames,
            settings.max_num_frames,
            frame_stride=settings.frame_stride or None,
            scheduler=settings.scheduler,
            max_num_inference_steps=settings.max_num_steps,
        )
    except SamplerSettingsError as error:
        raise RequestError(
            f"{error} (0 = the node's default; limits.max_num_steps and limits.max_num_frames "
            "bound requests)"
        ) from error


def _seed(requested: int, batch: int) -> int:
    """Return the base seed of a batch; item ``i`` uses ``seed + i``, which must fit uint32.

    0 (what an unset field holds) and negative values draw a random seed.
    """
    largest = MAX_SEED - batch + 1
    if requested <= 0:
        return random.randint(1, largest)
    if requested > largest:
        raise RequestError(f"seed must be 1 to {largest} (0 or negative = random), got {requested}")
    return requested

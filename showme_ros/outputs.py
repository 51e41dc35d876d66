"""Prediction messages: frames placed back into the camera image, stamped at predicted times."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Header

from showme_ros.image_conversion import rgb_to_image
from showme_ros.jobs import MODE_CODES, Job
from showme_ros.msg import PredictedRollout

NS_PER_S = 1_000_000_000


def compose(image: np.ndarray, frame: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """Paste ``frame`` (already region-sized) into a copy of ``image`` at ``region``.

    Args:
        image: ``(H, W, 3)`` uint8 conditioning image.
        frame: ``(h, w, 3)`` uint8 prediction of the region, ``h, w`` the region's size.
        region: ``(top, left, height, width)`` in ``image``'s pixels.

    """
    top, left, height, width = region
    if frame.shape[:2] != (height, width):
        raise ValueError(f"frame is {frame.shape[:2]}, the region {(height, width)}")
    out = image.copy()
    out[top : top + height, left : left + width] = frame
    return out


def frame_offsets(job: Job, frame_count: int, frame_period: float, default_frames: int) -> list:
    """Seconds after the conditioning image of each predicted frame.

    A rollout's frame k is ``k * frame_period`` later; a goal image is stamped at the end of a
    default-length rollout.
    """
    if job.mode == "video":
        return [k * frame_period for k in range(frame_count)]
    return [(default_frames - 1) * frame_period]


def later(header: Header, seconds: float) -> Header:
    """Copy ``header`` with its stamp ``seconds`` later."""
    stamp = header.stamp.sec * NS_PER_S + header.stamp.nanosec + round(seconds * 1e9)
    return Header(
        frame_id=header.frame_id,
        stamp=Time(sec=stamp // NS_PER_S, nanosec=stamp % NS_PER_S),
    )


def to_message(
    job: Job,
    index: int,
    frames: np.ndarray,
    region: tuple[int, int, int, int],
    camera_resolution: bool,
    offsets: list[float],
    model_id: str,
    latency: float,
) -> PredictedRollout:
    """Build the ``PredictedRollout`` of instruction ``index`` of ``job``.

    Args:
        job: The job that was run.
        index: Which of its instructions.
        frames: ``(T, h, w, 3)`` uint8 frames: region-sized when ``camera_resolution``, else the
            model's resolution.
        region: ``(top, left, height, width)`` of the conditioning image the model saw.
        camera_resolution: Paste the frames into the conditioning image.
        offsets: Seconds after the conditioning image of each frame.
        model_id: The model's identifier.
        latency: Seconds the prediction took.

    """
    if camera_resolution:
        frames = [compose(job.image, frame, region) for frame in frames]
    top, left, height, width = region
    return PredictedRollout(
        header=job.header,
        instruction=job.instructions[index],
        mode=MODE_CODES[job.mode],
        frames=[
            rgb_to_image(np.ascontiguousarray(frame), later(job.header, offset))
            for frame, offset in zip(frames, offsets, strict=True)
        ],
        frame_offsets=[_duration(offset) for offset in offsets],
        crop=RegionOfInterest(x_offset=left, y_offset=top, height=height, width=width),
        model_id=model_id,
        seed=job.seed + index,
        inference_time=latency,
    )


def _duration(seconds: float) -> Duration:
    nanoseconds = round(seconds * 1e9)
    return Duration(sec=nanoseconds // NS_PER_S, nanosec=nanoseconds % NS_PER_S)

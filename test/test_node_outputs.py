"""Prediction messages: frames pasted back into the camera image, stamped at predicted times."""

import numpy as np
import pytest
from std_msgs.msg import Header

from showme_ros import outputs
from showme_ros.image_conversion import image_to_rgb
from showme_ros.jobs import Job
from showme_ros.msg import PredictedRollout


def job(mode: str, image: np.ndarray) -> Job:
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 10, 900_000_000
    return Job(image, header, ["open", "close"], mode, 3, 2, 1.0, 1.0, "ddim", None, None, 7)


def test_compose_pastes_the_prediction_into_its_region_and_keeps_the_rest():
    image = np.zeros((6, 10, 3), np.uint8)
    frame = np.full((6, 6, 3), 200, np.uint8)
    out = outputs.compose(image, frame, (0, 2, 6, 6))
    assert out.shape == (6, 10, 3)
    assert (out[:, 2:8] == 200).all() and (out[:, :2] == 0).all() and (out[:, 8:] == 0).all()
    assert (image == 0).all()  # the conditioning image is not modified
    with pytest.raises(ValueError, match="region"):
        outputs.compose(image, np.zeros((4, 4, 3), np.uint8), (0, 2, 6, 6))


def test_rollout_frames_are_stamped_at_the_times_they_predict():
    image = np.zeros((6, 10, 3), np.uint8)
    rollout = job("video", image)
    offsets = outputs.frame_offsets(rollout, 3, 0.25, default_frames=8)
    assert offsets == [0.0, 0.25, 0.5]
    frames = np.full((3, 6, 6, 3), 50, np.uint8)
    msg = outputs.to_message(rollout, 1, frames, (0, 2, 6, 6), True, offsets, "m", 1.5)
    stamps = [(f.header.stamp.sec, f.header.stamp.nanosec) for f in msg.frames]
    assert stamps == [(10, 900_000_000), (11, 150_000_000), (11, 400_000_000)]
    assert msg.header.stamp.sec == 10 and all(f.header.frame_id == "cam" for f in msg.frames)
    assert (msg.crop.x_offset, msg.crop.y_offset, msg.crop.width, msg.crop.height) == (2, 0, 6, 6)
    assert (
        msg.instruction == "close" and msg.seed == 8 and msg.mode == PredictedRollout.MODE_ROLLOUT
    )
    assert [image_to_rgb(f).shape for f in msg.frames] == [(6, 10, 3)] * 3


def test_a_goal_image_is_stamped_at_the_end_of_a_default_rollout_and_can_stay_model_sized():
    goal = job("image", np.zeros((6, 10, 3), np.uint8))
    offsets = outputs.frame_offsets(goal, 1, 0.1, default_frames=8)
    assert offsets == [pytest.approx(0.7)]
    msg = outputs.to_message(
        goal, 0, np.zeros((1, 4, 4, 3), np.uint8), (0, 2, 6, 6), False, offsets, "m", 1.0
    )
    assert image_to_rgb(msg.frames[0]).shape == (4, 4, 3)
    assert msg.crop.width == 6 and msg.frame_offsets[0].nanosec == 700_000_000

"""Writers: PNG, GIF, MP4 and strips read back with the same content."""

import cv2
import imageio.v3 as iio
import numpy as np
import pytest

from showme_model.writers import make_strip, write_frames, write_gif, write_mp4, write_png


def _frames(count: int = 4, height: int = 32, width: int = 48) -> np.ndarray:
    frames = np.zeros((count, height, width, 3), np.uint8)
    for i in range(count):
        frames[i, :, :, i % 3] = 40 * (i + 1)
    return frames


def test_png_round_trips_rgb(tmp_path):
    image = _frames(1)[0]
    path = write_png(tmp_path / "goal.png", image)
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), image)


def test_gif_keeps_every_frame(tmp_path):
    frames = _frames()
    read = iio.imread(write_gif(tmp_path / "roll.gif", frames))
    assert read.shape[0] == len(frames)
    assert np.abs(read[..., :3].astype(int) - frames).max() <= 8


def test_mp4_has_the_frames_size_and_colours(tmp_path):
    frames = _frames(5)
    capture = cv2.VideoCapture(str(write_mp4(tmp_path / "roll.mp4", frames)))
    read = []
    ok, frame = capture.read()
    while ok:
        read.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        ok, frame = capture.read()
    capture.release()
    assert len(read) == 5 and read[0].shape == (32, 48, 3)
    assert np.abs(np.mean(read, axis=(1, 2)) - frames.mean(axis=(1, 2))).max() < 10


def test_strip_places_input_goal_and_rollout_side_by_side():
    source = np.full((32, 32, 3), 7, np.uint8)
    goal = np.full((64, 64, 3), 9, np.uint8)  # resized to the input's height
    strip = make_strip(source, goal, _frames(3), gap=2)
    assert strip.shape == (32, 32 + 2 + 32 + 3 * (2 + 48), 3)
    assert (strip[:, :32] == 7).all() and (strip[:, 34:66] == 9).all()
    assert (strip[:, 32:34] == 255).all()


def test_write_frames_dispatches_by_suffix(tmp_path):
    assert write_frames(tmp_path / "one.png", _frames(1)) == [tmp_path / "one.png"]
    many = write_frames(tmp_path / "many.png", _frames(3))
    assert [p.name for p in many] == ["many_000.png", "many_001.png", "many_002.png"]
    assert all(p.is_file() for p in many)
    with pytest.raises(ValueError, match="suffix"):
        write_frames(tmp_path / "x.avi", _frames())


def test_bad_frames_are_refused(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "x.png", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="one image"):
        write_png(tmp_path / "x.png", _frames(2))

"""Whether a prediction keeps the input's objects: the rule on synthetic renders."""

import numpy as np

from training.metrics.objects import MIN_PIXELS, FrameObjects, kept_fraction, kept_objects

SIZE = 16
TABLE, CUBE, ARM = (120, 80, 50), (200, 200, 200), (200, 30, 30)


def _frame(cube_x: int | None, arm_x: int | None = None) -> tuple[np.ndarray, FrameObjects]:
    """A table with a 3x4 cube at ``cube_x`` (none if None) and an arm column at ``arm_x``."""
    image = np.empty((SIZE, SIZE, 3), np.uint8)
    image[:] = TABLE
    hidden = image.copy()
    cube = np.zeros((SIZE, SIZE), bool)
    if cube_x is not None:
        cube[6:9, cube_x : cube_x + 4] = True
    image[cube] = CUBE
    arm = np.zeros((SIZE, SIZE), bool)
    if arm_x is not None:
        arm[:, arm_x : arm_x + 2] = True
        image[arm] = hidden[arm] = ARM
    cube &= ~arm
    return image, FrameObjects(arm, {"cube": cube}, {"cube": hidden})


def test_the_true_frame_keeps_the_object_and_the_scene_without_it_loses_it():
    first, start = _frame(cube_x=2)
    truth, now = _frame(cube_x=10)
    assert kept_objects(truth, first, truth, start, now) == {"cube": True}
    assert kept_objects(now.hidden["cube"], first, truth, start, now) == {"cube": False}


def test_an_object_left_at_its_start_place_is_kept_not_vanished():
    first, start = _frame(cube_x=2)
    truth, now = _frame(cube_x=10)
    assert kept_objects(first, first, truth, start, now) == {"cube": True}


def test_a_faint_ghost_of_the_object_is_lost():
    first, start = _frame(cube_x=2)
    truth, now = _frame(cube_x=10)
    ghost = (0.7 * now.hidden["cube"] + 0.3 * truth).astype(np.uint8)
    strong = (0.3 * now.hidden["cube"] + 0.7 * truth).astype(np.uint8)
    assert kept_objects(ghost, first, truth, start, now) == {"cube": False}
    assert kept_objects(strong, first, truth, start, now) == {"cube": True}


def test_pixels_under_the_arm_do_not_count():
    first, start = _frame(cube_x=10)
    truth, now = _frame(cube_x=10, arm_x=10)  # the arm covers half the cube
    wrong_under_arm = truth.copy()
    wrong_under_arm[now.arm] = TABLE  # the arm erased: only arm pixels differ
    assert kept_objects(wrong_under_arm, first, truth, start, now) == {"cube": True}
    # The gripper covers the whole object in the true frame: nothing to tell, not lost.
    now.arm[6:9, 10:14] = True
    truth[now.arm] = ARM
    now.masks["cube"][:] = False
    assert kept_objects(truth, first, truth, start, now) == {}


def test_an_object_too_small_or_too_like_its_background_is_not_measured():
    first, start = _frame(cube_x=None)
    truth, now = _frame(cube_x=None)
    start.masks["cube"][0, : MIN_PIXELS - 1] = True  # a sliver
    now.masks["cube"][0, : MIN_PIXELS - 1] = True
    assert kept_objects(truth, first, truth, start, now) == {}
    start.masks["cube"][5:10, 5:10] = True  # many pixels, but they look like the table
    assert kept_objects(truth, first, truth, start, now) == {}
    assert kept_fraction({}) is None
    assert kept_fraction({"a": True, "b": False}) == 0.5

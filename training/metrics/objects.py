"""Whether the objects of the input scene are still in a prediction: none may vanish.

A Meta-World clip is re-simulated (:func:`training.metrics.arm_mask.replay_clip`) and, at each
frame measured, rendered twice more: MuJoCo's segmentation (which body each pixel shows) and,
per object, the same frame with that object hidden. An object is a body hanging from the world
body that is neither the robot nor one of the scene's :data:`FIXTURES` (with its whole subtree:
the drawer with its handle, the faucet with its lever).

A predicted frame keeps an object when, on the object's pixels, it is closer to the true scene
than to the scene without the object, at the object's start place (its pixels in the input
frame) or at its true place in that frame. Either counts, so that a prediction that leaves the
object where it was, or moves it the wrong way, keeps it; only one that paints the table or
the wall where the object is, at both places, has lost it. Pixels the arm covers in the input
or the true frame are left out, and a place with fewer than :data:`MIN_PIXELS` pixels, or whose
object hardly differs from what is behind it (:data:`MIN_CONTRAST`), is not measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.data.manifest import ClipRecord
from training.metrics.arm_mask import arm_bodies, arm_pixels, init_render_worker, replay_clip
from training.metrics.swap import mean_squared_error

FIXTURES = ("tablelink", "RetainingWall")
"""Meta-World's table and back wall: the scene itself, measured by the off-arm PSNR instead."""
MIN_PIXELS = 4
MIN_CONTRAST = 10.0
"""Least RMS difference (of 255) between an object's pixels and what is behind them."""


@dataclass(frozen=True)
class FrameObjects:
    """One rendered frame of a clip: the arm, and each object with the frame without it.

    Attributes:
        arm: ``(H, W)`` pixels showing the arm.
        masks: Per object name, ``(H, W)`` pixels showing the object.
        hidden: Per object name, the ``(H, W, 3)`` uint8 frame rendered without the object.

    """

    arm: np.ndarray
    masks: dict[str, np.ndarray]
    hidden: dict[str, np.ndarray]


def scene_objects(model: Any, shown_groups: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Object name -> body ids of its subtree, for the objects of a MuJoCo model.

    Args:
        model: The MuJoCo model.
        shown_groups: Per geom group, whether it is rendered (``MjvOption.geomgroup``); an
            object needs a geom in a rendered group, not fully transparent. Every group when
            None.

    """
    import mujoco

    arm = arm_bodies(model)
    shown = np.ones(mujoco.mjNGROUP, bool) if shown_groups is None else shown_groups
    visible = np.asarray(shown, bool)[model.geom_group] & (model.geom_rgba[:, 3] > 0)
    top = np.arange(model.nbody)
    for body in range(1, model.nbody):  # MuJoCo numbers a parent before its children
        if model.body_parentid[body] != 0:
            top[body] = top[model.body_parentid[body]]
    objects = {}
    for body in range(1, model.nbody):
        subtree = np.flatnonzero(top == body)
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, body)
        if (
            model.body_parentid[body] == 0
            and name not in FIXTURES
            and not arm[subtree].any()
            and (visible & np.isin(model.geom_bodyid, subtree)).any()
        ):
            objects[name] = subtree
    return objects


def _render_objects(env: Any) -> FrameObjects:
    """Segment the env's current frame and render it once per object, the object hidden."""
    model, view = env.env.model, env.view
    shown = np.asarray(view.option.geomgroup, bool)
    hidden_group = int(np.flatnonzero(~shown)[-1])
    bodies = view.segment(env.env.data)
    masks, hidden = {}, {}
    for name, subtree in scene_objects(model, shown).items():
        masks[name] = np.isin(bodies, subtree)
        geoms = np.isin(model.geom_bodyid, subtree)
        groups = model.geom_group[geoms].copy()
        model.geom_group[geoms] = hidden_group
        try:
            hidden[name] = view.render(env.env.data)[0]
        finally:
            model.geom_group[geoms] = groups
    return FrameObjects(arm_pixels(bodies, model), masks, hidden)


def _clip_objects(record: ClipRecord, root: str, frames: list[int]) -> list[FrameObjects]:
    return replay_clip(record, root, frames, _render_objects)


def clip_objects(
    records: Sequence[ClipRecord],
    root: str | Path,
    frames: Sequence[Sequence[int]],
    workers: int = 1,
) -> list[list[FrameObjects]]:
    """Render the arm and the objects of each Meta-World clip at its frames.

    Args:
        records: Clips written by ``showme-data metaworld``.
        root: The manifest's folder.
        frames: Per clip, the indices of the frames to render (negative: from the end).
        workers: Rendering processes.

    Raises:
        ValueError: A clip is not a Meta-World clip or does not re-simulate exactly.

    """
    import multiprocessing as mp

    if len(frames) != len(records):
        raise ValueError(f"need the frames of each clip, got {len(frames)} for {len(records)}")
    if not records:
        return []
    jobs = [(record, str(root), list(f)) for record, f in zip(records, frames, strict=True)]
    with mp.get_context("spawn").Pool(workers, init_render_worker) as pool:
        return pool.starmap(_clip_objects, jobs, chunksize=max(1, len(jobs) // (4 * workers)))


def _closer_to_truth(
    image: np.ndarray, truth: np.ndarray, without: np.ndarray, pixels: np.ndarray
) -> bool | None:
    """Whether ``image`` shows the object on ``pixels``; None when they cannot tell."""
    if pixels.sum() < MIN_PIXELS or mean_squared_error(truth[pixels], without[pixels]) < (
        MIN_CONTRAST**2
    ):
        return None
    return mean_squared_error(image[pixels], truth[pixels]) < mean_squared_error(
        image[pixels], without[pixels]
    )


def kept_objects(
    image: np.ndarray,
    first: np.ndarray,
    truth: np.ndarray,
    start: FrameObjects,
    now: FrameObjects,
) -> dict[str, bool]:
    """Which objects of the input a predicted frame keeps (objects not measurable left out).

    Args:
        image: The predicted frame (H, W, 3) uint8.
        first: The input frame.
        truth: The true frame that ``image`` predicts.
        start: The objects rendered at the input frame.
        now: The objects rendered at the true frame.

    """
    free = ~(start.arm | now.arm)
    kept = {}
    for name in start.masks:
        places = (
            _closer_to_truth(image, first, start.hidden[name], start.masks[name] & free),
            _closer_to_truth(image, truth, now.hidden[name], now.masks[name] & free),
        )
        measured = [place for place in places if place is not None]
        if measured:
            kept[name] = any(measured)
    return kept


def kept_fraction(kept: dict[str, bool]) -> float | None:
    """Share of the measured objects kept; None when none was measured."""
    return float(np.mean(list(kept.values()))) if kept else None

"""Robot-arm masks of Meta-World clips, for measuring the scene and the object off the arm.

A clip of ``showme-data metaworld`` is re-simulated from its layout seed (same start, same
expert, so the same states, bit for bit) and rendered with MuJoCo's segmentation from the
clip's camera; every body in the subtree of the Sawyer's ``right_arm_base_link`` (arm and
gripper) is the arm. The re-rendered colour frames are checked against the stored ones.
Rendering runs in worker processes with EGL, whatever the calling process imported before.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from training.data.manifest import ClipRecord
from training.data.metaworld_gen import NOOP_TASK, Generator, Job, Scene, load_tasks

ARM_ROOT = "right_arm_base_link"
T = TypeVar("T")
_GENERATORS: dict[int, Generator] = {}  # per frame size, per worker; envs live as long as it


def arm_bodies(model: Any) -> np.ndarray:
    """Boolean per body of a MuJoCo model: in the subtree of :data:`ARM_ROOT`."""
    import mujoco

    root = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, ARM_ROOT)
    if root < 0:
        raise ValueError(f"the model has no body {ARM_ROOT!r}")
    inside = np.zeros(model.nbody, bool)
    inside[root] = True
    for body in range(root + 1, model.nbody):  # MuJoCo numbers a parent before its children
        inside[body] = inside[model.body_parentid[body]]
    return inside


def clip_arm_masks(
    records: Sequence[ClipRecord],
    root: str | Path,
    workers: int = 1,
    frames: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """Return the arm masks ``(T, H, W)`` bool of the frames of each Meta-World clip.

    Args:
        records: Clips written by ``showme-data metaworld`` (``meta`` has ``task``, ``seed``,
            ``size`` and ``start_of`` or ``scene_id``).
        root: The manifest's folder.
        workers: Rendering processes.
        frames: Indices of the frames to mask (negative ones count from the end), in the
            order given; every frame when ``None``. Only these frames are rendered and checked.

    Raises:
        ValueError: A clip is not a Meta-World clip, or its re-simulated frames differ from
            the stored ones (another simulator version, another camera).

    """
    import multiprocessing as mp

    if not records:
        return []
    jobs = [(record, str(root), None if frames is None else list(frames)) for record in records]
    with mp.get_context("spawn").Pool(workers, init_render_worker) as pool:
        return pool.starmap(_clip_masks, jobs, chunksize=max(1, len(jobs) // (4 * workers)))


def init_render_worker() -> None:
    """Set up a rendering worker process: MuJoCo through EGL, one rasteriser thread."""
    os.environ["MUJOCO_GL"] = "egl"
    os.environ.setdefault("LP_NUM_THREADS", "1")


def arm_pixels(bodies: np.ndarray, model: Any) -> np.ndarray:
    """Pixels showing the arm, from a segmentation's body ids (-1: background)."""
    return (bodies >= 0) & arm_bodies(model)[np.maximum(bodies, 0)]


def _arm_mask(env: Any) -> np.ndarray:
    return arm_pixels(env.view.segment(env.env.data), env.env.model)


def _clip_masks(record: ClipRecord, root: str | Path, frames: list[int] | None) -> np.ndarray:
    return np.stack(replay_clip(record, root, frames, _arm_mask))


def metaworld_scene(record: ClipRecord) -> Scene:
    """Return the Meta-World scene a generator clip was made in.

    Raises:
        ValueError: The clip is not a Meta-World generator clip, or its scene is unknown.

    """
    meta = record.meta
    if record.source != "metaworld" or "seed" not in meta:
        raise ValueError(f"clip {record.id!r} is not a Meta-World generator clip")
    scene_id = meta.get("start_of") or meta["scene_id"]
    scene_name = scene_id.rsplit("-", 1)[0]
    scenes = {scene.name: scene for scene in load_tasks()[0]}
    if scene_name not in scenes:
        raise ValueError(f"clip {record.id!r}: unknown scene {scene_name!r}")
    return scenes[scene_name]


def replay_clip(
    record: ClipRecord,
    root: str | Path,
    frames: Sequence[int] | None,
    at_frame: Callable[[Any], T],
) -> list[T]:
    """Re-simulate a Meta-World clip and call ``at_frame(env)`` at each of its frames asked.

    Each frame is rendered and checked against the stored one first, so ``at_frame`` finds the
    env (the generator's task env: ``env.env`` the Meta-World env, ``env.view`` its renderer)
    in exactly the state of that frame. Call it in a rendering process (EGL).

    Args:
        record: A clip written by ``showme-data metaworld``.
        root: The manifest's folder.
        frames: Indices of the frames (negative ones count from the end); every frame if None.
        at_frame: What to compute at each frame.

    Raises:
        ValueError: The clip is not a Meta-World generator clip, or does not re-simulate
            exactly.

    """
    meta = record.meta
    scene = metaworld_scene(record)
    stored = np.load(record.resolve(Path(root)))
    images, steps = stored["frames"], stored["steps"]
    indices = range(len(steps)) if frames is None else [range(len(steps))[i] for i in frames]
    size = int(meta.get("size", images.shape[1]))
    if size not in _GENERATORS:
        _GENERATORS[size] = Generator(Path(root), size, len(steps))
    job = Job(0, scene, int(meta["seed"]), record.split)
    env, states = _GENERATORS[size].replay(job, meta["task"])
    results = []
    for index in indices:
        rgb, _ = env.render(states[0 if meta["task"] == NOOP_TASK else int(steps[index])])
        if not np.array_equal(rgb, images[index]):
            raise ValueError(f"clip {record.id!r}: frame {index} does not re-simulate exactly")
        results.append(at_frame(env))
    return results


def off_arm_mask(masks: np.ndarray) -> np.ndarray:
    """Pixels that the arm covers in none of the frames: ``(T, H, W)`` masks -> ``(H, W)``."""
    if masks.ndim != 3 or masks.dtype != bool:
        raise ValueError(f"expected (T, H, W) boolean masks, got {masks.dtype} {masks.shape}")
    return ~masks.any(axis=0)


def masked_psnr(
    prediction: np.ndarray, target: np.ndarray, mask: np.ndarray, data_range: float = 255.0
) -> float:
    """PSNR in dB over the pixels where ``mask`` is true (``(H, W, C)`` images, ``(H, W)`` mask)."""
    if prediction.shape != target.shape or prediction.shape[:2] != mask.shape:
        raise ValueError(
            f"shapes differ: prediction {prediction.shape}, target {target.shape}, "
            f"mask {mask.shape}"
        )
    if not mask.any():
        raise ValueError("the mask selects no pixel")
    error = prediction.astype(np.float64)[mask] - target.astype(np.float64)[mask]
    mse = float(np.mean(error**2))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)

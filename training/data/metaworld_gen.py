"""Meta-World clips: scripted experts carry out instructions; the simulator renders them.

Each scene (``metaworld_tasks.json``) holds one task or two opposite ones. For two, both
episodes start from the same state, halfway between the two tasks' usual starts (a half-open
drawer, a mug between its two places), so only the instruction decides the outcome. An expert
first runs without rendering while every state is kept; then only the frames kept for the clip
are rendered, in colour and depth, from a fixed free camera.

A clip is a compressed ``.npz``: ``frames`` ``(T, H, W, 3)`` uint8 RGB, ``depth`` ``(T, H, W)``
float16 metres, ``steps`` ``(T,)`` the simulator step of each frame. Frames are spread evenly
from the start to the end of the episode, so the last frame is the true final state (the
expert runs a few steps past success so that the gripper uncovers the result).

A scene layout can also give a no-op clip (task ``noop``, a "do nothing" phrasing): the
scene's first frame repeated, so that a model learns that doing nothing keeps the scene.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.data.manifest import SPLITS, ClipRecord, format_counts

TASKS_FILE = Path(__file__).with_name("metaworld_tasks.json")
MAX_STEPS = 400
NOOP_TASK = "noop"
NOOP_STREAM = 7  # extra key of the generator that decides which layouts get a no-op clip
CAMERA = {"lookat": (0.1, 0.75, 0.1), "distance": 1.0, "azimuth": 180.0, "elevation": -30.0}


@dataclass(frozen=True)
class Scene:
    """A scene: its tasks (one, or two opposite ones) and how the layout is shared."""

    name: str
    tasks: tuple[str, ...]
    rand_vec: str


def load_tasks(path: Path = TASKS_FILE) -> tuple[list[Scene], dict[str, dict[str, list[str]]]]:
    """Return the scenes and the phrasings (``task -> {"train": [...], "eval": [...]}``)."""
    data = json.loads(path.read_text())
    scenes = [Scene(s["name"], tuple(s["tasks"]), s["rand_vec"]) for s in data["scenes"]]
    return scenes, data["phrasings"]


def split_for_seed(seed: int) -> str:
    """Deterministic split of a layout seed: 1 in 20 val, 1 in 20 test, the rest train."""
    bucket = (seed * 2654435761) % (2**32) % 20
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


def _policy(task: str) -> Any:
    import metaworld.policies as policies

    words = task.removesuffix("-v3").split("-")
    return getattr(policies, "Sawyer" + "".join(w.capitalize() for w in words) + "V3Policy")()


class _TaskEnv:
    """One Meta-World env with its expert and its own renderer, kept alive for the process."""

    def __init__(self, task: str, size: int) -> None:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        env = ALL_V3_ENVIRONMENTS[task]()
        env._partially_observable = False
        # The cached observation space clips the goal to zero when fully observable.
        env.__dict__.pop("sawyer_observation_space", None)
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env._set_task_called = True
        env.max_path_length = 10**6
        self.env, self.policy = env, _policy(task)
        self.view = _View(env.model, size)

    def reset(self, seed: int, rand_vec: np.ndarray | None = None) -> None:
        """Reset to the layout of ``seed``, or to the given layout vector."""
        env = self.env
        env.seed(seed)
        env._freeze_rand_vec = rand_vec is not None
        if rand_vec is not None:
            env._last_rand_vec = rand_vec.copy()
        env.reset()

    def set_start(self, qpos: np.ndarray, body_pos: np.ndarray) -> None:
        """Place the scene in a given state and layout."""
        env = self.env
        env.model.body_pos[:] = body_pos
        env.set_state(qpos, np.zeros_like(env.data.qvel))
        env._prev_obs = env._get_curr_obs_combined_no_goal()

    def rollout(self) -> tuple[list[np.ndarray], int] | None:
        """Run the expert to success plus a few steps; return every qpos and the success step."""
        env = self.env
        obs = env._get_obs()
        states = [env.data.qpos.copy()]
        success_step = None
        for step in range(1, MAX_STEPS + 1):
            obs, _, _, _, info = env.step(np.clip(self.policy.get_action(obs), -1.0, 1.0))
            states.append(env.data.qpos.copy())
            if success_step is None and info["success"]:
                success_step = step
            if success_step is not None and step >= success_step + max(5, success_step // 5):
                return states, success_step
        return None

    def render(self, qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Render colour and depth of one state."""
        import mujoco

        self.env.data.qpos[:] = qpos
        mujoco.mj_forward(self.env.model, self.env.data)
        return self.view.render(self.env.data)


_GL_CONTEXT: Any = None


class _View:
    """Colour and depth from one render pass, through MuJoCo's low-level rendering API.

    All views of a process share one OpenGL context (each model has its own ``MjrContext``):
    creating a context per env is slow with software GL, and freeing one makes the others
    render black.
    """

    def __init__(self, model: Any, size: int) -> None:
        import mujoco

        global _GL_CONTEXT
        if _GL_CONTEXT is None:
            _GL_CONTEXT = mujoco.GLContext(size, size)
        _GL_CONTEXT.make_current()
        model.vis.quality.offsamples = 0
        model.vis.quality.shadowsize = 0
        self.model, self.size = model, size
        self.scene = mujoco.MjvScene(model, maxgeom=2000)
        for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX"):
            self.scene.flags[getattr(mujoco.mjtRndFlag, flag)] = 0
        self.context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_50)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self.context)
        self.rect = mujoco.MjrRect(0, 0, size, size)
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self.camera.lookat[:] = CAMERA["lookat"]
        self.camera.distance = CAMERA["distance"]
        self.camera.azimuth = CAMERA["azimuth"]
        self.camera.elevation = CAMERA["elevation"]
        self.option = mujoco.MjvOption()
        self.option.sitegroup[:] = 0  # goal markers are not part of the scene
        extent = model.stat.extent
        self.near = np.float64(model.vis.map.znear * extent)
        self.far = np.float64(model.vis.map.zfar * extent)

    def _draw(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """Render the scene; return the colour and depth buffers as read (rows bottom-up)."""
        import mujoco

        _GL_CONTEXT.make_current()
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self.context)
        mujoco.mjv_updateScene(
            self.model,
            data,
            self.option,
            None,
            self.camera,
            mujoco.mjtCatBit.mjCAT_ALL,
            self.scene,
        )
        mujoco.mjr_render(self.rect, self.scene, self.context)
        rgb = np.empty((self.size, self.size, 3), np.uint8)
        buffer = np.empty((self.size, self.size), np.float32)
        mujoco.mjr_readPixels(rgb, buffer, self.rect, self.context)
        return rgb, buffer

    def render(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(H, W, 3)`` uint8 colour and ``(H, W)`` float16 depth in metres."""
        rgb, buffer = self._draw(data)
        # Depth buffer (0 at the near plane, 1 at the far plane) to metres.
        near, far = self.near, self.far
        depth = near * far / (far - buffer.astype(np.float64) * (far - near))
        return np.flipud(rgb).copy(), np.flipud(depth).astype(np.float16)

    def segment(self, data: Any) -> np.ndarray:
        """Return the ``(H, W)`` body id seen at each pixel (-1: background), same camera."""
        import mujoco

        flags = (mujoco.mjtRndFlag.mjRND_SEGMENT, mujoco.mjtRndFlag.mjRND_IDCOLOR)
        for flag in flags:
            self.scene.flags[flag] = 1
        try:
            rgb, _ = self._draw(data)
        finally:
            for flag in flags:
                self.scene.flags[flag] = 0
        rgb = rgb.astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        geom_body = np.full(self.scene.ngeom + 1, -1, np.int64)  # id i is scene geom i - 1
        for index in range(self.scene.ngeom):
            geom = self.scene.geoms[index]
            if geom.objtype == mujoco.mjtObj.mjOBJ_GEOM:
                geom_body[index + 1] = self.model.geom_bodyid[geom.objid]
        return np.flipud(geom_body[ids]).copy()


@dataclass(frozen=True)
class Job:
    """One scene layout to generate, and the split its clips go to."""

    index: int
    scene: Scene
    seed: int
    split: str
    noop: bool = False  # also write a no-op clip of this layout


def wants_noop(seed: int, scene: Scene, fraction: float) -> bool:
    """Whether a scene layout gets a no-op clip: a fixed draw per (seed, scene)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"the no-op fraction must lie in [0, 1], got {fraction}")
    draw = np.random.default_rng([seed, zlib.crc32(scene.name.encode()), NOOP_STREAM]).random()
    return bool(draw < fraction)


class Generator:
    """Per-process generator: envs are created once and kept alive.

    Freeing an env releases whichever EGL context is current, after which other envs in the
    process render black frames; keeping every env for the life of the process avoids that.
    """

    def __init__(self, out: Path, size: int, frames: int) -> None:
        self.out, self.size, self.frames = out, size, frames
        self.envs: dict[str, _TaskEnv] = {}
        _, self.phrasings = load_tasks()

    def task_env(self, task: str) -> _TaskEnv:
        """Return the task's environment, made on first use and reused after."""
        if task not in self.envs:
            self.envs[task] = _TaskEnv(task, self.size)
        return self.envs[task]

    def shared_start(self, job: Job) -> tuple[np.ndarray, np.ndarray]:
        """Return the start state (``qpos``, ``body_pos``) that a scene's tasks share at a layout.

        A two-task scene starts halfway between the two tasks' own starts (object positions
        drawn once, swapped for the second task when the scene says so).
        """
        first = self.task_env(job.scene.tasks[0])
        first.reset(job.seed)
        qpos, body_pos = first.env.data.qpos.copy(), first.env.model.body_pos.copy()
        if len(job.scene.tasks) == 1:
            return qpos, body_pos
        rand_vec = first.env._last_rand_vec
        if job.scene.rand_vec == "swap":
            half = len(rand_vec) // 2
            rand_vec = np.concatenate([rand_vec[half:], rand_vec[:half]])
        second = self.task_env(job.scene.tasks[1])
        second.reset(job.seed, rand_vec)
        return (qpos + second.env.data.qpos) / 2, body_pos

    def replay(self, job: Job, task: str) -> tuple[_TaskEnv, list[np.ndarray]]:
        """Re-simulate one task's episode of a scene layout: its env and every state.

        The episode is the one :meth:`run` renders (same start, same expert); a no-op clip's
        only state is the start.
        """
        qpos, body_pos = self.shared_start(job)
        env = self.task_env(job.scene.tasks[0] if task == NOOP_TASK else task)
        env.set_start(qpos, body_pos)
        if task == NOOP_TASK:
            return env, [qpos]
        result = env.rollout()
        if result is None:
            raise RuntimeError(f"the {task} expert failed at layout seed {job.seed}")
        return env, result[0]

    def run(self, job: Job) -> tuple[list[ClipRecord], str | None]:
        """Generate the clips of one scene; return them, or none and the reason for failure."""
        qpos, body_pos = self.shared_start(job)
        split = job.split
        rng = np.random.default_rng([job.seed, job.index])
        scene_id = f"{job.scene.name}-{job.seed:06d}"
        clips = []
        for task in job.scene.tasks:
            env = self.task_env(task)
            env.set_start(qpos, body_pos)
            result = env.rollout()
            if result is None:
                return [], "expert_failed"
            states, success_step = result
            steps = np.rint(np.linspace(0, len(states) - 1, self.frames)).astype(int)
            rendered = [env.render(states[s]) for s in steps]
            clips.append((task, steps, success_step, rendered))
        first_frames = [c[3][0][0] for c in clips]
        if any(not np.array_equal(first_frames[0], f) for f in first_frames[1:]):
            return [], "start_mismatch"
        if job.noop:
            start = clips[0][3][0]
            clips.append((NOOP_TASK, np.zeros(self.frames, int), 0, [start] * self.frames))
        records = []
        for task, steps, success_step, rendered in clips:
            pool = self.phrasings[task]["train" if split == "train" else "eval"]
            rel = Path("clips") / split / f"{scene_id}_{task.removesuffix('-v3')}.npz"
            (self.out / rel).parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(
                self.out / rel,
                frames=np.stack([r[0] for r in rendered]),
                depth=np.stack([r[1] for r in rendered]),
                steps=steps,
            )
            instruction = str(pool[int(rng.integers(len(pool)))])
            others = [t for t in job.scene.tasks if t != task] if task != NOOP_TASK else []
            meta = {
                "task": task,
                # A no-op clip keeps the scene's start but is no outcome of its tasks.
                "scene_id": None if task == NOOP_TASK else scene_id,
                "start_of": scene_id,
                "seed": job.seed,
                "opposite": others[0] if others else None,
                "success_step": success_step,
                "final_step": int(steps[-1]),
                "phrasing_set": "train" if split == "train" else "eval",
                "size": self.size,
            }
            records.append(
                ClipRecord(
                    id=rel.stem,
                    path=str(rel),
                    instruction=instruction,
                    split=split,
                    source="metaworld",
                    meta=meta,
                    alternatives=[p for p in pool if p != instruction],
                )
            )
        return records, None


_WORKER: Generator | None = None


def _init_worker(out: str, size: int, frames: int) -> None:
    global _WORKER
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("LP_NUM_THREADS", "1")  # one software-GL thread per worker process
    _WORKER = Generator(Path(out), size, frames)


def _run_job(job: Job) -> tuple[int, list[ClipRecord], str | None]:
    assert _WORKER is not None
    try:
        records, failure = _WORKER.run(job)
    except Exception as err:  # a broken scene is counted, never fatal
        records, failure = [], f"error: {type(err).__name__}"
    return job.index, records, failure


@dataclass
class GenerationSummary:
    """What a generation run produced and what it skipped."""

    clips: int
    scenes: int
    noop_clips: int
    splits: dict[str, int]
    failures: dict[str, int]
    seconds: float

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        splits = format_counts(self.splits)
        failures = format_counts(self.failures)
        return [
            f"clips written: {self.clips} from {self.scenes} scenes in {self.seconds:.1f} s"
            f" ({self.noop_clips} of them no-op clips)",
            f"splits: {splits}",
            f"scenes skipped: {failures}",
        ]


def layout_jobs(
    layout_seeds: Sequence[int], split: str | None = None, noop_fraction: float = 0.0
) -> list[Job]:
    """Every scene of ``metaworld_tasks.json`` at each layout seed, in the order given.

    ``split`` puts every clip in that split (so held-out layouts get evaluation-only
    phrasings); ``None`` splits by seed (:func:`split_for_seed`). About ``noop_fraction`` of
    the scene layouts also give a no-op clip (:func:`wants_noop`).
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if len(set(layout_seeds)) != len(layout_seeds):
        raise ValueError("layout seeds repeat")
    if any(seed < 0 for seed in layout_seeds):
        raise ValueError("layout seeds must be non-negative")
    scenes, _ = load_tasks()
    return [
        Job(i, scene, seed, split or split_for_seed(seed), wants_noop(seed, scene, noop_fraction))
        for i, (seed, scene) in enumerate((s, c) for s in layout_seeds for c in scenes)
    ]


def generate(
    out: Path,
    clips: int | None,
    size: int = 64,
    frames: int = 16,
    workers: int | None = None,
    base_seed: int = 0,
    progress: bool = True,
    layout_seeds: Sequence[int] | None = None,
    split: str | None = None,
    noop_fraction: float = 0.0,
) -> GenerationSummary:
    """Generate clips into ``out`` and write ``out/manifest.jsonl``.

    Without ``layout_seeds``, at least ``clips`` clips: scenes cycle through
    ``metaworld_tasks.json`` and scene ``j`` uses layout seed ``base_seed + j // len(scenes)``.
    With ``layout_seeds``, every scene at each of those seeds (at most ``clips`` clips when it
    is given). ``split`` puts every clip in that split; ``None`` splits by seed. About
    ``noop_fraction`` of the scene layouts also give a no-op clip (counted in ``clips``; task
    ``noop``, ``scene_id`` null so that swap metrics leave it out). The output
    depends only on the arguments, not on the number of workers. A paired scene gives two
    clips; a scene whose expert fails is skipped and counted.
    """
    import multiprocessing as mp
    import time
    from collections import Counter

    from tqdm import tqdm

    from training.data.manifest import write_manifest

    if layout_seeds is None and (clips is None or base_seed < 0):
        raise ValueError("give a number of clips from base_seed >= 0, or a list of layout seeds")
    if (clips is not None and clips < 1) or size < 16 or frames < 2:
        raise ValueError("need clips >= 1, size >= 16 and frames >= 2")
    fixed_jobs = None if layout_seeds is None else layout_jobs(layout_seeds, split, noop_fraction)
    if fixed_jobs == []:
        raise ValueError("the list of layout seeds is empty")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    os.environ.setdefault("MUJOCO_GL", "egl")
    scenes, _ = load_tasks()
    workers = workers or os.cpu_count() or 1
    target = clips if clips is not None else float("inf")
    start = time.perf_counter()
    results: dict[int, list[ClipRecord]] = {}
    failures: Counter[str] = Counter()
    made, next_index = 0, 0
    total = (
        clips if fixed_jobs is None else sum(len(job.scene.tasks) + job.noop for job in fixed_jobs)
    )
    bar = tqdm(total=min(total, target), unit="clip", disable=not progress, desc="metaworld")
    context = mp.get_context("spawn")
    with context.Pool(workers, _init_worker, (str(out), size, frames)) as pool:

        def run(jobs: list[Job]) -> None:
            nonlocal made
            # Grouping a scene's jobs keeps each worker on few scenes: fewer envs to build.
            jobs = sorted(jobs, key=lambda job: (job.index % len(scenes), job.index))
            chunk = max(1, min(8, len(jobs) // (4 * workers)))
            for index, records, failure in pool.imap_unordered(_run_job, jobs, chunk):
                results[index] = records
                if failure:
                    failures[failure] += 1
                made += len(records)
                bar.update(min(len(records), max(0, bar.total - bar.n)))

        if fixed_jobs is not None:
            run(fixed_jobs)
        while fixed_jobs is None and made < target:
            per_scene = sum(len(s.tasks) for s in scenes) / len(scenes)
            count = max(workers, int((target - made) / per_scene * 1.05) + 1)
            seeds = [base_seed + j // len(scenes) for j in range(next_index, next_index + count)]
            run(
                [
                    Job(
                        j,
                        scenes[j % len(scenes)],
                        seed,
                        split or split_for_seed(seed),
                        wants_noop(seed, scenes[j % len(scenes)], noop_fraction),
                    )
                    for j, seed in enumerate(seeds, start=next_index)
                ]
            )
            next_index += count
    bar.close()
    kept: list[ClipRecord] = []
    for index in sorted(results):
        if len(kept) >= target:
            for record in results[index]:
                (out / record.path).unlink(missing_ok=True)
            continue
        kept.extend(results[index])
    write_manifest(out / "manifest.jsonl", kept)
    summary = GenerationSummary(
        clips=len(kept),
        scenes=len({r.meta["start_of"] for r in kept}),
        noop_clips=sum(r.meta["task"] == NOOP_TASK for r in kept),
        splits=dict(Counter(r.split for r in kept)),
        failures=dict(failures),
        seconds=time.perf_counter() - start,
    )
    (out / "summary.json").write_text(json.dumps(summary.__dict__, indent=2))
    return summary

"""The simulated world behind ``sim_robot_node``: Meta-World scenes, expert skills and a camera.

A scene is one of the training data's scenes (``training/data/metaworld_tasks.json``): a shared
start state for two opposite tasks (drawer open/close, window, faucet, door lock/unlock, door,
handle, side handle, coffee push/pull) or one task (button, lever). Reset to a layout seed puts
the scene in exactly the start state the clip generator uses for that seed. A skill is a task's
scripted expert policy (``metaworld.policies``) run until Meta-World's own ``info["success"]``
holds, plus the generator's few extra steps that move the gripper off the result; the skill
``do-nothing`` runs no step. The camera is the generator's free camera, rendered at a camera's
resolution and aspect ratio (the world-model node crops and resizes).

No ROS here: the node wraps this class, and benchmarks use a second instance as a look-ahead
copy of the true simulator.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.data.metaworld_gen import CAMERA, MAX_STEPS, Generator, Scene, load_tasks

NOOP_SKILL = "do-nothing"
# An object joint that moved less than this (metres or radians) counts as unchanged.
UNCHANGED_TOLERANCE = 1e-3
# Step callback: (steps done, info["success"] so far) -> keep going.
StepCallback = Callable[[int, bool], bool]


@dataclass(frozen=True)
class _Layout:
    """A scene at a layout seed: the two fields the generator's shared start reads of a job."""

    scene: Scene
    seed: int


@dataclass(frozen=True)
class Skill:
    """A skill the robot offers: its name, the Meta-World task and the instruction text."""

    name: str
    task: str
    instruction: str


@dataclass(frozen=True)
class SkillOutcome:
    """How one skill ended.

    ``success`` is Meta-World's ``info["success"]`` of the skill's task, reached at some step (a
    Meta-World episode's success); ``achieved`` names every skill of the scene whose success
    criterion held at some step (for ``do-nothing``: in the current state).
    """

    skill: str
    success: bool
    steps: int
    achieved: tuple[str, ...]
    cancelled: bool = False


def skill_name(task: str) -> str:
    """Skill name of a Meta-World task: ``drawer-open-v3`` -> ``drawer-open``."""
    return task.removesuffix("-v3")


def scene_names() -> list[str]:
    """Names of the scenes the simulator offers, in the data's order."""
    return [scene.name for scene in load_tasks()[0]]


class CameraView:
    """The generator's free camera at ``width`` x ``height``, rendered offscreen in RGB.

    One OpenGL context serves every view of a process (software GL makes contexts slow to
    create, and freeing one makes others render black); each model gets its own ``MjrContext``.
    """

    _context: Any = None

    def __init__(self, model: Any, width: int, height: int) -> None:
        import mujoco

        offscreen = model.vis.global_
        if width > offscreen.offwidth or height > offscreen.offheight:
            offscreen.offwidth, offscreen.offheight = max(width, 640), max(height, 480)
        if CameraView._context is None:
            CameraView._context = mujoco.GLContext(width, height)
        CameraView._context.make_current()
        model.vis.quality.offsamples = 0
        model.vis.quality.shadowsize = 0
        self.model, self.width, self.height = model, width, height
        self.scene = mujoco.MjvScene(model, maxgeom=2000)
        for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX"):
            self.scene.flags[getattr(mujoco.mjtRndFlag, flag)] = 0
        self.context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_50)
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self.camera.lookat[:] = CAMERA["lookat"]
        self.camera.distance = CAMERA["distance"]
        self.camera.azimuth = CAMERA["azimuth"]
        self.camera.elevation = CAMERA["elevation"]
        self.option = mujoco.MjvOption()
        self.option.sitegroup[:] = 0  # goal markers are not part of the scene
        self.rect = mujoco.MjrRect(0, 0, width, height)

    def render(self, data: Any) -> np.ndarray:
        """Return the ``(height, width, 3)`` uint8 RGB view of ``data``."""
        import mujoco

        CameraView._context.make_current()
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self.context)
        mujoco.mjv_updateScene(
            self.model, data, self.option, None, self.camera, mujoco.mjtCatBit.mjCAT_ALL, self.scene
        )
        mujoco.mjr_render(self.rect, self.scene, self.context)
        rgb = np.empty((self.height, self.width, 3), np.uint8)
        mujoco.mjr_readPixels(rgb, None, self.rect, self.context)
        return np.flipud(rgb).copy()


def _object_qpos(model: Any) -> np.ndarray:
    """Return the ``qpos`` indices of the joints outside the Sawyer arm and gripper."""
    import mujoco

    base = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "right_arm_base_link")

    def on_arm(body: int) -> bool:
        while body > 0:
            if body == base:
                return True
            body = int(model.body_parentid[body])
        return False

    indices: list[int] = []
    widths = {0: 7, 1: 4, 2: 1, 3: 1}  # free, ball, slide, hinge
    for joint in range(model.njnt):
        if not on_arm(int(model.jnt_bodyid[joint])):
            start = int(model.jnt_qposadr[joint])
            indices.extend(range(start, start + widths[int(model.jnt_type[joint])]))
    return np.asarray(indices, dtype=int)


def _criterion(env: Any) -> bool:
    """Meta-World's ``info["success"]`` of ``env``'s task for the env's current state."""
    _, info = env.evaluate_state(env._get_obs(), np.zeros(env.action_space.shape))
    return bool(info["success"])


class SimWorld:
    """Meta-World scenes reset to layout seeds, with expert skills and a camera view.

    Each task of a scene is its own Meta-World env (its own goal and expert); the state of the
    scene lives in the env of the task that ran last and is copied to another task's env before
    that task runs or is checked.
    """

    def __init__(self, width: int, height: int) -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")
        scenes, phrasings = load_tasks()
        self.scenes: dict[str, Scene] = {scene.name: scene for scene in scenes}
        self._phrasings = phrasings
        # The generator's env cache: its envs are configured and reset exactly as for the data.
        self._generator = Generator(Path(os.devnull), size=16, frames=2)
        self._views: dict[str, CameraView] = {}
        self.width, self.height = width, height
        self.scene: Scene | None = None
        self.layout_seed = -1
        self._active = ""
        self._start_qpos = np.zeros(0)
        self._reset_mocap: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._at_start = False
        self._body_pos = np.zeros(0)

    # Scene -----------------------------------------------------------------------------------

    def reset(self, scene: str, layout_seed: int) -> list[Skill]:
        """Put ``scene`` in the start state of ``layout_seed``; return the scene's skills.

        Raises:
            ValueError: Unknown scene or a negative seed.

        """
        if scene not in self.scenes:
            raise ValueError(f"unknown scene {scene!r}; scenes: {', '.join(self.scenes)}")
        if layout_seed < 0:
            raise ValueError(f"layout seed must be >= 0, got {layout_seed}")
        chosen = self.scenes[scene]
        qpos, body_pos = self._generator.shared_start(_Layout(chosen, layout_seed))
        self.scene, self.layout_seed = chosen, layout_seed
        self._start_qpos, self._body_pos = qpos.copy(), body_pos.copy()
        # Each task's env keeps the hand target its own reset gave it: from the start state a
        # skill runs exactly as the clip generator ran it; after a skill, the target moves on.
        self._reset_mocap = {
            task: (env.data.mocap_pos.copy(), env.data.mocap_quat.copy())
            for task in chosen.tasks
            for env in [self._env(task).env]
        }
        self._activate(chosen.tasks[0], qpos, self._reset_mocap[chosen.tasks[0]])
        self._at_start = True
        return self.skills()

    def skills(self) -> list[Skill]:
        """Skills of the current scene, in the data's task order (``do-nothing`` not included)."""
        scene = self._require_scene()
        return [
            Skill(skill_name(task), task, self._phrasings[task]["train"][0]) for task in scene.tasks
        ]

    def skill(self, name: str) -> Skill:
        """Return the current scene's skill called ``name``.

        Raises:
            ValueError: The scene has no such skill.

        """
        for skill in self.skills():
            if skill.name == name:
                return skill
        names = ", ".join([s.name for s in self.skills()] + [NOOP_SKILL])
        raise ValueError(f"scene {self.scene.name!r} has no skill {name!r}; skills: {names}")

    def _require_scene(self) -> Scene:
        if self.scene is None:
            raise ValueError("no scene yet: reset the simulator to a scene and layout seed first")
        return self.scene

    # State -----------------------------------------------------------------------------------

    def _env(self, task: str) -> Any:
        return self._generator.task_env(task)

    def _activate(self, task: str, qpos: np.ndarray, mocap: tuple[np.ndarray, ...]) -> None:
        """Make ``task``'s env hold the scene: joints at ``qpos`` at rest, hand target ``mocap``.

        The arm follows a mocap target (Meta-World's position control), which is not part of
        ``qpos``: it moves with the state, or the next skill would start by pulling the hand
        back to where that env's target was left.
        """
        env = self._env(task)
        env.set_start(qpos, self._body_pos)
        env.env.data.mocap_pos[:], env.env.data.mocap_quat[:] = mocap
        self._active = task

    def _mocap(self) -> tuple[np.ndarray, np.ndarray]:
        data = self._env(self._active).env.data
        return data.mocap_pos.copy(), data.mocap_quat.copy()

    def qpos(self) -> np.ndarray:
        """Joint positions of the scene now."""
        self._require_scene()
        return self._env(self._active).env.data.qpos.copy()

    def restore_start(self) -> None:
        """Put the current scene back in its start state, without a new reset."""
        self._require_scene()
        task = self.scene.tasks[0]
        self._activate(task, self._start_qpos, self._reset_mocap[task])
        self._at_start = True

    def task_success(self, task: str) -> bool:
        """Whether Meta-World's success criterion of ``task`` holds in the current state."""
        scene = self._require_scene()
        if task not in scene.tasks:
            raise ValueError(f"task {task!r} is not part of scene {scene.name!r}")
        if task == self._active:
            env = self._env(task).env
            return _criterion(env)
        # Another task's env only evaluates: the scene's state stays in the active env.
        self._env(task).set_start(self.qpos(), self._body_pos)
        return _criterion(self._env(task).env)

    def achieved(self) -> tuple[str, ...]:
        """Skills of the scene whose success criterion holds in the current state."""
        return tuple(s.name for s in self.skills() if self.task_success(s.task))

    def unchanged(self) -> bool:
        """Whether every object of the scene is where the reset put it (the arm may have moved)."""
        self._require_scene()
        indices = _object_qpos(self._env(self._active).env.model)
        moved = np.abs(self.qpos()[indices] - self._start_qpos[indices])
        return bool(moved.size == 0 or moved.max() <= UNCHANGED_TOLERANCE)

    # Skills ----------------------------------------------------------------------------------

    def execute(
        self, name: str, max_steps: int = MAX_STEPS, on_step: StepCallback | None = None
    ) -> SkillOutcome:
        """Run skill ``name`` (or ``do-nothing``) from the current state.

        The expert runs until ``info["success"]`` and then ``max(5, success_step // 5)`` more
        steps, as the clip generator does, or until ``max_steps``. ``on_step`` is called after
        every step; returning False stops the skill (``cancelled``).

        Raises:
            ValueError: No scene, or the scene has no such skill.

        """
        self._require_scene()
        if name == NOOP_SKILL:
            return SkillOutcome(name, True, 0, self.achieved())
        task = self.skill(name).task
        mocap = self._reset_mocap[task] if self._at_start else self._mocap()
        self._activate(task, self.qpos(), mocap)
        self._at_start = False
        wrapper = self._env(task)
        env, policy = wrapper.env, wrapper.policy
        others = [s for s in self.skills() if s.task != task]
        achieved: set[str] = set()
        obs = env._get_obs()
        success_step, cancelled, step = None, False, 0
        for step in range(1, max_steps + 1):
            obs, _, _, _, info = env.step(np.clip(policy.get_action(obs), -1.0, 1.0))
            if success_step is None and info["success"]:
                success_step = step
                achieved.add(name)
            achieved.update(s.name for s in others if self.task_success(s.task))
            if on_step is not None and not on_step(step, success_step is not None):
                cancelled = True
                break
            if success_step is not None and step >= success_step + max(5, success_step // 5):
                break
        ordered = tuple(s.name for s in self.skills() if s.name in achieved)
        return SkillOutcome(name, success_step is not None, step, ordered, cancelled)

    # Camera ----------------------------------------------------------------------------------

    def vertical_fov(self) -> float:
        """Vertical field of view of the camera, in degrees (the scene model's free camera)."""
        self._require_scene()
        return float(self._env(self._active).env.model.vis.global_.fovy)

    def render(self) -> np.ndarray:
        """Render the camera's ``(height, width, 3)`` uint8 RGB view of the current state."""
        self._require_scene()
        if self._active not in self._views:
            self._views[self._active] = CameraView(
                self._env(self._active).env.model, self.width, self.height
            )
        return self._views[self._active].render(self._env(self._active).env.data)

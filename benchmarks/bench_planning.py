"""Closed-loop planning benchmark: does the world model make the simulated robot succeed?

One run starts the closed loop as ``launch/closed_loop.launch.py`` does (three processes: the
simulated robot, the world-model node, the planner; everything through ROS messages) and, on
held-out layouts of every scene, measures:

- decision accuracy and simulator success of the planner with the world model (K = 1 and K = 4
  samples per candidate; PSNR and edge-F1 decisions from the same previews);
- the same for random choice (its expectation over the candidates), for "always the same skill"
  (every candidate is the goal equally often here, so the most frequent skill is a tie and the
  scene's first skill is taken), and for an oracle that runs every candidate in a copy of the
  true simulator and picks the outcome closest to the goal (PSNR): the ceiling;
- latency per decision (the planner's predicting and scoring time);
- two-step goals (skill A then skill B, on scenes whose experts can chain) planned with imagined
  chaining (depth 2), beside depth 1 on one-step goals.

Goals: for each scene, layout and candidate skill (the scene's skills and "do-nothing"), the
camera image after the robot ran that skill from the start state; "do-nothing"'s goal is the
start image. A goal whose expert fails is left out (counted). Success is Meta-World's own
criterion of the goal's task after the executed plan (``achieved`` of execute_skill), and for a
"do-nothing" goal that no object moved. The success of choices that were not executed (the
baselines, the edge-F1 decision) comes from running every candidate once on the robot (the
simulator is deterministic; the executed choices are checked against it).

Layouts: seeds the shipped model never trained on (its training layouts are 0-199): 2040 and
2028, then the first seven of its held-out test layouts (3000-3029, docs/RESULTS.md). Nothing is
tuned on them; the decision metric was chosen on validation layouts.

Command: ``OMP_NUM_THREADS=1 python benchmarks/bench_planning.py`` (writes its section of
docs/BENCHMARKS.md, docs/images/bench_planning.png and the raw records as JSON).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Layouts the shipped model never trained on (it trained on 0-199; 3000-3029 are its test split).
HELD_OUT_SEEDS = (2040, 2028, 3000, 3001, 3002, 3003, 3004, 3005, 3006)
# Camera frames cost CPU time the world model then lacks; the planner needs one fresh frame.
CAMERA_RATE = "10"
# A goal whose answer is lost is planned again, from a new reset.
PLAN_ATTEMPTS, PLAN_TIMEOUT_S = 3, 300.0
MARK_BEGIN = "<!-- bench_planning:begin -->"
MARK_END = "<!-- bench_planning:end -->"


@dataclass
class Decision:
    """One planning goal and what every policy did with it."""

    seed: int
    scene: str
    goal: str  # a skill name, "do-nothing", or "a,b" for a two-step goal
    depth: int
    samples: int
    candidates: list[str]
    psnr: list[float]
    edge_f1: list[float]
    choice_psnr: str
    choice_edges: str
    executed: str
    success_executed: bool
    success: dict[str, float] = field(default_factory=dict)  # policy -> success (expected)
    correct: dict[str, float] = field(default_factory=dict)  # policy -> decision accuracy
    latency: float = 0.0
    consistent: bool = True


class ClosedLoop:
    """The three nodes started as the closed-loop launch file starts them, and clients."""

    def __init__(self, logs: Path, device: str, metric: str) -> None:
        from showme_ros.launch_command import launch_commands

        overrides = {
            "device": device,
            "realtime_factor": "0",
            "camera_rate": CAMERA_RATE,
            "metric": metric,
        }
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.processes = {}
        for name, command in launch_commands("closed_loop.launch.py", overrides).items():
            print("starting:", " ".join(command[1:]), flush=True)
            log = (logs / f"{name}.log").open("w")
            self.processes[name] = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def clients(self) -> tuple[object, object, object]:
        """Robot, planner and world-model clients, once every node is up."""
        from showme_ros.client import ShowMeClient
        from showme_ros.loop_clients import PlannerClient, RobotClient

        world_model = ShowMeClient("bench_world_model")
        if not world_model.wait_until_active(600):
            raise RuntimeError("the world-model node did not become active")
        planner = PlannerClient("bench_planner")
        if not planner.wait_for_server(120):
            raise RuntimeError("the planner did not come up")
        robot = RobotClient("bench_robot")
        if not robot.wait_until_ready(120):
            raise RuntimeError("the simulated robot did not become active")
        return robot, planner, world_model

    def stop(self) -> None:
        """Stop every node with SIGINT (as ros2 launch does)."""
        for process in self.processes.values():
            process.send_signal(2)
        for process in self.processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def goal_success(goal: str, achieved: list[str], unchanged: bool) -> bool:
    """Whether an outcome meets a goal: its last task achieved, or nothing moved for do-nothing."""
    from showme_ros.sim_world import NOOP_SKILL

    last = goal.split(",")[-1]
    return unchanged if last == NOOP_SKILL else last in achieved


def run_candidates(robot: object, scene: str, seed: int, plans: list[tuple[str, ...]]) -> dict:
    """Run every plan on the robot from the start state: final image, achieved, unchanged."""
    from showme_ros.client import succeeded
    from showme_ros.image_conversion import image_to_rgb

    results = {}
    for plan in plans:
        robot.reset(scene, seed)
        ok, last = True, None
        for skill in plan:
            status, last = robot.execute(skill)
            ok = ok and succeeded(status) and last.success
        state = robot.scene()
        results[plan] = {
            "image": image_to_rgb(last.final_image),
            "expert_ok": ok,
            "achieved": list(last.achieved),
            "unchanged": state.unchanged,
        }
    return results


def oracle_choice(world: object, scene: str, seed: int, plans: list, goal: np.ndarray) -> tuple:
    """Run each plan in a copy of the simulator; return the one whose outcome is closest (PSNR).

    Outcome and goal are compared as the planner compares previews (planning.compare_size).
    """
    from showme_ros.planning import score

    best, best_score = None, -np.inf
    for plan in plans:
        world.reset(scene, seed)
        for skill in plan:
            world.execute(skill)
        pixel, _ = score([world.render()], goal)
        if pixel > best_score:
            best, best_score = plan, pixel
    return best


def plan_goal(
    planner: object,
    robot: object,
    scene: str,
    seed: int,
    goal_image: np.ndarray,
    depth: int,
    samples: int,
) -> tuple[object, object]:
    """Reset, plan and execute one goal; returns the result and the robot's scene afterwards."""
    from showme_ros.action import PlanAndExecute
    from showme_ros.client import succeeded
    from showme_ros.image_conversion import rgb_to_image

    robot.reset(scene, seed)
    goal = PlanAndExecute.Goal(
        goal_image=rgb_to_image(goal_image), depth=depth, samples=samples, execute=True, seed=1
    )
    for attempt in range(1, PLAN_ATTEMPTS + 1):
        try:
            status, result = planner.plan(goal, timeout=PLAN_TIMEOUT_S)
            if succeeded(status) and result.success:
                break
            reason = result.message
        except TimeoutError as error:  # an answer lost on a loaded machine
            reason = str(error)
        print(f"planning failed on {scene} seed {seed} (attempt {attempt}): {reason}", flush=True)
        if attempt == PLAN_ATTEMPTS:
            raise RuntimeError(f"planning failed on {scene} seed {seed}: {reason}")
        robot.reset(scene, seed)
    return result, robot.scene()


def evaluate_scene(
    robot, planner, world, scene: str, seed: int, samples: list[int], chain: str
) -> tuple[list[Decision], int]:
    """The goals of one scene and layout; returns the decisions and the goals left out.

    ``chain``: "yes" adds two-step goals, "no" leaves them out, "only" runs nothing else.
    """
    from showme_ros.planning import join, sequences
    from showme_ros.sim_world import NOOP_SKILL

    skills = list(robot.reset(scene, seed).skills)
    options = [*skills, NOOP_SKILL]
    if chain == "only":
        if len(skills) != 2:
            return [], 0
        return evaluate_chains(robot, planner, world, scene, seed, skills, options), 0
    singles = sequences(options, 1)
    outcomes = run_candidates(robot, scene, seed, singles)
    decisions, skipped = [], 0
    first_skill = (skills[0],)
    for goal_plan in singles:
        if not outcomes[goal_plan]["expert_ok"]:
            skipped += 1
            continue
        goal = join(goal_plan)
        image = outcomes[goal_plan]["image"]

        def success_of(plan: tuple, goal: str = goal) -> bool:
            o = outcomes[plan]
            return goal_success(goal, o["achieved"], o["unchanged"])

        oracle = oracle_choice(world, scene, seed, singles, image)
        for k in samples:
            result, state = plan_goal(planner, robot, scene, seed, image, 1, k)
            unchanged = state.unchanged
            executed = tuple(result.plan)
            by_edges = tuple(result.choice_by_edges.split(","))
            success_executed = goal_success(goal, list(result.achieved), unchanged)
            decisions.append(
                Decision(
                    seed,
                    scene,
                    goal,
                    1,
                    k,
                    list(result.candidates),
                    list(result.psnr),
                    list(result.edge_f1),
                    result.choice_by_psnr,
                    result.choice_by_edges,
                    join(executed),
                    success_executed,
                    success={
                        "world_model": float(success_executed),
                        "world_model_edges": float(success_of(by_edges)),
                        "random": float(np.mean([success_of(p) for p in singles])),
                        "first_skill": float(success_of(first_skill)),
                        "oracle": float(success_of(oracle)),
                    },
                    correct={
                        "world_model": float(executed == goal_plan),
                        "world_model_edges": float(by_edges == goal_plan),
                        "random": 1.0 / len(singles),
                        "first_skill": float(first_skill == goal_plan),
                        "oracle": float(oracle == goal_plan),
                    },
                    latency=result.planning_seconds,
                    consistent=success_executed == success_of(executed),
                )
            )
    if chain == "yes" and len(skills) == 2:
        decisions += evaluate_chains(robot, planner, world, scene, seed, skills, options)
    return decisions, skipped


def evaluate_chains(
    robot, planner, world, scene: str, seed: int, skills: list[str], options: list[str]
) -> list[Decision]:
    """Two-step goals (each skill, then the other), planned with imagined chaining (K = 1)."""
    from showme_ros.planning import join, sequences

    doubles = sequences(options, 2)
    goals = [(a, b) for a in skills for b in skills if a != b]
    real = run_candidates(robot, scene, seed, goals)
    decisions = []
    for goal_plan in goals:
        if not real[goal_plan]["expert_ok"]:
            continue
        goal, image = join(goal_plan), real[goal_plan]["image"]
        oracle = oracle_choice(world, scene, seed, doubles, image)
        world.reset(scene, seed)
        for skill in oracle:
            world.execute(skill)
        oracle_success = goal_success(goal, list(world.achieved()), world.unchanged())
        result, state = plan_goal(planner, robot, scene, seed, image, 2, 1)
        executed = tuple(result.plan)
        # After two skills, the goal's criterion must hold at the end (GetScene), not only at
        # some step: the second skill may start from the state the goal names.
        success_executed = goal_success(goal, list(state.achieved), state.unchanged)
        decisions.append(
            Decision(
                seed,
                scene,
                goal,
                2,
                1,
                list(result.candidates),
                list(result.psnr),
                list(result.edge_f1),
                result.choice_by_psnr,
                result.choice_by_edges,
                join(executed),
                success_executed,
                success={"world_model": float(success_executed), "oracle": float(oracle_success)},
                correct={
                    "world_model": float(executed == goal_plan),
                    "random": 1.0 / len(doubles),
                    "oracle": float(oracle == goal_plan),
                },
                latency=result.planning_seconds,
            )
        )
    return decisions


# Summaries -----------------------------------------------------------------------------------


def mean(values: list[float]) -> float:
    """Mean, NaN for no values."""
    return float(np.mean(values)) if values else float("nan")


def opposite_pair_correct(d: Decision) -> bool:
    """Choice between the two opposite skills only, by PSNR (no do-nothing)."""
    pair = [i for i, c in enumerate(d.candidates) if c != "do-nothing"]
    best = max(pair, key=lambda i: d.psnr[i])
    return d.candidates[best] == d.goal


def summary_tables(
    decisions: list[Decision],
    samples: list[int],
    seeds: list[int],
    skipped: int,
    metric: str,
    seconds: float,
) -> str:
    """Markdown: per-scene table, pooled row, opposite-pair accuracy, latency and chaining."""
    one_step = [d for d in decisions if d.depth == 1]
    k_best, k_low = max(samples), min(samples)
    scenes = list(dict.fromkeys(d.scene for d in one_step))
    lines = [
        f"Layouts: {len(seeds)} held-out seeds ({', '.join(map(str, seeds))}); "
        f"{len({(d.seed, d.scene, d.goal) for d in one_step})} one-step goals "
        f"({skipped} left out: expert failed). Decision metric of the executed plan: {metric}. "
        f"Run time {seconds / 60:.1f} min.",
        "",
        f"| scene | goals | WM K={k_low} acc | WM K={k_best} acc | edges K={k_best} acc | "
        f"WM K={k_low} success | WM K={k_best} success | edges K={k_best} success | "
        f"random success | first-skill success | oracle success | WM K={k_best} / oracle | "
        f"WM K={k_best} success, skill goals |",
        "| --- |" + " ---: |" * 12,
    ]

    def row(name: str, subset: list[Decision]) -> str:
        by_k = {k: [d for d in subset if d.samples == k] for k in samples}
        best = by_k[k_best]
        cells = [
            name,
            str(len(best)),
            f"{mean([d.correct['world_model'] for d in by_k[min(samples)]]):.2f}",
            f"{mean([d.correct['world_model'] for d in best]):.2f}",
            f"{mean([d.correct['world_model_edges'] for d in best]):.2f}",
            f"{mean([d.success['world_model'] for d in by_k[min(samples)]]):.2f}",
            f"{mean([d.success['world_model'] for d in best]):.2f}",
            f"{mean([d.success['world_model_edges'] for d in best]):.2f}",
            f"{mean([d.success['random'] for d in best]):.2f}",
            f"{mean([d.success['first_skill'] for d in best]):.2f}",
            f"{mean([d.success['oracle'] for d in best]):.2f}",
        ]
        oracle = mean([d.success["oracle"] for d in best])
        cells.append(f"{mean([d.success['world_model'] for d in best]) / oracle:.2f}")
        skill_goals = [d.success["world_model"] for d in best if d.goal != "do-nothing"]
        cells.append(f"{mean(skill_goals):.2f}")
        return "| " + " | ".join(cells) + " |"

    for scene in scenes:
        lines.append(row(scene, [d for d in one_step if d.scene == scene]))
    lines.append(row("**pooled**", one_step))
    paired = [
        d
        for d in one_step
        if d.samples == k_best
        and d.goal != "do-nothing"
        and sum(c != "do-nothing" for c in d.candidates) == 2
    ]
    noop = [d for d in one_step if d.samples == k_best and d.goal == "do-nothing"]
    skill_vs_noop = [
        d
        for d in one_step
        if d.samples == k_best
        and d.goal != "do-nothing"
        and sum(c != "do-nothing" for c in d.candidates) == 1
    ]
    lines += [
        "",
        f"- Opposite-task pairs, K={k_best}: accuracy "
        f"{mean([d.correct['world_model'] for d in paired]):.2f} among the pair and do-nothing, "
        f"{mean([float(opposite_pair_correct(d)) for d in paired]):.2f} between the two "
        f"opposite skills only ({len(paired)} goals).",
        f"- Do-nothing goals, K={k_best}: accuracy "
        f"{mean([d.correct['world_model'] for d in noop]):.2f} ({len(noop)} goals); button/lever "
        "skill goals against do-nothing: "
        f"{mean([d.correct['world_model'] for d in skill_vs_noop]):.2f} "
        f"({len(skill_vs_noop)} goals).",
    ]
    for k in samples:
        times = [d.latency for d in one_step if d.samples == k]
        lines.append(
            f"- Latency per decision, K={k}: median {np.median(times):.2f} s, "
            f"p90 {np.percentile(times, 90):.2f} s ({len(times)} decisions; predicting and "
            "scoring, CPU)."
        )
    lines += paired_lines(one_step, k_low, k_best)
    inconsistent = sum(not d.consistent for d in one_step)
    lines.append(f"- Executed outcomes that disagree with the candidate runs: {inconsistent}.")
    chains = [d for d in decisions if d.depth == 2]
    if chains:
        depth_one = [
            d
            for d in one_step
            if d.samples == 1
            and (d.seed, d.scene) in {(c.seed, c.scene) for c in chains}
            and d.goal != "do-nothing"
        ]
        lines += [
            "",
            "| planning depth (K=1) | goals | exact plan | success | oracle success | "
            "random exact |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            f"| 1 (one-step skill goals, same scenes and layouts) | {len(depth_one)} | "
            f"{mean([d.correct['world_model'] for d in depth_one]):.2f} | "
            f"{mean([d.success['world_model'] for d in depth_one]):.2f} | "
            f"{mean([d.success['oracle'] for d in depth_one]):.2f} | "
            f"{mean([d.correct['random'] for d in depth_one]):.2f} |",
            f"| 2 (two-step goals, imagined chaining) | {len(chains)} | "
            f"{mean([d.correct['world_model'] for d in chains]):.2f} | "
            f"{mean([d.success['world_model'] for d in chains]):.2f} | "
            f"{mean([d.success['oracle'] for d in chains]):.2f} | "
            f"{mean([d.correct['random'] for d in chains]):.2f} |",
            "",
            "Two-step goals: scenes "
            + ", ".join(sorted({d.scene for d in chains}))
            + "; layouts "
            + ", ".join(str(s) for s in dict.fromkeys(d.seed for d in chains))
            + ". Success of a two-step goal is the goal task's criterion at the end of the plan.",
        ]
    return "\n".join(lines)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test p-value of ``wins`` against ``losses`` (ties dropped)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_lines(one_step: list[Decision], k_low: int, k_best: int) -> list[str]:
    """Paired comparisons on the same goals: wins, losses and a sign test."""
    goals: dict[tuple, dict[int, Decision]] = {}
    for d in one_step:
        goals.setdefault((d.seed, d.scene, d.goal), {})[d.samples] = d
    pairs = [g for g in goals.values() if k_low in g and k_best in g]
    lines = []
    comparisons = [
        (
            f"world model K={k_best} vs first skill",
            lambda g: g[k_best].success["world_model"],
            lambda g: g[k_best].success["first_skill"],
        ),
        (
            f"world model K={k_best} vs K={k_low}",
            lambda g: g[k_best].success["world_model"],
            lambda g: g[k_low].success["world_model"],
        ),
        (
            f"world model K={k_best}: PSNR vs edge-F1 decision",
            lambda g: g[k_best].success["world_model"],
            lambda g: g[k_best].success["world_model_edges"],
        ),
    ]
    for name, first, second in comparisons:
        wins = sum(first(g) > second(g) for g in pairs)
        losses = sum(first(g) < second(g) for g in pairs)
        lines.append(
            f"- Paired, {name} (success on the same {len(pairs)} goals): {wins} goals won, "
            f"{losses} lost, sign test p = {sign_test(wins, losses):.3g}."
        )
    skill_goals = [g for g in pairs if g[k_best].goal != "do-nothing"]
    lines.append(
        f"- Skill goals only (no do-nothing goals, {len(skill_goals)}): world model K={k_best} "
        f"success {mean([g[k_best].success['world_model'] for g in skill_goals]):.2f}, random "
        f"{mean([g[k_best].success['random'] for g in skill_goals]):.2f}, oracle "
        f"{mean([g[k_best].success['oracle'] for g in skill_goals]):.2f}."
    )
    return lines


def plot(decisions: list[Decision], k: int, path: Path) -> None:
    """Bar chart (OpenCV): success per scene for the world model, baselines and the oracle."""
    one_step = [d for d in decisions if d.depth == 1 and d.samples == k]
    scenes = [*dict.fromkeys(d.scene for d in one_step), "pooled"]
    policies = [
        ("world_model", f"world model K={k}", (40, 90, 220)),
        ("random", "random", (160, 160, 160)),
        ("first_skill", "first skill", (90, 170, 90)),
        ("oracle", "oracle", (30, 30, 30)),
    ]
    width, height, left, bottom, top = 1100, 420, 60, 70, 40
    image = np.full((height, width, 3), 255, np.uint8)
    plot_h = height - bottom - top
    group = (width - left - 20) / len(scenes)
    bar = group * 0.8 / len(policies)
    for value in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = int(top + plot_h * (1 - value))
        cv2.line(image, (left, y), (width - 20, y), (225, 225, 225), 1)
        cv2.putText(image, f"{value:.2f}", (8, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for i, scene in enumerate(scenes):
        subset = one_step if scene == "pooled" else [d for d in one_step if d.scene == scene]
        x0 = left + i * group + group * 0.1
        for j, (key, _, colour) in enumerate(policies):
            value = mean([d.success[key] for d in subset])
            x = int(x0 + j * bar)
            y = int(top + plot_h * (1 - value))
            cv2.rectangle(image, (x, y), (int(x + bar) - 2, top + plot_h), colour[::-1], -1)
        cv2.putText(
            image,
            scene,
            (int(x0), height - bottom + 18),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.4,
            (0, 0, 0),
            1,
        )
    for j, (_, label, colour) in enumerate(policies):
        x = left + j * 200
        cv2.rectangle(image, (x, height - 30), (x + 14, height - 16), colour[::-1], -1)
        cv2.putText(
            image, label, (x + 20, height - 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1
        )
    cv2.putText(
        image,
        "simulator success per scene (held-out layouts)",
        (left, 25),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.6,
        (0, 0, 0),
        1,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def write_section(markdown: Path, body: str) -> None:
    """Replace the benchmark's section of ``markdown`` (between its markers) with ``body``."""
    text = markdown.read_text()
    if MARK_BEGIN not in text:
        raise SystemExit(f"{markdown} has no {MARK_BEGIN} marker")
    head, rest = text.split(MARK_BEGIN, 1)
    _, tail = rest.split(MARK_END, 1)
    markdown.write_text(f"{head}{MARK_BEGIN}\n{body}\n{MARK_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its outputs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(HELD_OUT_SEEDS))
    parser.add_argument("--scenes", nargs="+", default=None, help="default: every scene")
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--metric", default="psnr", choices=("psnr", "edges"))
    parser.add_argument(
        "--chain",
        default="yes",
        choices=("yes", "no", "only"),
        help="two-step goals: with the one-step goals, none, or only them",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "bench_planning.json")
    parser.add_argument(
        "--plot", type=Path, default=ROOT / "docs" / "images" / "bench_planning.png"
    )
    parser.add_argument(
        "--markdown",
        default=str(ROOT / "docs" / "BENCHMARKS.md"),
        help="file whose bench_planning section is replaced; '' = print only",
    )
    parser.add_argument(
        "--summarize",
        type=Path,
        nargs="+",
        default=None,
        help="only report these JSON records (a --chain only run's two-step goals replace the "
        "others')",
    )
    args = parser.parse_args(argv)
    if args.summarize is not None:
        record = merge([json.loads(path.read_text()) for path in args.summarize])
        if args.json not in args.summarize:
            args.json.write_text(json.dumps(record))
        report(record, args)
        return 0
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOG_DIR", tempfile.mkdtemp(prefix="bench-planning-ros-"))
    import rclpy

    from showme_ros.middleware import free_transport_buffers
    from showme_ros.sim_world import SimWorld, scene_names

    scenes = args.scenes or scene_names()
    logs = Path(tempfile.mkdtemp(prefix="bench-planning-logs-"))
    loop = ClosedLoop(logs, args.device, args.metric)
    free_transport_buffers()
    rclpy.init()
    started = time.monotonic()
    given = argv if argv is not None else sys.argv[1:]
    record = {
        "command": " ".join(["OMP_NUM_THREADS=1 python benchmarks/bench_planning.py", *given]),
        "seeds": [],
        "samples": args.samples,
        "metric": args.metric,
        "chain": args.chain,
        "skipped": 0,
        "seconds": 0.0,
        "decisions": [],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    try:
        robot, planner, _ = loop.clients()
        world = SimWorld(320, 240)  # the look-ahead copy of the simulator, for the oracle
        for seed in args.seeds:
            for scene in scenes:
                new, left_out = evaluate_scene(
                    robot, planner, world, scene, seed, args.samples, args.chain
                )
                record["decisions"] += [asdict(d) for d in new]
                record["skipped"] += left_out
                record["seconds"] = time.monotonic() - started
                done = [d for d in new if d.depth == 1 and d.samples == max(args.samples)]
                print(
                    f"seed {seed} {scene}: accuracy "
                    f"{mean([d.correct['world_model'] for d in done]):.2f}, success "
                    f"{mean([d.success['world_model'] for d in done]):.2f} "
                    f"({record['seconds']:.0f} s)",
                    flush=True,
                )
            record["seeds"].append(seed)
            # Written after every layout: a stopped run still reports its finished layouts.
            args.json.write_text(json.dumps(record, indent=1))
    finally:
        rclpy.try_shutdown()
        loop.stop()
    report(merge([record]), args)
    return 0


def merge(records: list[dict]) -> dict:
    """One record from several runs: one-step goals from full runs, two-step goals from the
    ``--chain only`` runs when there are any."""
    chains_only = [r for r in records if r.get("chain") == "only"]
    full = [r for r in records if r.get("chain") != "only"]
    if not full:
        raise SystemExit("give at least one run with one-step goals")

    def finished(record: dict, depth: int) -> list[dict]:
        seeds = set(record["seeds"])
        return [d for d in record["decisions"] if d["seed"] in seeds and d["depth"] == depth]

    two_step = chains_only or full
    return {
        "command": " && ".join(r["command"] for r in records),
        "seeds": list(dict.fromkeys(s for r in full for s in r["seeds"])),
        "samples": full[0]["samples"],
        "metric": full[0]["metric"],
        "skipped": sum(r["skipped"] for r in full),
        "seconds": sum(r["seconds"] for r in records),
        "decisions": [d for r in full for d in finished(r, 1)]
        + [d for r in two_step for d in finished(r, 2)],
    }


def report(record: dict, args: argparse.Namespace) -> None:
    """Print the tables and write the plot and the markdown section."""
    decisions = [Decision(**d) for d in record["decisions"]]
    tables = summary_tables(
        decisions,
        record["samples"],
        record["seeds"],
        record["skipped"],
        record["metric"],
        record["seconds"],
    )
    plot(decisions, max(record["samples"]), args.plot)
    image = os.path.relpath(args.plot, ROOT / "docs")
    body = f"Command: `{record['command']}`\n\n{tables}\n\n![closed-loop success]({image})"
    print(body)
    if args.markdown:
        write_section(Path(args.markdown), body)


if __name__ == "__main__":
    sys.exit(main())

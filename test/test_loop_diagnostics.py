"""The closed-loop nodes report their health on /diagnostics, like the world-model node.

The status-building functions are tested with counters in, level and key-values out; two tests
start the simulated robot and the planner as the closed-loop launch file does (without a world
model) and read their reports.
"""

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState

from showme_ros import loop_parameters, parameters
from showme_ros.action import PlanAndExecute
from showme_ros.client import succeeded
from showme_ros.diagnostics import OutcomeLog, Outcomes, RateMeter
from showme_ros.launch_command import launch_commands
from showme_ros.loop_clients import PlannerClient, RobotClient
from showme_ros.planner_node import Decision, Peer, PlannerState, planner_status
from showme_ros.sim_robot_node import (
    CAMERA_RATE_WINDOW_S,
    CameraState,
    RobotState,
    robot_status,
)
from showme_ros.sim_world import NOOP_SKILL

ROOT = Path(__file__).resolve().parents[1]
OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


# Shared pieces --------------------------------------------------------------------------------


@pytest.mark.parametrize("specs", [loop_parameters.SIM_ROBOT, loop_parameters.PLANNER])
def test_loop_nodes_declare_the_world_models_diagnostics_period(specs):
    world_model = {spec.name: spec for spec in parameters.SPECS}
    assert {spec.name: spec for spec in specs}["diagnostics.period"] == world_model[
        "diagnostics.period"
    ]


def test_outcome_log_counts_requests_and_forgets_a_failure_once_one_is_served():
    log = OutcomeLog()
    for _ in range(3):
        log.received()
    log.failed("no goal image")
    assert log.snapshot() == Outcomes(3, 0, 1, "no goal image")
    assert log.snapshot().running == 2
    log.served()
    assert log.snapshot() == Outcomes(3, 1, 1, "")
    log.failed("busy")
    assert log.snapshot().last_failure == "busy" and log.snapshot().running == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_meter_measures_the_recent_rate_and_sees_a_stall():
    clock = FakeClock()
    meter = RateMeter(5.0, clock)
    for _ in range(16):  # 8 Hz for 2 s: the rate over the 2 s seen so far
        clock.now += 0.125
        meter.tick()
    assert meter.per_second() == 8.0 and not meter.settled()
    for _ in range(80):  # then 16 Hz for 5 s: only the last window counts
        clock.now += 0.0625
        meter.tick()
    assert meter.per_second() == 16.0 and meter.settled()
    clock.now += 2.5  # a stall: half the window without events
    assert meter.per_second() == 8.0
    clock.now += 5.0
    assert meter.per_second() == 0.0 and meter.total == 96
    meter.restart()
    assert not meter.settled() and meter.per_second() == 0.0 and meter.total == 96


# The planner ----------------------------------------------------------------------------------


def peers(**missing: bool) -> tuple[Peer, ...]:
    names = {
        "world_model_predict": "/showme/predict",
        "robot_get_scene": "/robot/get_scene",
        "robot_execute_skill": "/robot/execute_skill",
        "robot_camera": "/robot/camera/image_raw",
    }
    return tuple(Peer(key, name, not missing.get(key, False)) for key, name in names.items())


def planner(**changes: object) -> PlannerState:
    state = {
        "lifecycle": "active",
        "goals": Outcomes(received=5, served=3, failed=1),
        "last_decision": Decision("drawer-open", 12.3456),
        "peers": peers(),
        "memory_bytes": 123,
    }
    return PlannerState(**{**state, **changes})


def test_planner_is_ok_when_active_with_every_peer_and_reports_goals_and_its_last_decision():
    report = planner_status("/planner/planner: planner", planner())
    assert report.level == OK and report.message == "active; last plan drawer-open"
    assert (report.name, report.hardware_id) == ("/planner/planner: planner", "showme_planner")
    assert values(report) == {
        "lifecycle_state": "active",
        "goals_received": "5",
        "goals_succeeded": "3",
        "goals_failed": "1",
        "goals_running": "1",
        "last_failure": "",
        "last_plan": "drawer-open",
        "last_decision_latency_s": "12.346",
        "world_model_predict": "/showme/predict",
        "world_model_predict_available": "true",
        "robot_get_scene": "/robot/get_scene",
        "robot_get_scene_available": "true",
        "robot_execute_skill": "/robot/execute_skill",
        "robot_execute_skill_available": "true",
        "robot_camera": "/robot/camera/image_raw",
        "robot_camera_available": "true",
        "process_memory_bytes": "123",
    }


def test_planner_without_a_decision_yet_reports_empty_plan_and_latency():
    report = planner_status("p", planner(last_decision=None, goals=Outcomes()))
    assert report.level == OK and report.message == "active"
    assert values(report)["last_plan"] == values(report)["last_decision_latency_s"] == ""


def test_active_planner_that_cannot_reach_the_world_model_or_robot_is_an_error():
    report = planner_status("p", planner(peers=peers(world_model_predict=True, robot_camera=True)))
    assert report.level == ERROR
    assert report.message == "unreachable: /showme/predict, /robot/camera/image_raw"
    assert values(report)["world_model_predict_available"] == "false"
    assert values(report)["robot_get_scene_available"] == "true"


@pytest.mark.parametrize("lifecycle", ["unconfigured", "inactive"])
def test_planner_not_active_warns_even_without_its_peers(lifecycle):
    report = planner_status("p", planner(lifecycle=lifecycle, peers=peers(robot_get_scene=True)))
    assert report.level == WARN and report.message == f"not serving goals (lifecycle {lifecycle})"


def test_planner_warns_with_the_reason_when_its_last_goal_failed():
    goals = Outcomes(received=2, served=1, failed=1, last_failure="no goal image")
    report = planner_status("p", planner(goals=goals))
    assert report.level == WARN and report.message == "last goal failed: no goal image"
    assert values(report)["last_failure"] == "no goal image"


# The simulated robot --------------------------------------------------------------------------


def robot(**changes: object) -> RobotState:
    state = {
        "lifecycle": "active",
        "activation_error": "",
        "scene": "drawer",
        "layout_seed": 2040,
        "skills": Outcomes(received=4, served=3, failed=1),
        "skills_succeeded": 2,
        "last_skill": "drawer-open succeeded after 87 steps",
        "camera": CameraState(frames=900, rate_hz=29.8, target_hz=30.0, settled=True),
        "memory_bytes": 456,
    }
    return RobotState(**{**state, **changes})


def test_robot_is_ok_when_active_and_reports_scene_skills_and_camera():
    report = robot_status("/robot/sim_robot: simulated robot", robot())
    assert report.level == OK
    assert report.message == "active: scene drawer (layout seed 2040), camera 29.8 Hz"
    assert report.hardware_id == "metaworld_sim"
    assert values(report) == {
        "lifecycle_state": "active",
        "scene": "drawer",
        "layout_seed": "2040",
        "skills_received": "4",
        "skills_executed": "3",
        "skills_succeeded": "2",
        "skill_requests_failed": "1",
        "skills_running": "0",
        "last_skill": "drawer-open succeeded after 87 steps",
        "last_failure": "",
        "camera_frames_published": "900",
        "camera_rate_hz": "29.80",
        "camera_rate_target_hz": "30",
        "process_memory_bytes": "456",
    }


def test_robot_warns_when_inactive_and_errs_when_its_activation_failed():
    inactive = robot_status("r", robot(lifecycle="inactive", scene="", layout_seed=None))
    assert inactive.level == WARN and inactive.message == "not serving (lifecycle inactive)"
    assert values(inactive)["layout_seed"] == ""
    failed = robot_status("r", robot(lifecycle="inactive", activation_error="unknown scene 'x'"))
    assert failed.level == ERROR and failed.message == "activation failed: unknown scene 'x'"


def test_robot_warns_when_the_camera_falls_below_half_its_rate_once_measured():
    slow = CameraState(frames=40, rate_hz=8.0, target_hz=30.0, settled=True)
    report = robot_status("r", robot(camera=slow))
    assert report.level == WARN and report.message == "camera at 8.0 Hz of 30 Hz"
    assert robot_status("r", robot(camera=CameraState(40, 16.0, 30.0, True))).level == OK
    just_started = CameraState(frames=3, rate_hz=8.0, target_hz=30.0, settled=False)
    assert robot_status("r", robot(camera=just_started)).level == OK
    idle = robot_status("r", robot(lifecycle="inactive", camera=CameraState(0, 0.0, 30.0, True)))
    assert idle.message == "not serving (lifecycle inactive)"  # a stopped camera is expected


def test_robot_warns_with_the_reason_when_its_last_skill_request_failed():
    skills = Outcomes(received=1, failed=1, last_failure="busy: another skill is running")
    report = robot_status("r", robot(skills=skills))
    assert report.level == WARN
    assert report.message == "last skill request failed: busy: another skill is running"


# The real nodes -------------------------------------------------------------------------------

ROBOT_NAME = "/robot/sim_robot: simulated robot"
PLANNER_NAME = "/planner/planner: planner"
CAMERA_RATE = 10.0
START_TIMEOUT_S = 45.0
ANSWER_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def loop_nodes(tmp_path_factory):
    """The simulated robot and the planner (no world model) started as the closed-loop launch
    file starts them, reporting every 0.5 s; a robot client, a planner client and their logs."""
    logs = tmp_path_factory.mktemp("loop_diagnostics")
    overrides = {"camera_rate": str(CAMERA_RATE), "realtime_factor": "0"}
    commands = launch_commands("closed_loop.launch.py", overrides)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = {}
    for name in ("sim_robot", "planner"):
        with (logs / f"{name}.log").open("w") as out:
            command = [*commands[name], "-p", "diagnostics.period:=0.5"]
            processes[name] = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env
            )
    rclpy.init()
    robot, planner = RobotClient("test_diagnostics_robot"), PlannerClient("test_diagnostics_plan")

    def tails() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in logs.iterdir())

    try:
        assert robot.wait_until_ready(START_TIMEOUT_S), tails()
        assert planner.wait_for_server(START_TIMEOUT_S), tails()
        yield robot, planner, tails
        for process in processes.values():
            process.send_signal(signal.SIGINT)
        codes = [process.wait(timeout=30) for process in processes.values()]
        assert codes == [0, 0], tails()
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
        robot.close()
        planner.close()
        rclpy.shutdown()


Stamped = list[tuple[float, DiagnosticStatus]]


def collect(
    client: RobotClient | PlannerClient, name: str, done: Callable[[Stamped], bool], timeout: float
) -> Stamped:
    """The /diagnostics statuses called ``name``, with their stamps, until ``done`` or timeout."""
    received: list[DiagnosticArray] = []
    subscription = client.node.create_subscription(
        DiagnosticArray, "/diagnostics", received.append, 10
    )
    seen: Stamped = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done(seen):
            client.executor.spin_once(timeout_sec=0.1)
            for array in received:
                stamp = array.header.stamp.sec + array.header.stamp.nanosec * 1e-9
                seen += [(stamp, status) for status in array.status if status.name == name]
            received.clear()
    finally:
        client.node.destroy_subscription(subscription)
    return seen


def next_report(
    client: RobotClient | PlannerClient,
    name: str,
    wanted: Callable[[DiagnosticStatus], bool],
    timeout: float,
    tails: Callable[[], str],
) -> tuple[DiagnosticStatus, float]:
    """The first /diagnostics status called ``name`` that satisfies ``wanted``, and its stamp."""
    seen = collect(client, name, lambda seen: any(wanted(s) for _, s in seen), timeout)
    for stamp, status in seen:
        if wanted(status):
            return status, stamp
    last = (seen[-1][1].message, values(seen[-1][1])) if seen else "no report"
    raise AssertionError(f"no wanted report of {name}; last: {last}\n{tails()}")


def test_sim_robot_reports_scene_skills_camera_rate_and_lifecycle_on_diagnostics(loop_nodes):
    robot, _, tails = loop_nodes

    def report(wanted: Callable[[DiagnosticStatus], bool], timeout: float = 10.0):
        return next_report(robot, ROBOT_NAME, wanted, timeout, tails)

    first, _ = report(lambda s: True, START_TIMEOUT_S)
    assert first.hardware_id == "metaworld_sim"
    status, _ = report(lambda s: s.level == OK, START_TIMEOUT_S)
    kv = values(status)
    assert (kv["lifecycle_state"], kv["scene"], kv["layout_seed"]) == ("active", "drawer", "2040")
    assert kv["camera_rate_target_hz"] == "10"
    # The rate reported over the last window matches the frames counted over that window.
    stamped = collect(robot, ROBOT_NAME, lambda _seen: False, CAMERA_RATE_WINDOW_S + 1.0)
    end_stamp, end = stamped[-1]
    start_stamp, start = min(stamped, key=lambda r: abs(r[0] - (end_stamp - CAMERA_RATE_WINDOW_S)))
    frames = int(values(end)["camera_frames_published"]) - int(
        values(start)["camera_frames_published"]
    )
    rate = float(values(end)["camera_rate_hz"])
    assert 0 < rate <= CAMERA_RATE * 1.05
    assert frames / (end_stamp - start_stamp) == pytest.approx(rate, rel=0.15)

    outcome, ran = robot.execute(NOOP_SKILL, timeout=ANSWER_TIMEOUT_S)
    assert succeeded(outcome), ran.message
    outcome, refused = robot.execute("fly", timeout=ANSWER_TIMEOUT_S)
    assert not succeeded(outcome)
    status, _ = report(lambda s: values(s)["skills_received"] == "2")
    kv = values(status)
    assert (kv["skills_executed"], kv["skill_requests_failed"]) == ("1", "1")
    assert kv["skills_succeeded"] == str(int(ran.success))
    assert kv["last_skill"] == ran.message and kv["last_failure"] == refused.message
    assert status.level == WARN and "has no skill 'fly'" in status.message

    change = robot.node.create_client(ChangeState, "/robot/sim_robot/change_state")
    request = ChangeState.Request()
    request.transition.id = Transition.TRANSITION_DEACTIVATE
    assert robot._call(change, request, ANSWER_TIMEOUT_S).success
    status, _ = report(lambda s: values(s)["lifecycle_state"] == "inactive")
    assert status.level == WARN and "not serving (lifecycle inactive)" in status.message


def test_planner_without_a_world_model_reports_it_unreachable_and_counts_a_failed_goal(
    loop_nodes,
):
    _, planner, tails = loop_nodes

    def robot_seen(status: DiagnosticStatus) -> bool:
        return values(status)["robot_execute_skill_available"] == "true"

    status, _ = next_report(planner, PLANNER_NAME, robot_seen, START_TIMEOUT_S, tails)
    kv = values(status)
    assert (status.level, status.hardware_id) == (ERROR, "showme_planner")
    assert status.message == "unreachable: /showme/predict"
    assert (kv["world_model_predict_available"], kv["robot_get_scene_available"]) == (
        "false",
        "true",
    )
    outcome, result = planner.plan(PlanAndExecute.Goal(), timeout=ANSWER_TIMEOUT_S)
    assert not succeeded(outcome) and result.message == "no goal image"
    status, _ = next_report(
        planner, PLANNER_NAME, lambda s: values(s)["goals_received"] == "1", 10, tails
    )
    kv = values(status)
    assert (kv["goals_succeeded"], kv["goals_failed"], kv["last_failure"]) == (
        "0",
        "1",
        "no goal image",
    )
    assert status.level == ERROR  # the worst problem decides; both are said
    assert status.message == "unreachable: /showme/predict; last goal failed: no goal image"

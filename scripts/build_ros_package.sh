#!/usr/bin/env bash
# Build the showme_ros CMake package (interfaces, node, launch and config) into .venv, as colcon
# would into an install space. Called by `make setup` after scripts/setup_env.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "${VENV:-.venv}" && pwd)
BUILD_DIR=${BUILD_DIR:-build/showme_ros}
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
mkdir -p "$BUILD_DIR"

"$VENV/bin/python" scripts/patch_ros_wheel_cmake.py "$VENV"
export PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV"
export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV"
cmake -S . -B "$BUILD_DIR" -Wno-dev \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$VENV/bin/python" \
  -DBUILD_TESTING=OFF \
  -DSHOWME_INSTALL_MODEL_LIBRARY=OFF >"$BUILD_DIR.configure.log" 2>&1 \
  || { cat "$BUILD_DIR.configure.log"; exit 1; }
cmake --build "$BUILD_DIR" -j "$(nproc)" >"$BUILD_DIR.build.log" 2>&1 \
  || { tail -n 60 "$BUILD_DIR.build.log"; exit 1; }
cmake --install "$BUILD_DIR" >"$BUILD_DIR.install.log" 2>&1 \
  || { tail -n 60 "$BUILD_DIR.install.log"; exit 1; }
echo "built showme_ros into $VENV"

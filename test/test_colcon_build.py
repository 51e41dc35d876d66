"""The colcon path: build the package with colcon (from PyPI) in a throw-away workspace against
the ROS 2 wheels, then import the node and the generated messages from the install space and
find the launch files and executables there."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
PACKAGE_PATHS = [
    "CMakeLists.txt",
    "package.xml",
    "msg",
    "srv",
    "action",
    "showme_ros",
    "showme_model",
    "launch",
    "config",
    "scripts",
]
CHECK_INSTALL = """
import sys
from pathlib import Path
from ament_index_python.packages import get_package_share_directory
import showme_ros.node
from showme_ros.msg import PredictedRollout
install = Path(sys.argv[1]).resolve()
for module in (showme_ros.node, sys.modules[PredictedRollout.__module__]):
    assert install in Path(module.__file__).resolve().parents, module.__file__
share = Path(get_package_share_directory("showme_ros")).resolve()
assert install in share.parents, share
assert (share / "launch" / "showme.launch.py").is_file()
from showme_ros.launch_command import executable_path, share_dir
assert share_dir().resolve() == share, share_dir()
assert install in executable_path("showme_node").resolve().parents
assert executable_path("showme_node").is_file()
print("imported", showme_ros.node.__file__)
"""


def copy_package(destination: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PACKAGE_PATHS:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=ignore)
        else:
            destination.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def ros_wheel_env() -> dict[str, str]:
    """The environment `source .venv/bin/activate` gives after scripts/prepare_colcon_venv.sh."""
    env = {k: v for k, v in os.environ.items() if k != "_ROS_WHEELS_BOOTSTRAP_COMPLETE"}
    env.pop("PYTHONPATH", None)
    env.update(
        VIRTUAL_ENV=str(VENV),
        PATH=f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        AMENT_PREFIX_PATH=str(VENV),
        CMAKE_PREFIX_PATH=str(VENV),
    )
    return env


@pytest.mark.slow
def test_colcon_build_and_import_from_install_space(tmp_path):
    colcon = VENV / "bin" / "colcon"
    assert colcon.is_file(), "colcon missing: run `make setup` or scripts/prepare_colcon_venv.sh"
    workspace = tmp_path / "ws"
    copy_package(workspace / "src" / "showme_ros")
    env = ros_wheel_env()
    started = time.perf_counter()
    build = subprocess.run(
        [str(colcon), "build", "--packages-select", "showme_ros"],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    print(f"colcon build: {time.perf_counter() - started:.1f} s")

    install = workspace / "install" / "showme_ros"
    site = (
        install
        / "lib"
        / f"python{sys.version_info.major}.{sys.version_info.minor}"
        / "site-packages"
    )
    assert (site / "showme_ros" / "node.py").is_file()
    # pip already installed the model library here, so the install space holds no second copy.
    cache = (workspace / "build" / "showme_ros" / "CMakeCache.txt").read_text()
    assert "SHOWME_INSTALL_MODEL_LIBRARY:BOOL=OFF" in cache
    assert not (site / "showme_model").exists()

    check = subprocess.run(
        [
            "bash",
            "-c",
            'source install/setup.bash && python -c "$0" "$1"',
            CHECK_INSTALL,
            str(install),
        ],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr

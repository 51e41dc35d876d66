"""Test-wide setup: every ROS test run gets its own DDS domain, loopback discovery and logs."""

import os
import random
import tempfile

# Set before anything imports rclpy, and inherited by the processes tests start.
os.environ["ROS_DOMAIN_ID"] = str(random.Random(os.getpid()).randint(1, 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="showme-ros-log-")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# MuJoCo picks its GL backend when first imported; headless rendering needs EGL in every test.
os.environ.setdefault("MUJOCO_GL", "egl")

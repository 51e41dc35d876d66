"""Test-wide setup: every ROS test run gets its own DDS domain, loopback discovery and logs."""

import os
import random
import tempfile

from showme_ros.middleware import free_transport_buffers

# Set before anything imports rclpy, and inherited by the processes tests start.
os.environ["ROS_DOMAIN_ID"] = str(random.Random(os.getpid()).randint(1, 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="showme-ros-log-")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Test clients send large frames: they run Fast DDS with the nodes' profile, as users' clients
# should (without it a 36 MiB request on a loaded CPU was lost now and then).
free_transport_buffers()
# MuJoCo picks its GL backend when first imported; headless rendering needs EGL in every test.
os.environ.setdefault("MUJOCO_GL", "egl")

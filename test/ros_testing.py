"""Shared constants for tests that talk ROS across processes."""

# Waits for discovery and for answers across processes; the first discovery can take seconds.
DISCOVERY_TIMEOUT_S = 15.0

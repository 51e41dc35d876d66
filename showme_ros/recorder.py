"""Record topics of a live rclpy node into an MCAP file that Foxglove opens (no rosbag2 needed).

Messages arrive serialized (``raw=True`` subscriptions) and are written unchanged, with their
schemas, by the ``rosbags`` rosbag2 writer: the result is a rosbag2 folder holding one ``.mcap``
file. This package's own message types (``showme_ros/msg/PredictedRollout``, ...) are registered
from their ``.msg`` files, so the recording carries their definitions too.

Usage::

    with McapRecorder(node, "demo_out/recording", {"/showme/goal_image": "sensor_msgs/msg/Image"}):
        ...  # spin the node

    record(node, topics, "demo_out/recording", duration=5.0)  # spins the node itself
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

PACKAGE = "showme_ros"
# Best effort matches reliable and best-effort publishers alike (cameras are usually the latter).
DEFAULT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.BEST_EFFORT
)


def message_class(msgtype: str) -> type:
    """Return the rclpy class of a type named like ``sensor_msgs/msg/Image``."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def installed_msg_dir() -> Path:
    """``share/showme_ros/msg`` of the install prefix whose generated ``showme_ros.msg`` is used.

    The ``.msg`` files installed beside the generated code describe exactly what it serializes.
    """
    import showme_ros.msg

    for folder in Path(showme_ros.msg.__file__).resolve().parents:
        candidate = folder / "share" / PACKAGE / "msg"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no share/{PACKAGE}/msg above {showme_ros.msg.__file__}")


def package_typestore(msg_dir: Path | None = None) -> Any:
    """Return a rosbags typestore of the latest ROS 2 types and this package's ``.msg`` types."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.LATEST)
    msg_dir = msg_dir or installed_msg_dir()
    types: dict[str, Any] = {}
    for path in sorted(msg_dir.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


class McapRecorder:
    """Record ``topics`` (name -> type, e.g. ``sensor_msgs/msg/Image``) of ``node`` to ``path``.

    ``path`` is the rosbag2 folder to create (it must not exist); the MCAP file inside is named
    after it. ``qos`` is one profile for every topic, or one per topic (best effort where none is
    given). Receive times come from the node's clock, so ``use_sim_time`` is honoured. Use it
    as a context manager, or call :meth:`start` and :meth:`stop`; the node must be spun in
    between for messages to arrive.
    """

    def __init__(
        self,
        node: Node,
        path: str | Path,
        topics: Mapping[str, str],
        qos: QoSProfile | Mapping[str, QoSProfile] = DEFAULT_QOS,
    ) -> None:
        if not topics:
            raise ValueError("no topics to record")
        self.node, self.path, self.topics, self.qos = node, Path(path), dict(topics), qos
        self.counts: dict[str, int] = dict.fromkeys(self.topics, 0)
        self._lock = threading.Lock()
        self._writer: Any = None
        self._subscriptions: list[Any] = []

    def start(self) -> McapRecorder:
        """Open the MCAP file and subscribe to the topics."""
        from rosbags.rosbag2 import StoragePlugin, Writer

        classes = {topic: message_class(msgtype) for topic, msgtype in self.topics.items()}
        store = package_typestore()
        writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        writer.open()
        self._writer = writer
        for topic, msgtype in self.topics.items():
            connection = writer.add_connection(topic, msgtype, typestore=store)
            self._subscriptions.append(
                self.node.create_subscription(
                    classes[topic],
                    topic,
                    self._writer_callback(topic, connection),
                    self.qos.get(topic, DEFAULT_QOS) if isinstance(self.qos, Mapping) else self.qos,
                    raw=True,
                )
            )
        return self

    def _writer_callback(self, topic: str, connection: Any) -> Any:
        def write(data: bytes) -> None:
            stamp = self.node.get_clock().now().nanoseconds
            with self._lock:
                if self._writer is not None:
                    self._writer.write(connection, stamp, data)
                    self.counts[topic] += 1

        return write

    def stop(self) -> dict[str, int]:
        """Unsubscribe, close the file and return the number of messages written per topic."""
        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)
        self._subscriptions.clear()
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        return dict(self.counts)

    @property
    def mcap_file(self) -> Path:
        """The ``.mcap`` file inside the rosbag2 folder (what Foxglove opens)."""
        return self.path / f"{self.path.name}.mcap"

    def __enter__(self) -> McapRecorder:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def record(
    node: Node, topics: Mapping[str, str], path: str | Path, duration: float
) -> dict[str, int]:
    """Spin ``node`` for ``duration`` seconds while recording ``topics`` into ``path``.

    Returns the number of messages written per topic.
    """
    import rclpy

    recorder = McapRecorder(node, path, topics).start()
    try:
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=min(0.1, max(0.0, deadline - time.monotonic())))
    finally:
        counts = recorder.stop()
    return counts

"""Serving statistics and their ``diagnostic_msgs/DiagnosticStatus`` report.

The closed-loop nodes (planner, simulated robot) build their reports from the shared helpers at
the end: request outcomes, a rate meter, the lifecycle state and the periodic publisher.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import psutil
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode
from rclpy.node import Node

from showme_ros.msg import ErrorCode

# The report turns WARN when at least this share of the last RECENT_REQUESTS answers failed
# (and at least MIN_RECENT_FAILURES did), or when a callback raised within CALLBACK_ERROR_WINDOW_S.
RECENT_REQUESTS = 20
FAILURE_SHARE_WARN = 0.25
MIN_RECENT_FAILURES = 4
CALLBACK_ERROR_WINDOW_S = 60.0
CODE_NAMES = {
    getattr(ErrorCode, name): name.lower()
    for name in dir(ErrorCode)
    if name.isupper() and isinstance(getattr(ErrorCode, name), int)
}


@dataclass(frozen=True)
class ModelState:
    """What the node knows about its model when the report is made."""

    loaded: bool
    model_id: str
    device: str
    dtype: str
    error: str
    gpu_memory_bytes: int


@dataclass(frozen=True)
class FrameState:
    """The camera input when the report is made."""

    received: int
    superseded: int
    dropped: int
    newest_age_s: float | None
    max_age_s: float


class ServingStats:
    """Thread-safe counters and latencies of answered requests and failed callbacks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.served = 0
        self.failed = 0
        self.failures_by_code: Counter[int] = Counter()
        self.callback_errors = 0
        self.last_latency = 0.0
        self._total_latency = 0.0
        self._recent: deque[int] = deque(maxlen=RECENT_REQUESTS)
        self._last_callback_error = -float("inf")

    def record_success(self, latency: float) -> None:
        """Count a served request that took ``latency`` seconds."""
        with self._lock:
            self.served += 1
            self.last_latency = latency
            self._total_latency += latency
            self._recent.append(ErrorCode.OK)

    def record_failure(self, code: int) -> None:
        """Count a request answered with success=false and ``ErrorCode`` ``code``."""
        with self._lock:
            self.failed += 1
            self.failures_by_code[code] += 1
            self._recent.append(code)

    def record_callback_error(self) -> None:
        """Count an exception that escaped a callback (the executor kept running)."""
        with self._lock:
            self.callback_errors += 1
            self._last_callback_error = time.monotonic()

    @property
    def mean_latency(self) -> float:
        """Mean seconds per served request (0 before the first)."""
        with self._lock:
            return self._total_latency / self.served if self.served else 0.0

    def warnings(self) -> list[str]:
        """Reasons to report WARN now; empty when serving looks healthy."""
        with self._lock:
            recent = Counter(code for code in self._recent if code != ErrorCode.OK)
            failures = sum(recent.values())
            reasons = []
            if failures >= MIN_RECENT_FAILURES and failures >= FAILURE_SHARE_WARN * len(
                self._recent
            ):
                detail = ", ".join(f"{CODE_NAMES.get(c, c)} {n}" for c, n in recent.most_common())
                reasons.append(
                    f"{failures} of the last {len(self._recent)} requests failed ({detail})"
                )
            if time.monotonic() - self._last_callback_error < CALLBACK_ERROR_WINDOW_S:
                reasons.append("a callback raised recently (see the log)")
            return reasons


def report(
    name: str,
    hardware_id: str,
    model: ModelState,
    stats: ServingStats,
    frames: FrameState,
) -> DiagnosticStatus:
    """Build the node's diagnostic status.

    ERROR when the model failed to load; WARN when the node is inactive, failures climb, a
    callback raised recently or the newest camera frame is older than ``limits.max_frame_age``;
    OK otherwise.
    """
    warnings = stats.warnings()
    stale = (
        frames.newest_age_s is not None
        and frames.max_age_s > 0
        and frames.newest_age_s > frames.max_age_s
    )
    if stale:
        warnings.append(f"newest camera frame is {frames.newest_age_s:.1f} s old")
    if not model.loaded and model.error:
        level, message = DiagnosticStatus.ERROR, f"model not loaded: {model.error}"
    elif not model.loaded:
        level, message = DiagnosticStatus.WARN, "model not loaded (node inactive)"
    elif warnings:
        level, message = DiagnosticStatus.WARN, "; ".join(warnings)
    else:
        level, message = DiagnosticStatus.OK, f"model loaded: {model.model_id}"
    values = {
        "model_loaded": str(model.loaded).lower(),
        "model_id": model.model_id,
        "device": model.device,
        "dtype": model.dtype,
        "last_latency_s": f"{stats.last_latency:.4f}",
        "mean_latency_s": f"{stats.mean_latency:.4f}",
        "requests_served": str(stats.served),
        "requests_failed": str(stats.failed),
        **{
            f"requests_failed_{CODE_NAMES[code]}": str(stats.failures_by_code[code])
            for code in sorted(CODE_NAMES)
            if code != ErrorCode.OK
        },
        "callback_errors": str(stats.callback_errors),
        "frames_received": str(frames.received),
        "frames_superseded": str(frames.superseded),
        "frames_dropped": str(frames.dropped),
        "newest_frame_age_s": "" if frames.newest_age_s is None else f"{frames.newest_age_s:.3f}",
        "frames_stale": str(stale).lower(),
        "process_memory_bytes": str(process_memory_bytes()),
        "gpu_memory_bytes": str(model.gpu_memory_bytes),
    }
    return _diagnostic_status(level, name, message, hardware_id, values)


def _diagnostic_status(
    level: bytes, name: str, message: str, hardware_id: str, values: dict[str, str]
) -> DiagnosticStatus:
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=key, value=value) for key, value in values.items()],
    )


# Shared by the closed-loop nodes (planner, simulated robot) -----------------------------------


@dataclass(frozen=True)
class Outcomes:
    """How a node's requests (planning goals, skills) went, when the report is made."""

    received: int = 0
    served: int = 0
    failed: int = 0
    last_failure: str = ""  # why the last finished request failed; "" when it was served

    @property
    def running(self) -> int:
        """Requests received and not finished yet."""
        return self.received - self.served - self.failed


class OutcomeLog:
    """Thread-safe :class:`Outcomes` of a node's requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes = Outcomes()

    def received(self) -> None:
        """Count a request that arrived."""
        with self._lock:
            self._outcomes = replace(self._outcomes, received=self._outcomes.received + 1)

    def served(self) -> None:
        """Count a request that was served; the last failure is over."""
        with self._lock:
            self._outcomes = replace(
                self._outcomes, served=self._outcomes.served + 1, last_failure=""
            )

    def failed(self, reason: str) -> None:
        """Count a request that failed for ``reason``."""
        with self._lock:
            self._outcomes = replace(
                self._outcomes, failed=self._outcomes.failed + 1, last_failure=reason
            )

    def snapshot(self) -> Outcomes:
        """Return the counts now."""
        with self._lock:
            return self._outcomes


class RateMeter:
    """Counts events and measures their rate over the last ``window_s`` seconds; thread-safe."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._times: deque[float] = deque()
        self._since = clock()
        self.total = 0

    def restart(self) -> None:
        """Measure the rate from now on (the total keeps counting)."""
        with self._lock:
            self._times.clear()
            self._since = self._clock()

    def tick(self) -> None:
        """Count one event now."""
        with self._lock:
            now = self._clock()
            self._times.append(now)
            self.total += 1
            self._forget(now)

    def per_second(self) -> float:
        """Events per second over the last window (or since :meth:`restart`, if shorter)."""
        with self._lock:
            now = self._clock()
            self._forget(now)
            span = min(self.window_s, now - self._since)
            return len(self._times) / span if span > 0 else 0.0

    def settled(self) -> bool:
        """Whether a whole window has passed since :meth:`restart`."""
        with self._lock:
            return self._clock() - self._since >= self.window_s

    def _forget(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()


def lifecycle_state(node: LifecycleNode) -> str:
    """Return the label of ``node``'s lifecycle state: unconfigured, inactive, active, ...

    rclpy offers the state only through the node's ``get_state`` service; its own
    ``trigger_shutdown`` reads the state machine the same way.
    """
    return node._state_machine.current_state[1]


def process_memory_bytes() -> int:
    """Resident memory of this process."""
    return psutil.Process().memory_info().rss


def status(
    name: str, hardware_id: str, problems: list[tuple[bytes, str]], ok: str, values: dict[str, str]
) -> DiagnosticStatus:
    """Build a status at the worst level of ``problems`` (level, reason), or OK saying ``ok``."""
    level = max((level for level, _ in problems), default=DiagnosticStatus.OK)
    message = "; ".join(reason for _, reason in problems) or ok
    return _diagnostic_status(level, name, message, hardware_id, values)


def publish_periodically(
    node: Node, period_s: float, build: Callable[[], DiagnosticStatus]
) -> None:
    """Publish ``build()`` on ``/diagnostics`` every ``period_s`` seconds, in any lifecycle state.

    The timer has its own callback group, so reports keep coming while a long request runs.
    """
    publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def publish() -> None:
        if not node.context.ok():  # shutting down: the graph and the publisher are going away
            return
        array = DiagnosticArray(status=[build()])
        array.header.stamp = node.get_clock().now().to_msg()
        publisher.publish(array)

    node.create_timer(period_s, publish, callback_group=MutuallyExclusiveCallbackGroup())

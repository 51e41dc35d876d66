"""Serving statistics and their ``diagnostic_msgs/DiagnosticStatus`` report."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

import psutil
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

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
        "process_memory_bytes": str(psutil.Process().memory_info().rss),
        "gpu_memory_bytes": str(model.gpu_memory_bytes),
    }
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=key, value=value) for key, value in values.items()],
    )

"""Serving statistics and their ``diagnostic_msgs/DiagnosticStatus`` report."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psutil
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue


@dataclass(frozen=True)
class ModelState:
    """What the node knows about its model when the report is made."""

    loaded: bool
    model_id: str
    device: str
    dtype: str
    error: str
    gpu_memory_bytes: int


class ServingStats:
    """Thread-safe counters and latencies of served requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.served = 0
        self.failed = 0
        self.busy = 0
        self.last_latency = 0.0
        self._total_latency = 0.0

    def record_success(self, latency: float) -> None:
        """Count a served request that took ``latency`` seconds."""
        with self._lock:
            self.served += 1
            self.last_latency = latency
            self._total_latency += latency

    def record_failure(self, busy: bool = False) -> None:
        """Count a request answered with success=false (``busy``: rejected for load)."""
        with self._lock:
            self.failed += 1
            self.busy += int(busy)

    @property
    def mean_latency(self) -> float:
        """Mean seconds per served request (0 before the first)."""
        with self._lock:
            return self._total_latency / self.served if self.served else 0.0


def report(
    name: str,
    hardware_id: str,
    model: ModelState,
    stats: ServingStats,
    frames_received: int,
    frames_dropped: int,
) -> DiagnosticStatus:
    """Build the node's diagnostic status: OK when the model is loaded, else WARN or ERROR."""
    if model.loaded:
        level, message = DiagnosticStatus.OK, f"model loaded: {model.model_id}"
    elif model.error:
        level, message = DiagnosticStatus.ERROR, f"model not loaded: {model.error}"
    else:
        level, message = DiagnosticStatus.WARN, "model not loaded (node inactive)"
    values = {
        "model_loaded": str(model.loaded).lower(),
        "model_id": model.model_id,
        "device": model.device,
        "dtype": model.dtype,
        "last_latency_s": f"{stats.last_latency:.4f}",
        "mean_latency_s": f"{stats.mean_latency:.4f}",
        "requests_served": str(stats.served),
        "requests_failed": str(stats.failed),
        "requests_rejected_busy": str(stats.busy),
        "frames_received": str(frames_received),
        "frames_dropped": str(frames_dropped),
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

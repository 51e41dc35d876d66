"""Per-clip figures to means: pooled over every clip, and per subset (task, layout seed, ...).

A figure is any per-clip value whose key ends in one of :data:`METRIC_SUFFIXES`; a clip that
has no value for a key (a no-op clip has no swap score) does not count in that key's mean.
PSNR is capped at :data:`PSNR_CAP_DB` per clip before any mean or difference, so that an
identical pair (infinite PSNR, e.g. the copy-input baseline of a clip whose last frame equals
its first) cannot swamp it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PSNR_CAP_DB = 100.0
METRIC_SUFFIXES = ("_psnr", "_ssim", "_accuracy", "_margin", "_fraction")


def capped(value: float) -> float:
    """Cap a PSNR in dB at :data:`PSNR_CAP_DB`."""
    return min(value, PSNR_CAP_DB)


def pooled(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean of each figure over the rows that have it, in the order the keys first appear."""
    values: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        for key, value in row.items():
            if key.endswith(METRIC_SUFFIXES) and value is not None:
                values[key].append(float(value))
    return {key: float(np.mean(found)) for key, found in values.items()}


def breakdown(rows: Sequence[Mapping[str, Any]], field: str) -> dict[str, dict[str, float]]:
    """Pooled figures per value of ``field`` (rows without one are left out), with clip counts.

    Returns:
        ``{str(value): {"num_samples": clips, **pooled figures}}``, sorted by value.

    """
    groups: dict[Any, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get(field) is not None:
            groups[row[field]].append(row)
    return {
        str(value): {"num_samples": len(groups[value]), **pooled(groups[value])}
        for value in sorted(groups)
    }

"""Torch dataset of manifest clips: stage-2 clips or stage-1 (source, target) pairs.

Randomness comes from a generator seeded with ``(seed, index, epoch)``, so a sample does not
depend on which DataLoader worker loads it, nor on the order of loading. Call
:meth:`ClipDataset.set_epoch` before each epoch (workers copy the dataset when an iterator is
created, so set it before iterating).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from training.data.clips import (
    ClipError,
    even_indices,
    pair_indices,
    read_clip,
    resize_center_crop,
)
from training.data.flow import flow_cache_path
from training.data.manifest import ClipRecord, format_counts, read_manifest

log = logging.getLogger(__name__)
# Extra key of the generator that picks a sample's phrasing, so the choice of phrasing does not
# change which frames are drawn.
PHRASING_STREAM = 1
Mode = Literal["clip", "pair"]


@dataclass
class SkipReport:
    """Clips that could not be used, counted by reason (``missing``, ``corrupt``, ``short``)."""

    total: int
    usable: int
    skipped: Counter[str]

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        reasons = format_counts(self.skipped)
        return [f"usable clips: {self.usable} of {self.total}", f"skipped: {reasons}"]


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``(3, T, H, W)`` float32 in [-1, 1]."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)
    return video.float().div_(127.5).sub_(1.0)


class ClipDataset(Dataset):
    """Clips of a JSONL manifest, decoded with OpenCV (or numpy for ``.npz``).

    Args:
        manifest: path of the JSONL manifest.
        split: keep only this split (``None``: all).
        mode: ``"clip"`` gives ``video`` ``(3, frames, H, W)`` spread evenly over the clip;
            ``"pair"`` gives ``source`` and ``target`` ``(3, 1, H, W)``: source among the
            first ``first_k`` frames, target among the last ``last_m``.
        frames: frames per stage-2 clip.
        size: training resolution, an int or ``(height, width)``.
        first_k: frames the stage-1 source is drawn from.
        last_m: frames the stage-1 target is drawn from.
        seed: base seed of the per-sample generators (frames and, for a clip with alternative
            phrasings, which phrasing is given).
        latent_factor: pixels per latent cell, to find cached flow magnitudes.

    A clip that turns out missing, corrupt or too short is skipped: the next clip is
    returned instead and the reason counted in ``skipped`` (per process). :meth:`check` finds
    such clips up front and drops them.

    """

    def __init__(
        self,
        manifest: str | Path,
        split: str | None = None,
        mode: Mode = "clip",
        frames: int = 16,
        size: int | tuple[int, int] = 64,
        first_k: int = 2,
        last_m: int = 3,
        seed: int = 0,
        latent_factor: int = 8,
    ) -> None:
        if mode not in ("clip", "pair"):
            raise ValueError(f"mode must be 'clip' or 'pair', got {mode!r}")
        self.root = Path(manifest).parent
        self.records: list[ClipRecord] = read_manifest(manifest, split)
        if not self.records:
            raise ValueError(f"{manifest}: no clips" + (f" in split {split!r}" if split else ""))
        self.mode, self.frames, self.seed = mode, frames, seed
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.first_k, self.last_m = first_k, last_m
        self.latent = (self.size[0] // latent_factor, self.size[1] // latent_factor)
        self.epoch = 0
        self.skipped: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch that seeds the per-sample generators."""
        self.epoch = epoch

    def check(self, progress: bool = False) -> SkipReport:
        """Read every clip once, drop the unusable ones and report them."""
        from tqdm import tqdm

        total, kept, skipped = len(self.records), [], Counter()
        for index, record in enumerate(tqdm(self.records, disable=not progress, desc="check")):
            try:
                self._load(index, record)
            except ClipError as err:
                skipped[err.reason] += 1
                continue
            kept.append(record)
        if not kept:
            raise ValueError("no usable clip in the manifest")
        self.records = kept
        return SkipReport(total, len(kept), skipped)

    def __getitem__(self, index: int) -> dict[str, Any]:
        for attempt in range(len(self.records)):
            position = (index + attempt) % len(self.records)
            try:
                return self._load(position, self.records[position])
            except ClipError as err:
                self.skipped[err.reason] += 1
                log.warning("skipping clip %s: %s", self.records[position].id, err)
        raise RuntimeError("no usable clip in the manifest")

    def _load(self, index: int, record: ClipRecord) -> dict[str, Any]:
        path = record.resolve(self.root)
        phrasings = record.phrasings
        phrasing = np.random.default_rng([self.seed, index, self.epoch, PHRASING_STREAM])
        instruction = phrasings[int(phrasing.integers(len(phrasings)))]
        sample: dict[str, Any] = {"id": record.id, "instruction": instruction}
        if self.mode == "pair":
            rng = np.random.default_rng([self.seed, index, self.epoch])
            chosen: list[int] = []

            def choose_pair(n: int) -> list[int]:
                chosen.extend(pair_indices(n, self.first_k, self.last_m, rng))
                return chosen

            pixels = resize_center_crop(
                read_clip(path, choose_pair, record.start, record.end), *self.size
            )
            video = to_tensor(pixels)
            sample.update(
                source=video[:, :1], target=video[:, 1:], frame_stride=chosen[1] - chosen[0]
            )
            return sample
        stride: list[int] = []

        def choose_even(n: int) -> list[int]:
            indices, step = even_indices(n, self.frames)
            stride.append(step)
            return indices

        pixels = resize_center_crop(
            read_clip(path, choose_even, record.start, record.end), *self.size
        )
        sample.update(video=to_tensor(pixels), frame_stride=stride[0])
        flow = flow_cache_path(path, self.frames, *self.latent)
        if flow.exists():
            sample["flow"] = torch.from_numpy(np.load(flow).astype(np.float32))
        return sample

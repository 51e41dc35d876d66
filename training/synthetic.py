"""Synthetic clips of a moving square, with their exact optical-flow magnitudes.

For tests and benchmarks: no files, deterministic per index, and items in the same layout as the
real loader's (``training.data``), so every training mode runs without a dataset on disk.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

INSTRUCTIONS = ("move the square right", "move the square down", "move the square left")
_DIRECTIONS = ((0, 1), (1, 0), (0, -1))


class MovingSquares(Dataset):
    """Clips ``(3, T, H, W)`` in ``[-1, 1]``: a coloured square moving on a coloured background.

    Args:
        size: Number of clips.
        resolution: Frame height and width.
        num_frames: Frames per clip.
        pairs: Yield stage-1 pairs (``source`` first frame, ``target`` last frame) instead of clips.
        seed: Base seed; clip ``i`` depends only on ``seed`` and ``i``.

    """

    def __init__(
        self, size: int, resolution: int, num_frames: int, pairs: bool = False, seed: int = 0
    ) -> None:
        if size < 1 or resolution < 8 or num_frames < 1:
            raise ValueError("need size >= 1, resolution >= 8 and num_frames >= 1")
        self.size, self.resolution, self.num_frames = size, resolution, num_frames
        self.pairs, self.seed = pairs, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        g = torch.Generator().manual_seed(self.seed * 100_003 + index)
        res, frames = self.resolution, self.num_frames
        side = res // 4
        direction = int(torch.randint(len(_DIRECTIONS), (1,), generator=g))
        speed = max(1, (res - side) // (2 * max(frames - 1, 1)))
        background = torch.rand(3, generator=g) * 2 - 1
        colour = torch.rand(3, generator=g) * 2 - 1
        dy, dx = _DIRECTIONS[direction]
        y0 = res // 2 - side // 2 - dy * speed * (frames - 1) // 2
        x0 = res // 2 - side // 2 - dx * speed * (frames - 1) // 2
        video = background.view(3, 1, 1, 1).repeat(1, frames, res, res)
        flow = torch.zeros(max(frames - 1, 0), res, res)
        for f in range(frames):
            y, x = y0 + dy * speed * f, x0 + dx * speed * f
            video[:, f, y : y + side, x : x + side] = colour.view(3, 1, 1)
            if f < frames - 1:
                flow[f, y : y + side, x : x + side] = float(speed)  # forward flow of the square
        item: dict[str, Any] = {"instruction": INSTRUCTIONS[direction], "frame_stride": 1}
        if self.pairs:
            item.update(source=video[:, 0], target=video[:, -1])
        else:
            item.update(video=video, flow=flow)
        return item

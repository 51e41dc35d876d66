"""A resumable, layout-independent order of training samples.

Samples are drawn from an endless stream: draw ``d`` is item ``perm_e[d % N]`` of epoch
``e = d // N``, where ``perm_e`` is a seeded permutation. A run's data position is the number of
draws consumed, so resuming continues the stream exactly, and every per-sample random choice
(noise, timestep, guidance dropout) is seeded by the draw id. One process with batch ``2B`` and two
processes with batch ``B`` therefore see the same samples with the same noise.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

_SEED_MASK = (1 << 63) - 1
# Integer salts (tuples of ints hash identically in every process; strings would not).
_SAMPLE_SALT, _EPOCH_SALT = 1, 2


def _seed(*values: int) -> int:
    return hash(values) & _SEED_MASK


def sample_generator(seed: int, draw_id: int) -> torch.Generator:
    """Return a CPU generator seeded by the run seed and the draw id, the same in any process."""
    return torch.Generator().manual_seed(_seed(seed, draw_id, _SAMPLE_SALT))


class StreamDataset(Dataset):
    """Maps draw ids to items of ``base`` in a seeded per-epoch permutation.

    Items must be dicts; the draw id is added under ``"draw_id"``. A ``base`` with a
    ``set_epoch`` method (per-epoch sample randomness) is told the epoch of each draw.
    """

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base = base
        self.seed = seed
        self.size = len(base)
        if self.size == 0:
            raise ValueError("the training dataset is empty")
        self._perm: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.size

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            generator = torch.Generator().manual_seed(_seed(self.seed, epoch, _EPOCH_SALT))
            self._perm = (epoch, torch.randperm(self.size, generator=generator))
        return self._perm[1]

    def __getitem__(self, draw_id: int) -> dict[str, Any]:
        epoch, position = divmod(int(draw_id), self.size)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)
        item = dict(self.base[int(self._permutation(epoch)[position])])
        item["draw_id"] = int(draw_id)
        return item


class StreamBatchSampler(Sampler[list[int]]):
    """Endless micro-batches of draw ids for one process, starting at a data position.

    Each micro-step consumes ``batch_size * num_processes`` draws; process ``rank`` takes the
    ``rank``-th contiguous block of ``batch_size`` of them.
    """

    def __init__(self, start: int, batch_size: int, num_processes: int = 1, rank: int = 0) -> None:
        if not 0 <= rank < num_processes:
            raise ValueError(f"rank {rank} outside 0..{num_processes - 1}")
        self.start = start
        self.batch_size = batch_size
        self.num_processes = num_processes
        self.rank = rank

    def __iter__(self) -> Iterator[list[int]]:
        position = self.start + self.rank * self.batch_size
        while True:
            yield list(range(position, position + self.batch_size))
            position += self.batch_size * self.num_processes

"""JSONL clip manifests: one JSON object per line, one clip per object.

Fields of a record:

- ``id``: unique clip name.
- ``path``: the clip, relative to the manifest's folder (or absolute): a video file OpenCV can
  decode (``.mp4``, ``.webm``, ...), a folder of frame images (sorted by name), or a ``.npz``
  holding ``frames`` as ``(T, H, W, 3)`` uint8 RGB (the Meta-World generator writes these).
- ``instruction``: the text instruction.
- ``alternatives``: optional other phrasings of the same instruction; a training data set draws
  one of ``[instruction, *alternatives]`` per sample.
- ``split``: ``train``, ``val`` or ``test``.
- ``source``: the data set the clip came from (``ssv2``, ``epic100``, ``metaworld``, ...).
- ``start`` / ``end``: optional frame range of the clip inside the file (``end`` exclusive).
- ``meta``: free-form extra information (task, scene id, seed, ...).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SPLITS = ("train", "val", "test")


@dataclass
class ClipRecord:
    """One line of a manifest."""

    id: str
    path: str
    instruction: str
    split: str = "train"
    source: str = "unknown"
    start: int | None = None
    end: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    alternatives: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"clip {self.id!r}: split must be one of {SPLITS}, got {self.split!r}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"clip {self.id!r}: end ({self.end}) must exceed start ({self.start})")

    @property
    def phrasings(self) -> list[str]:
        """The instruction followed by its alternative phrasings."""
        return [self.instruction, *self.alternatives]

    def resolve(self, root: Path) -> Path:
        """Return the clip's path, relative paths taken from ``root``."""
        path = Path(self.path)
        return path if path.is_absolute() else root / path


def write_manifest(path: str | Path, records: Iterable[ClipRecord]) -> int:
    """Write records as JSONL and return how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
            count += 1
    return count


def iter_manifest(path: str | Path) -> Iterator[ClipRecord]:
    """Yield the records of a JSONL manifest; a malformed line raises with its line number."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield ClipRecord(**json.loads(line))
            except (json.JSONDecodeError, TypeError, ValueError) as err:
                raise ValueError(f"{path}:{number}: bad manifest line: {err}") from err


def read_manifest(path: str | Path, split: str | None = None) -> list[ClipRecord]:
    """Read a manifest, optionally keeping one split."""
    records = list(iter_manifest(path))
    return records if split is None else [r for r in records if r.split == split]


def format_counts(counts: Mapping[str, int]) -> str:
    """Render counts as ``"a 3, b 1"`` (sorted by name) for summaries, ``"none"`` when empty."""
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none"

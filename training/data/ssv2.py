"""Something-Something v2 to manifest, keeping the 112 templates of ``ssv2_templates.json``.

Input: SSv2's label folder (``train.json``, ``validation.json``: lists of ``{"id", "label",
"template", ...}``) and its video folder (``<id>.webm``). Train clips come from
``train.json``; ``test_clips`` clips drawn from the kept validation clips form the test split
(the paper reports 112,321 training and 2,048 test clips) and the other kept validation clips
the val split. The instruction is the clip's filled-in label ("putting a pen into a cup").
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.data.clips import ClipError, even_indices, read_clip
from training.data.manifest import ClipRecord, format_counts, write_manifest

TEMPLATES_FILE = Path(__file__).with_name("ssv2_templates.json")
VIDEO_SUFFIXES = (".webm", ".mp4")


def normalize_template(template: str) -> str:
    """Lower-case a template, drop brackets: ``Putting [something]`` -> ``putting something``."""
    return template.replace("[", "").replace("]", "").strip().lower()


def load_templates(path: Path = TEMPLATES_FILE) -> list[dict]:
    """Return all 174 templates, each with ``keep`` and ``reason``."""
    return json.loads(path.read_text())["templates"]


def kept_templates(path: Path = TEMPLATES_FILE) -> set[str]:
    """Return the normalized templates kept for training."""
    return {normalize_template(t["template"]) for t in load_templates(path) if t["keep"]}


@dataclass
class ConversionReport:
    """Counts of a conversion."""

    splits: Counter[str] = field(default_factory=Counter)
    excluded_template: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    out: Path | None = None

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        splits = format_counts(self.splits)
        skipped = format_counts(self.skipped)
        return [
            f"clips written: {sum(self.splits.values())} ({splits})",
            f"clips of excluded templates: {self.excluded_template}",
            f"videos skipped: {skipped}",
            f"manifest: {self.out}",
        ]


def _find_video(videos: Path, clip_id: str) -> Path | None:
    for suffix in VIDEO_SUFFIXES:
        path = videos / f"{clip_id}{suffix}"
        if path.exists():
            return path
    return None


def convert_ssv2(
    labels: Path,
    videos: Path,
    out: Path,
    test_clips: int = 2048,
    seed: int = 0,
    check_videos: bool = False,
    min_frames: int = 16,
) -> ConversionReport:
    """Write a manifest of the kept SSv2 clips and report the counts.

    Args:
        labels: folder with ``train.json`` and ``validation.json``.
        videos: folder with ``<id>.webm`` (or ``.mp4``).
        out: manifest to write.
        test_clips: clips drawn (with ``seed``) from the kept validation clips for testing.
        seed: seed of the test draw.
        check_videos: decode each video once; corrupt or too-short ones are skipped.
        min_frames: shortest usable video when checking.

    """
    from tqdm import tqdm

    keep = kept_templates()
    report = ConversionReport(out=out)
    records: list[ClipRecord] = []
    for file, split in (("train.json", "train"), ("validation.json", "val")):
        path = labels / file
        if not path.exists():
            raise FileNotFoundError(f"SSv2 label file not found: {path}")
        items = json.loads(path.read_text())
        kept: list[ClipRecord] = []
        for item in tqdm(items, desc=f"ssv2 {split}", unit="clip"):
            if normalize_template(item["template"]) not in keep:
                report.excluded_template += 1
                continue
            video = _find_video(videos, str(item["id"]))
            if video is None:
                report.skipped["missing"] += 1
                continue
            if check_videos:
                try:
                    read_clip(video, lambda n: even_indices(n, min_frames)[0])
                except ClipError as err:
                    report.skipped[err.reason] += 1
                    continue
            kept.append(
                ClipRecord(
                    id=str(item["id"]),
                    path=str(video.resolve()),
                    instruction=item["label"],
                    split=split,
                    source="ssv2",
                    meta={"template": item["template"]},
                )
            )
        if split == "val":
            rng = np.random.default_rng(seed)
            chosen = rng.choice(len(kept), size=min(test_clips, len(kept)), replace=False)
            for i in chosen:
                kept[i].split = "test"
        records.extend(kept)
    report.splits.update(r.split for r in records)
    write_manifest(out, records)
    return report

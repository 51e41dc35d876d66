"""EPIC-KITCHENS-100 curation by dual similarity (the paper's appendix A.2).

For each narrated action clip, 16 frames are sampled evenly. Each of the last 8 is scored by
CLIP similarity to the narration times DINO similarity to the first frame; the best frame
becomes the clip's target (the clip is cut there) if its score exceeds the threshold (0.1),
otherwise the clip is dropped as misaligned or as a scene change. CLIP and DINO are loaded
from local folders through transformers (e.g. ``openai/clip-vit-large-patch14`` and
``facebook/dinov2-base`` saved with ``save_pretrained``); nothing is downloaded.

Input: EPIC's annotation CSV (``narration_id``, ``narration`` columns) and a folder of
per-action clips ``<narration_id>.mp4``.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from training.data.clips import ClipError, even_indices, read_clip
from training.data.manifest import ClipRecord, format_counts, write_manifest

SAMPLED_FRAMES = 16
CANDIDATES = 8


def select_target(
    text_similarity: np.ndarray, first_frame_similarity: np.ndarray, threshold: float = 0.1
) -> tuple[int | None, float]:
    """Pick the candidate frame with the best product of the two similarities.

    Args:
        text_similarity: ``(N,)`` CLIP similarity of the narration to each candidate frame.
        first_frame_similarity: ``(N,)`` DINO similarity of the first frame to each candidate.
        threshold: the best score must exceed it.

    Returns:
        The candidate's position (``None`` when below the threshold) and its score.

    """
    text_similarity = np.asarray(text_similarity, dtype=np.float64)
    first_frame_similarity = np.asarray(first_frame_similarity, dtype=np.float64)
    if text_similarity.shape != first_frame_similarity.shape or text_similarity.ndim != 1:
        raise ValueError("similarities must be two 1-D arrays of the same length")
    scores = text_similarity * first_frame_similarity
    best = int(np.argmax(scores))
    score = float(scores[best])
    return (best if score > threshold else None), score


def cosine_to(reference: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of ``reference`` ``(D,)`` to each row of ``others`` ``(N, D)``."""
    return torch.nn.functional.cosine_similarity(others, reference[None], dim=-1)


class DualSimilarity:
    """CLIP text-image and DINO image-image similarities from local transformers models."""

    def __init__(self, clip_path: Path, dino_path: Path, device: str = "cpu") -> None:
        from transformers import AutoImageProcessor, AutoModel, CLIPModel, CLIPProcessor

        for path in (clip_path, dino_path):
            if not Path(path).is_dir():
                raise FileNotFoundError(f"model folder not found: {path}")
        self.device = torch.device(device)
        self.clip = CLIPModel.from_pretrained(clip_path, local_files_only=True).eval()
        self.clip_processor = CLIPProcessor.from_pretrained(clip_path, local_files_only=True)
        self.dino = AutoModel.from_pretrained(dino_path, local_files_only=True).eval()
        self.dino_processor = AutoImageProcessor.from_pretrained(dino_path, local_files_only=True)
        self.clip.to(self.device)
        self.dino.to(self.device)

    @torch.no_grad()
    def text_to_frames(self, text: str, frames: np.ndarray) -> np.ndarray:
        """CLIP cosine similarity of ``text`` to each RGB frame of ``(N, H, W, 3)``."""
        inputs = self.clip_processor(
            text=[text], images=list(frames), return_tensors="pt", padding=True, truncation=True
        ).to(self.device)
        out = self.clip(**inputs)
        return cosine_to(out.text_embeds[0], out.image_embeds).cpu().numpy()

    @torch.no_grad()
    def first_to_frames(self, first: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """DINO (class token) cosine similarity of ``first`` to each frame of ``frames``."""
        inputs = self.dino_processor(images=[first, *frames], return_tensors="pt").to(self.device)
        tokens = self.dino(**inputs).last_hidden_state[:, 0]
        return cosine_to(tokens[0], tokens[1:]).cpu().numpy()


@dataclass
class CurationReport:
    """Counts of an EPIC curation run."""

    kept: int = 0
    below_threshold: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    out: Path | None = None

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        skipped = format_counts(self.skipped)
        return [
            f"clips kept: {self.kept}, dropped below threshold: {self.below_threshold}",
            f"videos skipped: {skipped}",
            f"manifest: {self.out}",
        ]


def curate_epic(
    annotations: Path,
    videos: Path,
    out: Path,
    clip_path: Path,
    dino_path: Path,
    split: str = "train",
    threshold: float = 0.1,
    device: str = "cpu",
) -> CurationReport:
    """Score every narrated clip, keep those whose best target exceeds ``threshold``."""
    from tqdm import tqdm

    scorer = DualSimilarity(clip_path, dino_path, device)
    report = CurationReport(out=out)
    records: list[ClipRecord] = []
    with annotations.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in tqdm(rows, desc="epic", unit="clip"):
        video = videos / f"{row['narration_id']}.mp4"
        picked: list[int] = []

        def choose(n: int, picked: list[int] = picked) -> list[int]:
            picked.extend(even_indices(n, SAMPLED_FRAMES)[0])
            return picked

        try:
            frames = read_clip(video, choose)
        except ClipError as err:
            report.skipped[err.reason] += 1
            continue
        candidates = frames[-CANDIDATES:]
        best, score = select_target(
            scorer.text_to_frames(row["narration"], candidates),
            scorer.first_to_frames(frames[0], candidates),
            threshold,
        )
        if best is None:
            report.below_threshold += 1
            continue
        end = picked[SAMPLED_FRAMES - CANDIDATES + best] + 1
        records.append(
            ClipRecord(
                id=row["narration_id"],
                path=str(video.resolve()),
                instruction=row["narration"],
                split=split,
                source="epic100",
                end=end,
                meta={"dual_similarity": round(score, 4)},
            )
        )
        report.kept += 1
    write_manifest(out, records)
    return report

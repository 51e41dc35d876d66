"""``showme-eval``: goal images and rollouts measured against what the simulator really did.

For each test clip the model gets the clip's first frame and instruction. Image mode compares
the predicted goal image with the clip's true final frame; video mode compares the predicted
rollout with the true one (frame by frame, the true clip sampled evenly to the predicted length)
and its last frame with the true final frame. The copy-the-input-frame baseline gets the same
measurements. On scenes shared by opposite tasks (same start state, different instructions) the
instruction-swap accuracy checks that each prediction is closer to its own instruction's outcome
than to the other's. These figures are over the skill clips; no-op ("do nothing") clips get
their own (:mod:`training.metrics.noop`), and ``--off-arm`` adds the scene and the object
measured off the robot arm (:mod:`training.metrics.off_arm`). Every figure is pooled over the
clips and broken down per task, layout seed and opposite-task pair (Meta-World clips). Results
go to a JSON file and a markdown table next to it.

Sampler settings not given on the command line are the model folder's own
(``sampler_config.json``). Each clip's sampler noise is seeded from ``--seed`` and the clip's id,
so a clip gets the same prediction whatever the batch size or the other clips evaluated.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from tqdm import tqdm

from showme_model.sampler_config import REFERENCE_SAMPLER_CONFIG, SamplerConfig
from showme_model.schedulers import SCHEDULERS
from training.data.clips import ClipError, read_clip
from training.data.manifest import ClipRecord, read_manifest
from training.data.metaworld_gen import NOOP_TASK
from training.metrics import motion_score, psnr, ssim
from training.metrics.motion import SMOOTHNESS_MIN_FRAMES
from training.metrics.noop import noop_scores
from training.metrics.objects import FrameObjects, kept_fraction, kept_objects
from training.metrics.off_arm import off_arm_goal_scores, off_arm_swap_scores
from training.metrics.summary import breakdown, capped, pooled
from training.metrics.swap import swap_scores

if TYPE_CHECKING:
    import torch

    from showme_model.pipeline import ShowMePipeline

SCENE_KEY = "scene_id"
PHRASINGS = ("recorded", "train", "val", "eval")
BREAKDOWNS = ("task", "layout_seed", "pair")

Predictor = Callable[[list[np.ndarray], list[str], list[int]], list[np.ndarray]]
"""Maps first frames (uint8 HxWx3), instructions and per-clip seeds to predicted frames (uint8
TxHxWx3 each)."""
Reconstructor = Callable[[list[np.ndarray]], list[np.ndarray]]
"""Maps frames (uint8 HxWx3) to the model autoencoder's reconstructions of them (same size)."""


def clip_seed(seed: int, clip_id: str) -> int:
    """Sampler seed of one clip: a stable 63-bit hash of the run seed and the clip id."""
    digest = hashlib.blake2b(f"{seed}/{clip_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@dataclass
class EvalSample:
    """One test clip: what the model is given and what really happened."""

    id: str
    instruction: str
    scene: str | None
    frames: np.ndarray
    record: ClipRecord | None = None

    @property
    def meta(self) -> dict[str, Any]:
        """The manifest's metadata of the clip."""
        return {} if self.record is None else self.record.meta

    @property
    def is_noop(self) -> bool:
        """Whether the instruction is a "do nothing" one (a Meta-World no-op clip)."""
        return self.meta.get("task") == NOOP_TASK

    def labels(self) -> dict[str, Any]:
        """Return the subsets of the clip: task, layout seed and opposite-task pair (or None)."""
        task, opposite = self.meta.get("task"), self.meta.get("opposite")
        return {
            "task": task,
            "layout_seed": self.meta.get("seed"),
            "pair": "/".join(sorted((task, opposite))) if task and opposite else None,
        }

    @property
    def first(self) -> np.ndarray:
        """The conditioning frame."""
        return self.frames[0]

    @property
    def final(self) -> np.ndarray:
        """The true outcome."""
        return self.frames[-1]


def _scene_of(record: ClipRecord) -> str | None:
    scene = record.meta.get(SCENE_KEY)
    return None if scene is None else str(scene)


def select_records(records: Sequence[ClipRecord], limit: int | None) -> list[ClipRecord]:
    """Keep about ``limit`` clips, whole scenes at a time so that swap pairs stay complete."""
    groups: dict[str, list[ClipRecord]] = defaultdict(list)
    for record in records:
        groups[_scene_of(record) or f"clip:{record.id}"].append(record)
    chosen: list[ClipRecord] = []
    for group in groups.values():
        if limit is not None and len(chosen) >= limit:
            break
        chosen.extend(group)
    return chosen


def rephrase(record: ClipRecord, phrasings: str) -> str:
    """Choose the instruction to give for a clip.

    Args:
        record: The clip; ``recorded`` keeps its instruction (the Meta-World generator already
            uses evaluation-only phrasings for val/test clips).
        phrasings: ``recorded``, or ``train`` / ``val`` / ``eval`` to pick one phrasing of
            the clip's ``meta["task"]`` from that set of the Meta-World task table (the same
            one for the same clip every run). ``val`` phrasings are in no clip: they are for
            choosing settings, so that the evaluation-only ones stay unseen until reported.

    """
    if phrasings == "recorded":
        return record.instruction
    if phrasings not in PHRASINGS:
        raise ValueError(f"phrasings must be one of {PHRASINGS}, got {phrasings!r}")
    from training.data.metaworld_gen import load_tasks

    table = load_tasks()[1]
    task = record.meta.get("task")
    if task not in table:
        raise ValueError(f"clip {record.id!r}: no Meta-World task {task!r} to rephrase")
    pool = table[task][phrasings]
    return pool[zlib.crc32(record.id.encode()) % len(pool)]


def load_samples(
    manifest: str | Path, split: str, limit: int | None = None, phrasings: str = "recorded"
) -> tuple[list[EvalSample], dict[str, int]]:
    """Read the clips of one split; unreadable clips are skipped and counted by reason."""
    manifest = Path(manifest)
    records = select_records(read_manifest(manifest, split=split), limit)
    if not records:
        raise ValueError(f"{manifest} has no clips in split {split!r}")
    instructions = {record.id: rephrase(record, phrasings) for record in records}
    samples, skipped = [], defaultdict(int)
    for record in tqdm(records, desc="reading clips", unit="clip"):
        try:
            frames = read_clip(
                record.resolve(manifest.parent), lambda n: list(range(n)), record.start, record.end
            )
        except ClipError as error:
            skipped[error.reason] += 1
            continue
        if len(frames) < 2:
            skipped["short"] += 1
            continue
        samples.append(
            EvalSample(record.id, instructions[record.id], _scene_of(record), frames, record)
        )
    return samples, dict(skipped)


def _fit(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize predicted frames (T, h, w, 3) to the ground truth's size when they differ."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])


def _even_indices(count: int, length: int) -> list[int]:
    """Return the indices of ``length`` frames spread evenly over ``count``, the last one last.

    One frame is the last (a goal image predicts the final frame).
    """
    if length == 1:
        return [count - 1]
    return [int(i) for i in np.rint(np.linspace(0, count - 1, length))]


def _even(frames: np.ndarray, length: int) -> np.ndarray:
    return frames[_even_indices(len(frames), length)]


def _video_scores(prediction: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    truth = _even(truth, len(prediction))
    pairs = list(zip(prediction, truth, strict=True))
    return (
        float(np.mean([capped(psnr(p, t)) for p, t in pairs])),
        float(np.mean([ssim(p, t) for p, t in pairs])),
    )


def predict_all(
    samples: Sequence[EvalSample], predictor: Predictor, batch_size: int, seed: int = 0
) -> list[np.ndarray]:
    """Run the predictor over all samples in batches (clip ``c`` seeded ``clip_seed(seed, c)``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    predictions: list[np.ndarray] = []
    with tqdm(total=len(samples), desc="predicting", unit="clip") as bar:
        for start in range(0, len(samples), batch_size):
            batch = samples[start : start + batch_size]
            outputs = predictor(
                [s.first for s in batch],
                [s.instruction for s in batch],
                [clip_seed(seed, s.id) for s in batch],
            )
            if len(outputs) != len(batch):
                raise RuntimeError(f"predictor returned {len(outputs)} outputs for {len(batch)}")
            for sample, output in zip(batch, outputs, strict=True):
                output = np.asarray(output)
                if output.ndim == 3:
                    output = output[None]
                if output.ndim != 4 or output.dtype != np.uint8:
                    raise RuntimeError(f"prediction must be uint8 (T, H, W, 3), got {output.shape}")
                predictions.append(_fit(output, *sample.final.shape[:2]))
            bar.update(len(batch))
    return predictions


def _swap_groups(samples: Sequence[EvalSample]) -> list[list[int]]:
    """Group the skill clips (indices) of each scene given at least two instructions."""
    scenes: dict[str, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        if sample.scene is not None and not sample.is_noop:
            scenes[sample.scene].append(index)
    return [group for group in scenes.values() if len(group) >= 2]


def _noop_layouts(samples: Sequence[EvalSample]) -> list[tuple[int, list[int]]]:
    """``(no-op clip, skill clips)`` indices of each scene layout that has a no-op clip."""
    layouts: dict[str, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        if sample.meta.get("start_of") is not None:
            layouts[sample.meta["start_of"]].append(index)
    found = []
    for layout, group in layouts.items():
        noops = [index for index in group if samples[index].is_noop]
        if len(noops) > 1:
            raise ValueError(f"layout {layout!r} has {len(noops)} no-op clips, expected one")
        if noops:
            found.append((noops[0], [index for index in group if not samples[index].is_noop]))
    return found


def _clip_scores(sample: EvalSample, prediction: np.ndarray, mode: str) -> dict[str, float]:
    """Goal image (and rollout) of one skill clip against the truth and the copy-input baseline."""
    scores = {
        "goal_psnr": capped(psnr(prediction[-1], sample.final)),
        "goal_ssim": ssim(prediction[-1], sample.final),
        "baseline_goal_psnr": capped(psnr(sample.first, sample.final)),
        "baseline_goal_ssim": ssim(sample.first, sample.final),
    }
    if mode == "video":
        still = np.repeat(sample.first[None], len(prediction), axis=0)
        scores["video_psnr"], scores["video_ssim"] = _video_scores(prediction, sample.frames)
        scores["baseline_video_psnr"], scores["baseline_video_ssim"] = _video_scores(
            still, sample.frames
        )
    return scores


def _add_swap_scores(
    rows: list[dict[str, Any]],
    samples: Sequence[EvalSample],
    goals: Sequence[np.ndarray],
    groups: Sequence[list[int]],
    arm_masks: Sequence[np.ndarray | None] | None,
    reconstructions: Sequence[np.ndarray | None] | None = None,
) -> None:
    """Add each swap-scene clip's swap score (and off the arm, given the masks) to its row.

    With the reconstructions as well, the off-arm swap score of the autoencoder's reconstruction
    of each true final frame is added as the ceiling: a model whose latents were exactly right
    scores that, since every prediction passes through the decoder.
    """
    for group in groups:
        scene = [(goals[index], samples[index].final) for index in group]
        for index, score in zip(group, swap_scores([scene])[0], strict=True):
            rows[index]["swap_accuracy"] = score
        if arm_masks is None:
            continue
        off_arm = {"off_arm_swap_accuracy": [goals[index] for index in group]}
        if reconstructions is not None and all(
            reconstructions[index] is not None for index in group
        ):
            off_arm["ceiling_off_arm_swap_accuracy"] = [reconstructions[index] for index in group]
        for field, predicted in off_arm.items():
            masked = [
                (prediction, samples[index].final, arm_masks[index])
                for index, prediction in zip(group, predicted, strict=True)
            ]
            for index, score in zip(group, off_arm_swap_scores(masked), strict=True):
                rows[index][field] = score


def _add_noop_scores(
    rows: list[dict[str, Any]], samples: Sequence[EvalSample], goals: Sequence[np.ndarray]
) -> None:
    """Add the no-op figures of each layout with a no-op clip to its clips' rows."""
    for noop, group in _noop_layouts(samples):
        skill_pairs = [(goals[index], samples[index].final) for index in group]
        noop_row, skill_rows = noop_scores(samples[noop].first, goals[noop], skill_pairs)
        rows[noop].update(noop_row)
        for index, scores in zip(group, skill_rows, strict=True):
            rows[index].update(scores)


def _add_object_scores(
    rows: list[dict[str, Any]],
    samples: Sequence[EvalSample],
    predictions: Sequence[np.ndarray],
    objects: Sequence[list[FrameObjects] | None],
    reconstructions: Sequence[np.ndarray | None] | None,
) -> dict[str, dict[str, float]]:
    """Add which objects of the input each skill clip's prediction keeps; return them per object.

    A clip's row gets ``objects_kept_fraction`` (its goal image), ``vanished_objects`` (their
    names), with a reconstruction ``ceiling_objects_kept_fraction`` (the autoencoder's
    reconstruction of the true final frame) and, for a rollout, ``rollout_objects_kept_fraction``
    (objects kept in every frame where they are measured).
    """
    per_object: dict[str, list[tuple[bool, bool | None]]] = defaultdict(list)
    for index, sample in enumerate(samples):
        renders = objects[index]
        if sample.is_noop or renders is None:
            continue
        prediction, start = predictions[index], renders[0]
        if len(renders) != len(prediction) + 1:
            raise ValueError(f"clip {sample.id}: need the input's and each frame's objects")
        truths = _even(sample.frames, len(prediction))
        frames_kept = [
            kept_objects(image, sample.first, truth, start, now)
            for image, truth, now in zip(prediction, truths, renders[1:], strict=True)
        ]
        kept = frames_kept[-1]
        row = rows[index]
        row["objects_kept_fraction"] = kept_fraction(kept)
        row["vanished_objects"] = sorted(name for name, found in kept.items() if not found)
        ceiling: dict[str, bool] = {}
        if reconstructions is not None and reconstructions[index] is not None:
            ceiling = kept_objects(
                reconstructions[index], sample.first, sample.final, start, renders[-1]
            )
            row["ceiling_objects_kept_fraction"] = kept_fraction(ceiling)
        if len(prediction) > 1:
            names = {name for frame in frames_kept for name in frame}
            throughout = {name: all(f.get(name, True) for f in frames_kept) for name in names}
            row["rollout_objects_kept_fraction"] = kept_fraction(throughout)
        for name, found in kept.items():
            per_object[name].append((found, ceiling.get(name)))
    summary = {}
    for name, found in sorted(per_object.items()):
        figures = {"measured": len(found), "kept_fraction": float(np.mean([k for k, _ in found]))}
        ceilings = [c for _, c in found if c is not None]
        if ceilings:
            figures["ceiling_kept_fraction"] = float(np.mean(ceilings))
        summary[name] = figures
    return summary


def evaluate(
    samples: Sequence[EvalSample],
    predictions: Sequence[np.ndarray],
    mode: str,
    arm_masks: Sequence[np.ndarray | None] | None = None,
    reconstructions: Sequence[np.ndarray | None] | None = None,
    objects: Sequence[list[FrameObjects] | None] | None = None,
) -> dict[str, object]:
    """Score predictions against the true clips, next to the copy-the-input-frame baseline.

    Goal, rollout, swap and motion figures are over the skill clips; no-op clips get the no-op
    figures (:mod:`training.metrics.noop`) of their layout.

    Args:
        samples: The test clips.
        predictions: One uint8 (T, H, W, 3) prediction per sample at the clips' size; in image
            mode T is 1 (the goal image), in video mode the last frame is the goal.
        mode: ``"image"`` or ``"video"``.
        arm_masks: Per sample, arm masks (T, H, W) whose first and last are the input's and
            the true final frame's (None for no-op clips): adds the off-arm figures
            (:mod:`training.metrics.off_arm`).
        reconstructions: Per sample, the model autoencoder's reconstruction of the true final
            frame (or None): adds the off-arm ceilings (PSNR and swap accuracy).
        objects: Per sample, the objects rendered at the input frame and at the true frame of
            each predicted frame (:func:`scene_renders`; None for no-op clips): adds which
            objects of the input the predictions keep (:mod:`training.metrics.objects`).

    Returns:
        ``summary`` (each figure's mean over the clips that have it, swap and motion scores),
        ``per_sample`` (each clip's figures and subsets) and ``breakdowns`` (the figures per
        task, layout seed and opposite-task pair).

    """
    if mode not in ("image", "video"):
        raise ValueError(f"mode must be 'image' or 'video', got {mode!r}")
    if len(samples) != len(predictions) or not samples:
        raise ValueError(f"need one prediction per sample, got {len(predictions)}/{len(samples)}")
    extras = (("arm_masks", arm_masks), ("reconstructions", reconstructions), ("objects", objects))
    for name, extra in extras:
        if extra is not None and len(extra) != len(samples):
            raise ValueError(f"need one of {name} per sample, got {len(extra)}/{len(samples)}")
    goals = [prediction[-1] for prediction in predictions]
    skills = [index for index, sample in enumerate(samples) if not sample.is_noop]
    rows: list[dict[str, Any]] = [
        {"id": s.id, "instruction": s.instruction, "scene": s.scene, **s.labels()} for s in samples
    ]
    for index in tqdm(skills, desc="scoring", unit="clip"):
        sample = samples[index]
        rows[index].update(_clip_scores(sample, predictions[index], mode))
        if arm_masks is not None:
            reconstruction = None if reconstructions is None else reconstructions[index]
            rows[index].update(
                off_arm_goal_scores(
                    goals[index], sample.first, sample.final, arm_masks[index], reconstruction
                )
            )
    groups = _swap_groups(samples)
    _add_swap_scores(rows, samples, goals, groups, arm_masks, reconstructions)
    _add_noop_scores(rows, samples, goals)
    kept_per_object = None
    if objects is not None:
        kept_per_object = _add_object_scores(rows, samples, predictions, objects, reconstructions)
    summary: dict[str, object] = {
        "mode": mode,
        "num_samples": len(rows),
        "num_noop_samples": len(rows) - len(skills),
        "swap_scenes": len(groups),
        "swap_accuracy": None,
        **pooled(rows),
    }
    if mode == "video" and skills:
        videos = [predictions[index] for index in skills]
        predicted = motion_score(videos)
        true = motion_score(
            [_even(samples[i].frames, len(video)) for i, video in zip(skills, videos, strict=True)]
        )
        for prefix, score in (("", predicted), ("true_", true)):
            summary[f"{prefix}dynamic_degree"] = score.dynamic_degree
            summary[f"{prefix}motion_smoothness"] = score.motion_smoothness
            summary[f"{prefix}motion_score"] = score.motion_score
    if kept_per_object is not None:
        summary["objects_kept"] = kept_per_object
    breakdowns = {field: breakdown(rows, field) for field in BREAKDOWNS}
    return {"summary": summary, "per_sample": rows, "breakdowns": breakdowns}


def add_feature_metrics(
    results: dict[str, object],
    samples: Sequence[EvalSample],
    predictions: Sequence[np.ndarray],
    clip: str | None = None,
    dino: str | None = None,
    lpips: tuple[str, str] | None = None,
    batch_size: int = 16,
) -> None:
    """Add CLIP-I, CLIP-T, DINO-I and LPIPS of the skill clips' goal images (and the baseline's).

    Args:
        results: What :func:`evaluate` returned; updated in place.
        samples: The test clips.
        predictions: The predictions, as given to :func:`evaluate`.
        clip: Local CLIP folder (CLIP-I against the true final frame, CLIP-T against the
            instruction).
        dino: Local DINO / DINOv2 folder (DINO-I against the true final frame).
        lpips: Local torchvision VGG-16 weights and LPIPS head weights.
        batch_size: Images per forward pass.

    """
    from training.metrics.features import ClipScorer, DinoScorer
    from training.metrics.lpips import LPIPS

    scorers = []
    if lpips:
        scorers.append(("lpips", LPIPS.from_files(*lpips).score, "final"))
    if clip:
        scorer = ClipScorer(clip)
        scorers += [("clip_i", scorer.clip_i, "final"), ("clip_t", scorer.clip_t, "text")]
    if dino:
        scorers.append(("dino_i", DinoScorer(dino).dino_i, "final"))
    skills = [index for index, sample in enumerate(samples) if not sample.is_noop]
    samples, predictions = [samples[i] for i in skills], [predictions[i] for i in skills]
    rows, summary = [results["per_sample"][i] for i in skills], results["summary"]
    for name, score, against in scorers:
        for prefix, images in (("", [p[-1] for p in predictions]), ("baseline_", None)):
            values: list[float] = []
            for start in tqdm(range(0, len(samples), batch_size), desc=prefix + name, unit="batch"):
                batch = samples[start : start + batch_size]
                inputs = images[start : start + batch_size] if images else [s.first for s in batch]
                refs = [s.instruction if against == "text" else s.final for s in batch]
                values += score(inputs, refs)
            for row, value in zip(rows, values, strict=True):
                row[prefix + name] = value
            summary[prefix + name] = float(np.mean(values))


_TABLE_ROWS = (
    ("goal-image PSNR (dB)", "goal_psnr", "baseline_goal_psnr"),
    ("goal-image SSIM", "goal_ssim", "baseline_goal_ssim"),
    ("rollout PSNR (dB)", "video_psnr", "baseline_video_psnr"),
    ("rollout SSIM", "video_ssim", "baseline_video_ssim"),
    ("CLIP-I", "clip_i", "baseline_clip_i"),
    ("CLIP-T", "clip_t", "baseline_clip_t"),
    ("DINO-I", "dino_i", "baseline_dino_i"),
    ("LPIPS (lower is better)", "lpips", "baseline_lpips"),
    ("instruction-swap accuracy", "swap_accuracy", None),
    ("off-arm goal-image PSNR (dB)", "off_arm_goal_psnr", "baseline_off_arm_goal_psnr"),
    ("off-arm PSNR ceiling: autoencoder reconstruction (dB)", "ceiling_off_arm_goal_psnr", None),
    ("off-arm instruction-swap accuracy", "off_arm_swap_accuracy", None),
    ("off-arm swap ceiling: autoencoder reconstruction", "ceiling_off_arm_swap_accuracy", None),
    ("share of pixels off the arm", "off_arm_fraction", None),
    ("objects of the input kept in the goal image", "objects_kept_fraction", None),
    ("objects kept: autoencoder reconstruction", "ceiling_objects_kept_fraction", None),
    ("objects kept in every rollout frame", "rollout_objects_kept_fraction", None),
    ("no-op prediction PSNR to the input (dB)", "noop_input_psnr", None),
    ("skill prediction PSNR to the input, no-op layouts (dB)", "skill_input_psnr", None),
    ("no-op minus skill PSNR to the input (dB)", "noop_input_margin", None),
    ("skill vs do-nothing choice accuracy", "noop_choice_accuracy", None),
    ("dynamic degree", "dynamic_degree", "true_dynamic_degree"),
    ("motion smoothness", "motion_smoothness", "true_motion_smoothness"),
    ("motion score", "motion_score", "true_motion_score"),
)
_SUBSET_COLUMNS = (
    ("clips", "num_samples"),
    ("goal PSNR", "goal_psnr"),
    ("copy-input", "baseline_goal_psnr"),
    ("swap", "swap_accuracy"),
    ("off-arm PSNR", "off_arm_goal_psnr"),
    ("off-arm copy-input", "baseline_off_arm_goal_psnr"),
    ("off-arm ceiling", "ceiling_off_arm_goal_psnr"),
    ("off-arm swap", "off_arm_swap_accuracy"),
    ("off-arm swap ceiling", "ceiling_off_arm_swap_accuracy"),
    ("objects kept", "objects_kept_fraction"),
    ("no-op PSNR to input", "noop_input_psnr"),
    ("no-op margin", "noop_input_margin"),
    ("skill vs no-op", "noop_choice_accuracy"),
)


def _cell(value: object) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def results_table(
    summary: dict[str, object], per_task: dict[str, dict[str, float]] | None = None
) -> str:
    """Render markdown tables: the pooled figures, objects kept per object, then per task.

    The pooled table sets the model next to its reference (copy-input baseline or true clips).
    """
    lines = [
        "| metric | model | copy-input baseline / true clips |",
        "| --- | --- | --- |",
    ]
    for name, model_key, reference_key in _TABLE_ROWS:
        if model_key in summary:
            reference = summary.get(reference_key) if reference_key else None
            lines.append(f"| {name} | {_cell(summary[model_key])} | {_cell(reference)} |")
    kept = summary.get("objects_kept")
    if kept:
        lines += ["", "| object | measured | kept | autoencoder ceiling |", "| --- " * 4 + "|"]
        for name, figures in kept.items():
            cells = [figures["kept_fraction"], figures.get("ceiling_kept_fraction")]
            lines.append(f"| {name} | {figures['measured']} | {' | '.join(map(_cell, cells))} |")
    if per_task:
        columns = [c for c in _SUBSET_COLUMNS if any(c[1] in row for row in per_task.values())]
        lines += [
            "",
            "| task | " + " | ".join(name for name, _ in columns) + " |",
            "| --- |" + " --- |" * len(columns),
        ]
        for task, figures in per_task.items():
            cells = " | ".join(_cell(figures.get(key)) for _, key in columns)
            lines.append(f"| {task} | {cells} |")
    return "\n".join(lines) + "\n"


def pipeline_predictor(pipeline: ShowMePipeline, mode: str, settings: SamplerConfig) -> Predictor:
    """Build a :data:`Predictor` on a loaded pipeline, which then samples with ``settings``.

    Args:
        pipeline: The model folder's pipeline.
        mode: ``"image"`` or ``"video"``.
        settings: The sampler settings (``num_frames`` is used in video mode).

    """
    import torch

    pipeline.sampler_config = settings

    def predict(
        images: list[np.ndarray], instructions: list[str], seeds: list[int]
    ) -> list[np.ndarray]:
        result = pipeline(
            images,
            instructions,
            mode=mode,
            generator=[torch.Generator().manual_seed(seed) for seed in seeds],
        )
        return [np.asarray(frames) for frames in result.frames]

    return predict


def pipeline_reconstructor(pipeline: ShowMePipeline) -> Reconstructor:
    """Build a :data:`Reconstructor` on the pipeline's autoencoder.

    A frame takes the predictions' path through the model without the denoiser: brought to
    the model's resolution as the pipeline brings its input, encoded (posterior mode), decoded,
    rounded to uint8 and resized back to the frame's size.
    """
    model = pipeline.model

    def round_trip(pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(pipeline.device, pipeline.dtype)
        return model.decode_latents(model.encode_latents(pixels)).float()

    return autoencoder_reconstructor(round_trip, pipeline.resolution)


def autoencoder_reconstructor(
    round_trip: Callable[[torch.Tensor], torch.Tensor], resolution: tuple[int, int]
) -> Reconstructor:
    """Build a :data:`Reconstructor` on an autoencoder's encode-decode round trip.

    Args:
        round_trip: Frames ``(B, 3, H, W)`` in ``[-1, 1]`` to their reconstructions, same layout.
        resolution: The autoencoder's frame size ``(H, W)``; frames are brought to it as the
            pipeline brings its input and the reconstructions resized back.

    """
    import torch

    from showme_model.preprocessing import prepare_image

    def reconstruct(images: list[np.ndarray]) -> list[np.ndarray]:
        pixels = torch.stack([prepare_image(image, resolution)[0] for image in images])
        with torch.inference_mode():
            decoded = round_trip(pixels)
        unit = ((decoded + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu()
        frames = (unit * 255.0).round().to(torch.uint8).numpy()
        return [_fit(f[None], *image.shape[:2])[0] for f, image in zip(frames, images, strict=True)]

    return reconstruct


def reconstruct_finals(
    samples: Sequence[EvalSample], reconstruct: Reconstructor, batch_size: int
) -> list[np.ndarray | None]:
    """Reconstruct each skill clip's true final frame with the autoencoder (None for no-ops)."""
    skills = [sample for sample in samples if not sample.is_noop]
    made: list[np.ndarray] = []
    for start in tqdm(range(0, len(skills), batch_size), desc="reconstructing", unit="batch"):
        batch = [sample.final for sample in skills[start : start + batch_size]]
        outputs = [np.asarray(output) for output in reconstruct(batch)]
        if [o.shape for o in outputs] != [f.shape for f in batch]:
            raise RuntimeError("the reconstructor must return one frame per frame, same shape")
        made += outputs
    found = iter(made)
    return [None if sample.is_noop else next(found) for sample in samples]


def scene_renders(
    samples: Sequence[EvalSample],
    predictions: Sequence[np.ndarray],
    root: str | Path,
    workers: int,
) -> list[list[FrameObjects] | None]:
    """Render the arm and objects of each skill clip at its input and each prediction's truth.

    Per skill clip, :func:`training.metrics.objects.clip_objects` at the first frame, then at
    the true frame of each predicted frame (the last one at the true final frame); None for
    no-op clips.

    Raises:
        ValueError: A clip is not a Meta-World generator clip or does not re-simulate exactly.

    """
    from training.metrics.objects import clip_objects

    skills = [i for i, sample in enumerate(samples) if not sample.is_noop]
    if any(samples[i].record is None for i in skills):
        raise ValueError("rendering a clip's objects needs its manifest record")
    frames = [[0, *_even_indices(len(samples[i].frames), len(predictions[i]))] for i in skills]
    renders = iter(clip_objects([samples[i].record for i in skills], root, frames, workers))
    return [None if sample.is_noop else next(renders) for sample in samples]


def goal_arm_masks(renders: Sequence[list[FrameObjects] | None]) -> list[np.ndarray | None]:
    """Arm masks ``(2, H, W)`` of the input and the true final frame, from :func:`scene_renders`."""
    return [None if r is None else np.stack([r[0].arm, r[-1].arm]) for r in renders]


def sampler_settings(args: argparse.Namespace) -> SamplerConfig:
    """Return the model's stored sampler settings (else the reference) with the options given."""
    folder = Path(args.model)
    stored = SamplerConfig.from_pretrained(folder) if folder.is_dir() else None
    return (stored or REFERENCE_SAMPLER_CONFIG).resolve(
        num_inference_steps=args.num_steps,
        guidance_scale=args.guidance_scale,
        eta=args.eta,
        scheduler=args.scheduler,
        num_frames=1 if args.mode == "image" else args.num_frames,
        frame_stride=args.frame_stride,
        keep_scene=args.keep_scene,
        keep_scene_low=args.keep_scene_low,
        keep_scene_high=args.keep_scene_high,
        keep_scene_radius=args.keep_scene_radius,
    )


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``showme-eval``."""
    parser = argparse.ArgumentParser(prog="showme-eval", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder")
    parser.add_argument("--manifest", required=True, help="JSONL clip manifest")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--mode", default="image", choices=("image", "video"))
    parser.add_argument("--out", default="results.json", help="results JSON (table: same .md)")
    parser.add_argument("--limit", type=int, default=None, help="about N clips, whole scenes")
    parser.add_argument(
        "--phrasings",
        default="recorded",
        choices=PHRASINGS,
        help="instructions: as recorded, or rephrased from the Meta-World task table's train, "
        "val (for choosing settings) or eval-only (for reporting) phrasing set",
    )
    stored = " (default: the model's sampler_config.json)"
    parser.add_argument("--num-frames", type=int, help="rollout length (video)" + stored)
    parser.add_argument(
        "--num-inference-steps",
        "--num-steps",
        dest="num_steps",
        type=int,
        help="denoising steps" + stored,
    )
    parser.add_argument("--guidance-scale", type=float, help="guidance scale" + stored)
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), help="sampler" + stored)
    parser.add_argument("--eta", type=float, help="DDIM noise scale" + stored)
    parser.add_argument(
        "--frame-stride", type=int, help="frame-stride condition (video mode)" + stored
    )
    parser.add_argument(
        "--keep-scene",
        action=argparse.BooleanOptionalAction,
        help="composite predictions over the input frame where they do not change it" + stored,
    )
    parser.add_argument(
        "--keep-scene-low", type=float, help="scene keeping's lower threshold" + stored
    )
    parser.add_argument(
        "--keep-scene-high", type=float, help="scene keeping's upper threshold" + stored
    )
    parser.add_argument(
        "--keep-scene-radius", type=int, help="scene keeping's mask radius, pixels" + stored
    )
    parser.add_argument(
        "--adapters",
        nargs="*",
        metavar="ROLE",
        help="adapter roles (manipulation, prediction) acting in --mode, none when given alone "
        "(default: the model folder's choice, mode_adapters.json, else the method's)",
    )
    parser.add_argument("--seed", type=int, default=0, help="run seed; each clip's is derived")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype",
        choices=("float32", "float16", "bfloat16"),
        default=None,
        help="weight dtype (default: the folder's variant, else as stored)",
    )
    parser.add_argument(
        "--merge-adapters",
        action="store_true",
        help="denoise with the mode's adapters merged into a UNet copy, as the ROS node does "
        "(in bfloat16 on the CPU the copy also attends by matmuls: the node's frames exactly)",
    )
    parser.add_argument(
        "--off-arm",
        action="store_true",
        help="Meta-World clips: also measure the scene off the robot arm and whether the "
        "input's objects are kept (simulator renders)",
    )
    parser.add_argument("--workers", type=int, default=1, help="--off-arm rendering processes")
    parser.add_argument("--clip", default=None, help="local CLIP folder: adds CLIP-I and CLIP-T")
    parser.add_argument("--dino", default=None, help="local DINO/DINOv2 folder: adds DINO-I")
    parser.add_argument(
        "--lpips",
        nargs=2,
        metavar=("VGG16", "HEADS"),
        default=None,
        help="torchvision vgg16 weights and LPIPS vgg.pth heads: adds LPIPS",
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    predictor: Predictor | None = None,
    reconstruct: Reconstructor | None = None,
) -> int:
    """Run ``showme-eval``.

    Args:
        argv: Command-line arguments.
        predictor: Replaces the model folder's pipeline (for tests).
        reconstruct: With ``predictor``: the autoencoder for the off-arm ceiling (none without
            it); the pipeline's own autoencoder otherwise.

    """
    args = build_parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise SystemExit("--limit must be >= 1")
    if args.workers < 1:
        raise SystemExit("--workers must be >= 1")
    try:
        settings = sampler_settings(args)
    except ValueError as error:
        raise SystemExit(f"showme-eval: {error}") from error
    if args.mode == "video" and settings.num_frames < SMOOTHNESS_MIN_FRAMES:
        raise SystemExit(
            f"--num-frames must be >= {SMOOTHNESS_MIN_FRAMES} in video mode: motion smoothness"
            " compares each frame with its two neighbours"
        )
    samples, skipped = load_samples(args.manifest, args.split, args.limit, args.phrasings)
    if not samples:
        raise SystemExit(f"no readable clips in split {args.split!r} (skipped: {skipped})")
    arm_masks = reconstructions = roles = objects = None
    if args.off_arm:
        from training.metrics.arm_mask import metaworld_scene

        try:
            for sample in samples:
                if not sample.is_noop:
                    metaworld_scene(sample.record)
        except ValueError as error:
            raise SystemExit(f"showme-eval --off-arm: {error}") from error
    if predictor is None:
        import torch

        from showme_model import adapters
        from showme_model.pipeline import ShowMePipeline

        dtype = None if args.dtype is None else getattr(torch, args.dtype)
        pipeline = ShowMePipeline.from_pretrained(
            args.model, device=args.device, dtype=dtype, merge_adapters=args.merge_adapters
        )
        if args.adapters is not None:
            try:
                adapters.set_mode_roles(pipeline.model, args.mode, args.adapters)
            except adapters.AdapterError as error:
                raise SystemExit(f"showme-eval --adapters: {error}") from error
        roles = adapters.roles_for_mode(pipeline.model, args.mode)
        predictor = pipeline_predictor(pipeline, args.mode, settings)
        reconstruct = pipeline_reconstructor(pipeline)
    predictions = predict_all(samples, predictor, args.batch_size, args.seed)
    if args.off_arm:
        try:
            objects = scene_renders(samples, predictions, Path(args.manifest).parent, args.workers)
        except ValueError as error:
            raise SystemExit(f"showme-eval --off-arm: {error}") from error
        arm_masks = goal_arm_masks(objects)
        if reconstruct is not None:
            reconstructions = reconstruct_finals(samples, reconstruct, args.batch_size)
    results = evaluate(samples, predictions, args.mode, arm_masks, reconstructions, objects)
    if args.clip or args.dino or args.lpips:
        add_feature_metrics(
            results, samples, predictions, args.clip, args.dino, args.lpips, args.batch_size
        )
    results["settings"] = {**vars(args), "sampler": settings.to_dict(), "skipped": skipped}
    if roles is not None:
        results["settings"]["adapters"] = roles
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    table = results_table(results["summary"], results["breakdowns"]["task"])
    out.with_suffix(".md").write_text(table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``showme-eval``: goal images and rollouts measured against what the simulator really did.

For each test clip the model gets the clip's first frame and instruction. Image mode compares
the predicted goal image with the clip's true final frame; video mode compares the predicted
rollout with the true one (frame by frame, the true clip sampled evenly to the predicted length)
and its last frame with the true final frame. The copy-the-input-frame baseline gets the same
measurements. On scenes shared by opposite tasks (same start state, different instructions) the
instruction-swap accuracy checks that each prediction is closer to its own instruction's outcome
than to the other's. Results go to a JSON file and a markdown table next to it.

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

import cv2
import numpy as np
from tqdm import tqdm

from showme_model.sampler_config import REFERENCE_SAMPLER_CONFIG, SamplerConfig
from showme_model.schedulers import SCHEDULERS
from training.data.clips import ClipError, read_clip
from training.data.manifest import ClipRecord, read_manifest
from training.metrics import motion_score, psnr, ssim, swap_accuracy
from training.metrics.motion import SMOOTHNESS_MIN_FRAMES

# Per-sample PSNR is capped before averaging so that an identical pair (infinite PSNR, e.g. a
# baseline on a clip whose last frame equals its first) cannot swamp the mean.
PSNR_CAP_DB = 100.0
SCENE_KEY = "scene_id"
PHRASINGS = ("recorded", "train", "eval")

Predictor = Callable[[list[np.ndarray], list[str], list[int]], list[np.ndarray]]
"""Maps first frames (uint8 HxWx3), instructions and per-clip seeds to predicted frames (uint8
TxHxWx3 each)."""


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
        phrasings: ``recorded``, or ``train`` / ``eval`` to pick one phrasing of the clip's
            ``meta["task"]`` from that set of the Meta-World task table (the same one for the
            same clip every run).

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
        samples.append(EvalSample(record.id, instructions[record.id], _scene_of(record), frames))
    return samples, dict(skipped)


def _fit(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize predicted frames (T, h, w, 3) to the ground truth's size when they differ."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])


def _even(frames: np.ndarray, length: int) -> np.ndarray:
    return frames[np.rint(np.linspace(0, len(frames) - 1, length)).astype(int)]


def _capped(value: float) -> float:
    return min(value, PSNR_CAP_DB)


def _video_scores(prediction: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    truth = _even(truth, len(prediction))
    pairs = list(zip(prediction, truth, strict=True))
    return (
        float(np.mean([_capped(psnr(p, t)) for p, t in pairs])),
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


def _swap_scenes(
    samples: Sequence[EvalSample], goals: Sequence[np.ndarray]
) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    scenes: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for sample, goal in zip(samples, goals, strict=True):
        if sample.scene is not None:
            scenes[sample.scene].append((goal, sample.final))
    return [scene for scene in scenes.values() if len(scene) >= 2]


def evaluate(
    samples: Sequence[EvalSample], predictions: Sequence[np.ndarray], mode: str
) -> dict[str, object]:
    """Score predictions against the true clips, next to the copy-the-input-frame baseline.

    Args:
        samples: The test clips.
        predictions: One uint8 (T, H, W, 3) prediction per sample at the clips' size; in image
            mode T is 1 (the goal image), in video mode the last frame is the goal.
        mode: ``"image"`` or ``"video"``.

    Returns:
        ``summary`` (model and baseline means, swap accuracy, motion scores) and ``per_sample``.

    """
    if mode not in ("image", "video"):
        raise ValueError(f"mode must be 'image' or 'video', got {mode!r}")
    if len(samples) != len(predictions) or not samples:
        raise ValueError(f"need one prediction per sample, got {len(predictions)}/{len(samples)}")
    rows = []
    for sample, prediction in tqdm(
        list(zip(samples, predictions, strict=True)), desc="scoring", unit="clip"
    ):
        row = {
            "id": sample.id,
            "instruction": sample.instruction,
            "scene": sample.scene,
            "goal_psnr": _capped(psnr(prediction[-1], sample.final)),
            "goal_ssim": ssim(prediction[-1], sample.final),
            "baseline_goal_psnr": _capped(psnr(sample.first, sample.final)),
            "baseline_goal_ssim": ssim(sample.first, sample.final),
        }
        if mode == "video":
            still = np.repeat(sample.first[None], len(prediction), axis=0)
            row["video_psnr"], row["video_ssim"] = _video_scores(prediction, sample.frames)
            row["baseline_video_psnr"], row["baseline_video_ssim"] = _video_scores(
                still, sample.frames
            )
        rows.append(row)
    keys = [k for k in rows[0] if k.endswith(("_psnr", "_ssim"))]
    summary: dict[str, object] = {
        "mode": mode,
        "num_samples": len(rows),
        **{key: float(np.mean([row[key] for row in rows])) for key in keys},
    }
    scenes = _swap_scenes(samples, [p[-1] for p in predictions])
    summary["swap_scenes"] = len(scenes)
    summary["swap_accuracy"] = swap_accuracy(scenes) if scenes else None
    if mode == "video":
        predicted = motion_score(list(predictions))
        true = motion_score(
            [_even(s.frames, len(p)) for s, p in zip(samples, predictions, strict=True)]
        )
        for prefix, score in (("", predicted), ("true_", true)):
            summary[f"{prefix}dynamic_degree"] = score.dynamic_degree
            summary[f"{prefix}motion_smoothness"] = score.motion_smoothness
            summary[f"{prefix}motion_score"] = score.motion_score
    return {"summary": summary, "per_sample": rows}


def add_feature_metrics(
    results: dict[str, object],
    samples: Sequence[EvalSample],
    predictions: Sequence[np.ndarray],
    clip: str | None = None,
    dino: str | None = None,
    lpips: tuple[str, str] | None = None,
    batch_size: int = 16,
) -> None:
    """Add CLIP-I, CLIP-T, DINO-I and LPIPS of the goal images (and the baseline's).

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
    rows, summary = results["per_sample"], results["summary"]
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
    ("dynamic degree", "dynamic_degree", "true_dynamic_degree"),
    ("motion smoothness", "motion_smoothness", "true_motion_smoothness"),
    ("motion score", "motion_score", "true_motion_score"),
)


def results_table(summary: dict[str, object]) -> str:
    """Markdown table of a summary: the model next to its reference (baseline or true clips)."""

    def cell(key: str | None) -> str:
        value = summary.get(key) if key else None
        return "" if value is None else f"{value:.4f}"

    lines = [
        "| metric | model | copy-input baseline / true clips |",
        "| --- | --- | --- |",
    ]
    for name, model_key, reference_key in _TABLE_ROWS:
        if model_key in summary:
            lines.append(f"| {name} | {cell(model_key)} | {cell(reference_key)} |")
    return "\n".join(lines) + "\n"


def pipeline_predictor(
    model: str | Path, mode: str, settings: SamplerConfig, device: str
) -> Predictor:
    """Build a :data:`Predictor` on :class:`showme_model.pipeline.ShowMePipeline`.

    Args:
        model: The model folder.
        mode: ``"image"`` or ``"video"``.
        settings: The sampler settings (``num_frames`` is used in video mode).
        device: Where to run.

    """
    import torch

    from showme_model.pipeline import ShowMePipeline

    pipeline = ShowMePipeline.from_pretrained(model, device=device)

    def predict(
        images: list[np.ndarray], instructions: list[str], seeds: list[int]
    ) -> list[np.ndarray]:
        result = pipeline(
            images,
            instructions,
            mode=mode,
            generator=[torch.Generator().manual_seed(seed) for seed in seeds],
            **settings.to_dict(),
        )
        return [np.asarray(frames) for frames in result.frames]

    return predict


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
        help="instructions: as recorded, or rephrased from the train/eval-only phrasing set",
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
    parser.add_argument("--seed", type=int, default=0, help="run seed; each clip's is derived")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
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


def main(argv: Sequence[str] | None = None, predictor: Predictor | None = None) -> int:
    """Run ``showme-eval``; ``predictor`` replaces the model folder's pipeline (for tests)."""
    args = build_parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise SystemExit("--limit must be >= 1")
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
    if predictor is None:
        predictor = pipeline_predictor(args.model, args.mode, settings, args.device)
    predictions = predict_all(samples, predictor, args.batch_size, args.seed)
    results = evaluate(samples, predictions, args.mode)
    if args.clip or args.dino or args.lpips:
        add_feature_metrics(
            results, samples, predictions, args.clip, args.dino, args.lpips, args.batch_size
        )
    results["settings"] = {**vars(args), "sampler": settings.to_dict(), "skipped": skipped}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    table = results_table(results["summary"])
    out.with_suffix(".md").write_text(table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Which unseen phrasings a model's text encoder puts nearer the opposite task's training phrasings.

``python -m training.phrasing_check --model M [--sets eval val] [--phrasing TASK=TEXT ...]``
encodes the phrasings of the Meta-World task table (and your own, given per task with
``--phrasing``, checked as the set ``own``) with the model's frozen text encoder and, for each
phrasing of the named sets of a task with an opposite task, finds its nearest training phrasing
of the pair (cosine similarity). A phrasing whose nearest neighbour belongs to the opposite task
is one the model has to tell apart against its text features' similarity, where it learned from
a handful of training phrasings: the phrasings that a model most often reverses. Two features
are compared: the context tokens the UNet attends to (flattened) and, for a sentence encoder,
its pooled sentence embedding.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from training.data.metaworld_gen import load_tasks

Features = Callable[[list[str]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class PhrasingCheck:
    """One unseen phrasing against the training phrasings of its task and the opposite one."""

    task: str
    opposite: str
    phrasing_set: str
    phrasing: str
    feature: str
    nearest: str
    margin: float  # best similarity to its own task's minus best to the opposite task's

    @property
    def nearer_opposite(self) -> bool:
        """Whether the nearest training phrasing is the opposite task's."""
        return self.margin < 0


def text_features(encoder: torch.nn.Module) -> Features:
    """Features of prompts: ``tokens`` (flattened context) and, if pooled, ``sentence``."""

    def features(texts: list[str]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            out = {"tokens": encoder.encode(texts).flatten(1).float()}
            if hasattr(encoder, "encode_with_pooled"):
                out["sentence"] = encoder.encode_with_pooled(texts)[1].float()
        return out

    return features


def check_phrasings(
    features: Features,
    phrasings: dict[str, dict[str, list[str]]],
    pairs: Sequence[tuple[str, str]],
    sets: Sequence[str] = ("eval", "val"),
) -> list[PhrasingCheck]:
    """Check every phrasing of ``sets`` of both tasks of each opposite pair."""
    checks = []
    for pair in pairs:
        for task, opposite in (pair, pair[::-1]):
            own, other = phrasings[task]["train"], phrasings[opposite]["train"]
            unseen = [(s, p) for s in sets for p in phrasings[task].get(s, [])]
            if not unseen:
                continue
            encoded = features([p for _, p in unseen] + own + other)
            for feature, vectors in encoded.items():
                vectors = F.normalize(vectors, dim=-1)
                queries, train = vectors[: len(unseen)], vectors[len(unseen) :]
                similarity = queries @ train.T  # (unseen, own + other)
                for (phrasing_set, phrasing), row in zip(unseen, similarity, strict=True):
                    best = int(row.argmax())
                    margin = float(row[: len(own)].max() - row[len(own) :].max())
                    checks.append(
                        PhrasingCheck(
                            task,
                            opposite,
                            phrasing_set,
                            phrasing,
                            feature,
                            (own + other)[best],
                            margin,
                        )
                    )
    return checks


def format_checks(checks: Sequence[PhrasingCheck], every: bool = False) -> list[str]:
    """Markdown: counts per feature and set, then the flagged phrasings (``every``: all)."""
    lines = [
        "| feature | set | phrasings | nearer the opposite task |",
        "| --- | --- | ---: | ---: |",
    ]
    for feature in sorted({c.feature for c in checks}):
        for phrasing_set in sorted({c.phrasing_set for c in checks}):
            group = [c for c in checks if c.feature == feature and c.phrasing_set == phrasing_set]
            flipped = sum(c.nearer_opposite for c in group)
            lines.append(f"| {feature} | {phrasing_set} | {len(group)} | {flipped} |")
    lines += [
        "",
        "| task | set | phrasing | feature | nearest training phrasing | margin |",
        "| --- | --- | --- | --- | --- | ---: |",
    ]
    shown = [c for c in checks if every or c.nearer_opposite]
    if not shown:
        return [*lines[:-3], "", "No phrasing is nearer the opposite task's training phrasings."]
    for c in shown:
        lines.append(
            f"| {c.task} | {c.phrasing_set} | {c.phrasing} | {c.feature} | {c.nearest} "
            f"| {c.margin:+.3f} |"
        )
    return lines


def add_own_phrasings(
    phrasings: dict[str, dict[str, list[str]]], own: Sequence[str]
) -> dict[str, dict[str, list[str]]]:
    """Return ``phrasings`` with ``TASK=TEXT`` items added to their task's set ``own``."""
    merged = {task: dict(sets) for task, sets in phrasings.items()}
    for item in own:
        task, equals, text = item.partition("=")
        if not equals or not text.strip():
            raise ValueError(f"--phrasing wants TASK=TEXT, got {item!r}")
        if task not in merged:
            raise ValueError(f"unknown task {task!r}; tasks: {', '.join(sorted(merged))}")
        merged[task]["own"] = [*merged[task].get("own", []), text.strip()]
    return merged


def main(argv: list[str] | None = None) -> None:
    """Entry point: check the task table's unseen phrasings against a model's text encoder."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="model folder")
    parser.add_argument("--sets", nargs="+", default=None, help="sets (default: eval val)")
    parser.add_argument(
        "--phrasing",
        action="append",
        default=[],
        metavar="TASK=TEXT",
        help="a phrasing of your own for a task, e.g. door-unlock-v3='open the lock' (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        scenes, phrasings = load_tasks()
        phrasings = add_own_phrasings(phrasings, args.phrasing)
    except ValueError as error:
        parser.error(str(error))
    sets = args.sets or (["own"] if args.phrasing else ["eval", "val"])
    from showme_model.model import ShowMeModel

    torch.set_num_threads(1)
    model = ShowMeModel.from_pretrained(args.model)
    pairs = [tuple(s.tasks) for s in scenes if len(s.tasks) == 2]
    checks = check_phrasings(text_features(model.text_encoder), phrasings, pairs, sets)
    print("\n".join(format_checks(checks, every=bool(args.phrasing))))


if __name__ == "__main__":
    main()

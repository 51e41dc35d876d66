"""Paired comparison of two ``showme-eval`` results on the same clips.

``python -m training.compare_evals A.json B.json [--metric goal_psnr ...]`` prints, per metric,
the mean of ``B - A`` over the clips both results scored, its standard error over clips, and on
how many clips B is better and worse. Pairing removes the spread between clips, which is far
larger than most differences between two models.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_METRICS = ("goal_psnr", "off_arm_goal_psnr", "video_psnr", "swap_accuracy")


@dataclass(frozen=True)
class PairedDifference:
    """``B - A`` of one metric over the clips both results scored."""

    metric: str
    clips: int
    mean: float
    standard_error: float
    better: int
    worse: int


def per_clip(result: dict, metric: str) -> dict[str, float]:
    """Return ``{clip id: value}`` of one metric of a ``showme-eval`` result, where scored."""
    return {
        sample["id"]: float(sample[metric])
        for sample in result["per_sample"]
        if sample.get(metric) is not None
    }


def paired_difference(first: dict, second: dict, metric: str) -> PairedDifference:
    """Compare ``second`` with ``first`` on the clips both scored for ``metric``."""
    a, b = per_clip(first, metric), per_clip(second, metric)
    common = sorted(a.keys() & b.keys())
    if not common:
        raise ValueError(f"the two results share no clip scored for {metric!r}")
    differences = [b[clip] - a[clip] for clip in common]
    n = len(differences)
    mean = sum(differences) / n
    variance = sum((d - mean) ** 2 for d in differences) / (n - 1) if n > 1 else 0.0
    return PairedDifference(
        metric,
        n,
        mean,
        math.sqrt(variance / n),
        sum(d > 0 for d in differences),
        sum(d < 0 for d in differences),
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m training.compare_evals", description=__doc__)
    parser.add_argument("first", type=Path, help="result A (showme-eval --out JSON)")
    parser.add_argument("second", type=Path, help="result B, compared with A")
    parser.add_argument("--metric", nargs="+", default=list(DEFAULT_METRICS))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the paired differences as a Markdown table."""
    args = parse_args(argv)
    first, second = (json.loads(path.read_text()) for path in (args.first, args.second))
    print(f"B - A, A = `{args.first}`, B = `{args.second}`\n")
    print("| metric | clips | mean B - A | standard error | B better | B worse |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for metric in args.metric:
        try:
            d = paired_difference(first, second, metric)
        except ValueError:
            continue
        print(
            f"| {d.metric} | {d.clips} | {d.mean:+.4f} | {d.standard_error:.4f} | "
            f"{d.better} | {d.worse} |"
        )


if __name__ == "__main__":
    main()

"""How far trained LoRA adapters moved from a reference adapter of the same role.

``python -m training.adapter_change REFERENCE OTHER [OTHER ...]`` prints a Markdown table with,
for each other adapter folder, the relative change of its effective weight update,
``||dW_other - dW_ref|| / ||dW_ref||`` over all adapted modules (``dW = scale * B @ A``), and
the same for the raw LoRA parameters. Runs that share the seed and the data order and differ in
one setting (a reward weight, say) isolate what that setting did to the weights.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from showme_model.adapters import CONFIG_NAME, WEIGHTS_NAME
from showme_model.checkpoint_io import load_checkpoint


def _scaling(config: dict, module: str) -> float:
    """LoRA scaling ``alpha / r`` of one module, with peft's per-module patterns."""
    rank, alpha = config["r"], config["lora_alpha"]
    for pattern, value in config.get("rank_pattern", {}).items():
        if re.fullmatch(f"(.*\\.)?{pattern}", module):
            rank = value
    for pattern, value in config.get("alpha_pattern", {}).items():
        if re.fullmatch(f"(.*\\.)?{pattern}", module):
            alpha = value
    return alpha / rank


def effective_updates(folder: str | Path) -> dict[str, torch.Tensor]:
    """Return each adapted module's weight update ``scale * B @ A`` of an adapter folder."""
    folder = Path(folder)
    config = json.loads((folder / CONFIG_NAME).read_text())
    weights = load_checkpoint(folder / WEIGHTS_NAME)
    updates = {}
    for key, lora_a in weights.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removesuffix(".lora_A.weight")
        lora_b = weights[f"{module}.lora_B.weight"]
        update = lora_b.double().flatten(1) @ lora_a.double().flatten(1)
        updates[module] = _scaling(config, module) * update
    if not updates:
        raise ValueError(f"{folder} holds no LoRA weights")
    return updates


def relative_change(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> float:
    """``||other - reference|| / ||reference||`` over every tensor of two same-keyed dicts."""
    if reference.keys() != other.keys():
        raise ValueError("the adapters adapt different modules; they cannot be compared")
    difference = sum(float((other[k] - reference[k]).pow(2).sum()) for k in reference)
    norm = sum(float(reference[k].pow(2).sum()) for k in reference)
    return math.sqrt(difference / norm)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m training.adapter_change", description=__doc__)
    parser.add_argument("reference", help="the reference adapter folder")
    parser.add_argument("others", nargs="+", help="adapter folders to compare with it")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the comparison table."""
    args = parse_args(argv)
    reference_updates = effective_updates(args.reference)
    reference_params = load_checkpoint(Path(args.reference) / WEIGHTS_NAME)
    print(f"Reference: `{args.reference}`\n")
    print("| adapter | relative change of B@A | relative change of LoRA parameters |")
    print("| --- | --- | --- |")
    for folder in args.others:
        updates = relative_change(reference_updates, effective_updates(folder))
        params = relative_change(reference_params, load_checkpoint(Path(folder) / WEIGHTS_NAME))
        print(f"| `{folder}` | {updates:.4f} | {params:.4f} |")


if __name__ == "__main__":
    main()

"""Atomic, resumable training checkpoints.

A checkpoint is a folder ``<root>/step-<NNNNNNNN>`` holding

- ``trainable.safetensors``: the trained parameters by name (adapter weights, or the whole
  trainable model in ``base`` mode);
- ``optimizer.pt``, ``lr_scheduler.pt``: their state dicts (plain tensors and numbers);
- ``rng-<rank>.pt``: each process's Python, NumPy and PyTorch (CPU and CUDA) random states;
- ``state.json``: optimizer step, data position (draws consumed) and the run's config.

It is written under a temporary name and renamed into place once complete, so a run killed while
writing leaves only a ``.tmp-*`` folder that is never read and the previous checkpoint intact.
Everything is read back as data (safetensors, ``torch.load(weights_only=True)``, JSON).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

PREFIX = "step-"
TMP_PREFIX = ".tmp-"
WEIGHTS = "trainable.safetensors"
STATE = "state.json"


@dataclass
class TrainingState:
    """Where a run is: optimizer steps taken and samples drawn from the data stream."""

    step: int = 0
    data_position: int = 0


def checkpoint_name(step: int) -> str:
    """Return the folder name of the checkpoint after ``step`` optimizer steps."""
    return f"{PREFIX}{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(root: str | Path) -> Path | None:
    """Return the newest complete checkpoint under ``root``, or ``None``."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the parameters that require gradients, by name."""
    return {
        name: p.detach().to("cpu", copy=True).contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def rng_state() -> dict[str, Any]:
    """Capture this process's Python, NumPy and PyTorch random states as plain data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def temporary_folder(root: str | Path, step: int) -> Path:
    """Return the folder a checkpoint of ``step`` is written into before it is published."""
    return Path(root) / f"{TMP_PREFIX}{checkpoint_name(step)}"


def start_checkpoint(root: str | Path, step: int) -> Path:
    """Create an empty :func:`temporary_folder` (main process, before the others write)."""
    tmp = temporary_folder(root, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_rng(folder: Path, rank: int) -> None:
    """Write this process's random states into a checkpoint being written."""
    torch.save(rng_state(), folder / f"rng-{rank}.pt")


def write_main(
    folder: Path,
    weights: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    state: TrainingState,
    config: dict[str, Any],
) -> None:
    """Write the weights, optimizer, LR schedule and progress (the main process's part)."""
    save_file(weights, str(folder / WEIGHTS))
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(lr_scheduler.state_dict(), folder / "lr_scheduler.pt")
    payload = {"step": state.step, "data_position": state.data_position, "config": config}
    (folder / STATE).write_text(json.dumps(payload, indent=2, default=str))


def publish(folder: Path, keep_last: int) -> Path:
    """Rename a fully written temporary folder into place and prune old checkpoints.

    Args:
        folder: The temporary folder from :func:`start_checkpoint`.
        keep_last: Number of complete checkpoints to keep (at least 1).

    Returns:
        The final checkpoint folder.

    """
    for path in folder.iterdir():
        _fsync(path)
    final = folder.parent / folder.name[len(TMP_PREFIX) :]
    if final.exists():
        shutil.rmtree(final)
    os.replace(folder, final)
    _fsync(folder.parent)
    for old in list_checkpoints(folder.parent)[: -max(keep_last, 1)]:
        shutil.rmtree(old)
    for stale in folder.parent.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def load_checkpoint(
    folder: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any,
    rank: int = 0,
) -> TrainingState:
    """Restore a checkpoint into the model, optimizer, schedule and this process's RNG.

    Raises:
        FileNotFoundError: The folder is not a complete checkpoint.
        ValueError: Its trained parameters do not match the model's trainable ones.

    """
    folder = Path(folder)
    if not (folder / STATE).is_file():
        raise FileNotFoundError(f"not a complete checkpoint (no {STATE}): {folder}")
    weights = load_file(folder / WEIGHTS)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(weights) != set(params):
        missing, extra = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
        raise ValueError(
            f"checkpoint {folder} does not fit the model's trainable parameters: "
            f"missing {missing[:3]}..., unexpected {extra[:3]}..."
        )
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    lr_scheduler.load_state_dict(torch.load(folder / "lr_scheduler.pt", weights_only=True))
    rng_file = folder / f"rng-{rank}.pt"
    if rng_file.is_file():
        restore_rng_state(torch.load(rng_file, weights_only=True))
    payload = json.loads((folder / STATE).read_text())
    return TrainingState(step=int(payload["step"]), data_position=int(payload["data_position"]))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Loading checkpoints as data only: safetensors, or ``torch.load(weights_only=True)``.

A checkpoint is never allowed to run code. Pickle-based files go through PyTorch's restricted
unpickler, which refuses any global outside its allow-list before it is called; everything else
(unknown suffixes, truncated or corrupt files, non-tensor payloads) raises
:class:`CheckpointError` with the path and the reason.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as a plain mapping of names to tensors."""


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` or a PyTorch (``.ckpt``/``.pt``/``.pth``) file.

    A PyTorch Lightning checkpoint (a dict with a ``state_dict`` entry) is unwrapped. Tensors are
    loaded on the CPU.

    Args:
        path: The checkpoint file.

    Returns:
        The flat mapping of parameter names to tensors.

    Raises:
        CheckpointError: The file is missing, has an unsupported suffix, is truncated or corrupt,
            would need code to unpickle, or does not hold a mapping of names to tensors.

    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        state = _load_safetensors(path)
    elif suffix in PICKLE_SUFFIXES:
        state = _load_torch(path)
    else:
        supported = ", ".join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)
        raise CheckpointError(f"unsupported checkpoint type {suffix!r} for {path}; use {supported}")
    return _as_state_dict(state, path)


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from error


def _load_torch(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain containers; it was refused "
            "without running it (only data is loaded; convert it to safetensors from a trusted "
            f"environment). Details: {error}"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {error}"
        ) from error


def _as_state_dict(state: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{path} holds {len(not_tensors)} entries that are not tensors, e.g. {not_tensors[0]!r}"
        )
    return state

"""``training.adapter_change``: how far an adapter moved from a reference adapter."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from showme_model.adapters import write_adapter
from training.adapter_change import effective_updates, main, relative_change

MODULE = "unet.block.attn1.to_q"


def _adapter(folder: Path, lora_a: torch.Tensor, lora_b: torch.Tensor) -> Path:
    state = {f"{MODULE}.lora_A.weight": lora_a, f"{MODULE}.lora_B.weight": lora_b}
    write_adapter(folder, "prediction", state)
    return folder


def test_the_effective_update_is_b_times_a(tmp_path: Path) -> None:
    lora_a, lora_b = torch.randn(4, 6), torch.randn(5, 4)
    updates = effective_updates(_adapter(tmp_path, lora_a, lora_b))
    torch.testing.assert_close(updates[MODULE].float(), lora_b @ lora_a)


def test_relative_change_of_updates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lora_a, lora_b = torch.randn(4, 6), torch.randn(5, 4)
    reference = _adapter(tmp_path / "ref", lora_a, lora_b)
    doubled = _adapter(tmp_path / "doubled", lora_a, 2 * lora_b)  # dW doubles: change 1.0
    same = _adapter(tmp_path / "same", lora_a.clone(), lora_b.clone())
    assert relative_change(effective_updates(reference), effective_updates(doubled)) == (
        pytest.approx(1.0)
    )
    assert relative_change(effective_updates(reference), effective_updates(same)) == 0.0
    main([str(reference), str(doubled)])
    row = capsys.readouterr().out.strip().splitlines()[-1]
    expected = math.sqrt(lora_b.pow(2).sum() / (lora_a.pow(2).sum() + lora_b.pow(2).sum()))
    assert row == f"| `{doubled}` | 1.0000 | {expected:.4f} |"


def test_adapters_of_different_modules_are_refused(tmp_path: Path) -> None:
    reference = effective_updates(_adapter(tmp_path / "a", torch.randn(4, 6), torch.randn(5, 4)))
    with pytest.raises(ValueError, match="different modules"):
        relative_change(reference, {"unet.other": torch.zeros(5, 6)})

"""``training.compare_evals``: paired differences of two evaluation results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from training.compare_evals import main, paired_difference


def _result(values: dict[str, float | None]) -> dict:
    return {"per_sample": [{"id": k, "goal_psnr": v} for k, v in values.items()]}


def test_mean_and_standard_error_of_the_paired_differences() -> None:
    first = _result({"a": 20.0, "b": 22.0, "c": 24.0, "only-first": 30.0})
    second = _result({"a": 21.0, "b": 22.0, "c": 27.0, "only-second": 10.0})
    d = paired_difference(first, second, "goal_psnr")
    # differences 1, 0, 3 on the three shared clips
    assert (d.clips, d.better, d.worse) == (3, 2, 0)
    assert d.mean == pytest.approx(4 / 3)
    sample_variance = ((1 - 4 / 3) ** 2 + (4 / 3) ** 2 + (3 - 4 / 3) ** 2) / 2
    assert d.standard_error == pytest.approx(math.sqrt(sample_variance / 3))


def test_clips_without_the_metric_are_left_out() -> None:
    first = _result({"a": 20.0, "b": None})
    second = _result({"a": 19.0, "b": 25.0})
    d = paired_difference(first, second, "goal_psnr")
    assert (d.clips, d.mean, d.worse) == (1, -1.0, 1)
    with pytest.raises(ValueError, match="share no clip"):
        paired_difference(_result({"a": None}), second, "goal_psnr")


def test_the_command_line_prints_one_row_per_metric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    for name, values in (("a", {"x": 1.0, "y": 2.0}), ("b", {"x": 2.0, "y": 4.0})):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(_result(values)))
    main([str(paths[0]), str(paths[1]), "--metric", "goal_psnr", "video_psnr"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| goal")]
    assert rows == ["| goal_psnr | 2 | +1.5000 | 0.5000 | 2 | 0 |"]

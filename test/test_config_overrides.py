"""``showme-train --set KEY=VALUE``: command-line changes to a YAML training config."""

from __future__ import annotations

import pytest

from training.config import load_config
from training.train import parse_args

STAGE2 = "training/configs/metaworld64v-stage2.yaml"


def test_an_override_changes_exactly_the_value_it_names() -> None:
    plain = load_config(STAGE2, "stage2")
    changed = load_config(STAGE2, "stage2", overrides=["motion.weight=1e-2", "seed=7"])
    assert changed.motion.weight == pytest.approx(0.01) and changed.seed == 7
    assert changed.motion.threshold == plain.motion.threshold
    assert changed.data == plain.data and changed.model == plain.model


def test_null_removes_an_optional_value() -> None:
    config = load_config(STAGE2, "stage2", overrides=["model.manipulation_adapter=null"])
    assert config.model.manipulation_adapter is None
    assert load_config(STAGE2, "stage2").model.manipulation_adapter is not None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("motion.wieght=1", "unknown key"),
        ("motion", "KEY=VALUE"),
        ("=3", "KEY=VALUE"),
        ("seed.x=1", "not a section"),
    ],
)
def test_a_bad_override_is_a_clear_error(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(STAGE2, "stage2", overrides=[override])


def test_the_command_line_collects_every_set() -> None:
    args = parse_args(["stage2", "--config", STAGE2, "--set", "seed=1", "--set", "motion.weight=0"])
    assert args.overrides == ["seed=1", "motion.weight=0"]


def test_numbers_in_exponent_form_are_numbers() -> None:
    """YAML 1.1 reads ``1e-2`` (no dot) as a string; a float setting still gets a float."""
    config = load_config(STAGE2, "stage2", overrides=["motion.weight=1e-2", "optim.lr=3e-4"])
    assert config.motion.weight == 0.01 and config.optim.lr == 3e-4
    with pytest.raises(ValueError, match=r"motion\.weight must be a number"):
        load_config(STAGE2, "stage2", overrides=["motion.weight=lots"])
    with pytest.raises(ValueError, match=r"motion\.weight must be a number"):
        load_config(STAGE2, "stage2", overrides=["motion.weight=true"])

"""How the node picks its model when `model.path` is empty or set."""

from pathlib import Path

import pytest

from showme_model import pipeline
from showme_ros import engine


def test_empty_path_means_the_shipped_model():
    choice = engine.choose_model("")
    assert choice.path == pipeline.default_model_path()
    assert choice.warning == ""


def test_explicit_path_is_used_as_given(tmp_path):
    choice = engine.choose_model(str(tmp_path / "elsewhere"))
    assert choice.path == tmp_path / "elsewhere"
    assert choice.warning == ""


def test_without_a_shipped_model_a_tiny_random_one_is_written_and_announced(tmp_path, monkeypatch):
    def no_shipped_model() -> Path:
        raise FileNotFoundError("no shipped model")

    monkeypatch.setattr(pipeline, "default_model_path", no_shipped_model)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    choice = engine.choose_model("")
    assert choice.path == tmp_path / "showme" / "tiny-random-model"
    assert (choice.path / "model_index.json").is_file()
    assert "tiny RANDOM model" in choice.warning


@pytest.mark.parametrize("path", ["", "~/models/x"])
def test_choice_paths_are_expanded(path):
    assert "~" not in str(engine.choose_model(path).path)

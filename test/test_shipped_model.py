"""The model shipped in the package predicts real Meta-World outcomes better than copying the input.

The fixtures are held-out layouts (a test-split seed never used in training) given with
evaluation-only phrasings: first frame, instruction, true final frame and scene id, for scenes
shared by opposite tasks.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from showme_model.metrics import psnr
from showme_model.pipeline import ShowMePipeline, default_model_path
from training.metrics.swap import swap_accuracy

FIXTURES = Path(__file__).parent / "fixtures" / "metaworld_heldout"
MAX_FOLDER_BYTES = 60 * 2**20
# On the ten fixture clips (layout seed 2028, the harder of the two held-out layouts: each
# task's goal PSNR is 2-5 dB below the same task's at seed 2040) the model does not yet tell
# opposite instructions apart; over all held-out clips its swap accuracy is about 0.91
# (MODEL_CARD.md).
# Strict, so that a model that does makes this test fail until the marker goes.
SWAP_SHORTFALL = pytest.mark.xfail(
    strict=True, reason="swap accuracy on seed 2028's five pairs is at chance; see MODEL_CARD.md"
)


def _image(name: str) -> np.ndarray:
    return np.asarray(Image.open(FIXTURES / name).convert("RGB"))


@pytest.fixture(scope="module")
def samples() -> list[dict]:
    records = json.loads((FIXTURES / "samples.json").read_text())
    for record in records:
        record["first_image"] = _image(record["first"])
        record["final_image"] = _image(record["final"])
    return records


@pytest.fixture(scope="module")
def goals(samples: list[dict]) -> list[np.ndarray]:
    torch.set_num_threads(1)
    pipeline = ShowMePipeline.from_pretrained(default_model_path())
    result = pipeline.predict(
        [s["first_image"] for s in samples],
        [s["instruction"] for s in samples],
        mode="image",
        num_steps=10,
        guidance_scale=1.0,
        eta=1.0,
        seed=0,
    )
    return [frames[0] for frames in result.frames]


def test_shipped_folder_is_small_and_data_only():
    folder = default_model_path()
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= MAX_FOLDER_BYTES
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".ckpt")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert (folder / "adapters" / "manipulation").is_dir()
    assert (folder / "MODEL_CARD.md").is_file()


def test_goal_images_beat_copying_the_input(samples, goals):
    assert goals[0].shape == samples[0]["final_image"].shape
    model = np.mean([psnr(g, s["final_image"]) for g, s in zip(goals, samples, strict=True)])
    baseline = np.mean([psnr(s["first_image"], s["final_image"]) for s in samples])
    assert model > baseline, f"goal PSNR {model:.2f} dB vs copy-input {baseline:.2f} dB"


@SWAP_SHORTFALL
def test_instruction_decides_the_outcome(samples, goals):
    scenes: dict[str, list] = {}
    for goal, sample in zip(goals, samples, strict=True):
        scenes.setdefault(sample["scene"], []).append((goal, sample["final_image"]))
    assert len(scenes) >= 3 and all(len(pairs) == 2 for pairs in scenes.values())
    assert swap_accuracy(list(scenes.values())) >= 0.75

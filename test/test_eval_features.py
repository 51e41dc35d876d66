"""CLIP-I / CLIP-T / DINO-I from local folders (tiny random models), and through showme-eval."""

import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import CLIPConfig, CLIPModel, Dinov2Config, Dinov2Model, PreTrainedTokenizerFast
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from training.evaluate import main
from training.metrics.features import ClipScorer, DinoScorer

WORDS = ["[UNK]", "[PAD]", "slide", "left", "right", "open", "the", "drawer"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    torch.manual_seed(0)
    tiny = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    config = CLIPConfig(
        text_config={
            **tiny,
            "num_attention_heads": 2,
            "vocab_size": len(WORDS),
            "eos_token_id": 1,
            "max_position_embeddings": 16,
        },
        vision_config={**tiny, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    folder = tmp_path_factory.mktemp("clip")
    CLIPModel(config).save_pretrained(folder)
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]")
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    folder = tmp_path_factory.mktemp("dino")
    Dinov2Model(config).save_pretrained(folder)
    return folder


def _images(seed: int, count: int = 3, size: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random((size, size + 8, 3)) * 255).astype(np.uint8) for _ in range(count)]


def test_identical_images_score_one_and_different_ones_less(clip_dir, dino_dir):
    clip, dino = ClipScorer(clip_dir), DinoScorer(dino_dir)
    a, b = _images(0), _images(1)
    assert clip.clip_i(a, a) == pytest.approx([1.0] * 3, abs=1e-5)
    assert dino.dino_i(a, a) == pytest.approx([1.0] * 3, abs=1e-5)
    assert max(clip.clip_i(a, b)) < 0.9999 and max(dino.dino_i(a, b)) < 0.9999


def test_clip_t_equals_the_clip_models_own_image_text_similarity(clip_dir):
    """CLIPModel.forward's logits_per_image / logit_scale is the cosine of every image and text."""
    rng = np.random.default_rng(5)  # images at the model's input size: only normalised
    images = [(rng.random((32, 32, 3)) * 255).astype(np.uint8) for _ in range(3)]
    texts = ["slide left", "open the drawer", "right"]
    model = CLIPModel.from_pretrained(clip_dir).eval()
    tokens = PreTrainedTokenizerFast.from_pretrained(clip_dir)(
        texts, padding=True, return_tensors="pt"
    )
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        output = model(**tokens, pixel_values=(pixels - mean) / std)
    cosine = output.logits_per_image / model.logit_scale.exp()
    expected = cosine.diagonal().tolist()
    assert max(expected) - min(expected) > 1e-3  # the pairs differ, so a mix-up would show
    assert ClipScorer(clip_dir).clip_t(images, texts) == pytest.approx(expected, abs=1e-5)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        DinoScorer(tmp_path)


def test_eval_cli_adds_feature_metrics(clip_dir, dino_dir, tmp_path):
    from training.data.manifest import ClipRecord, write_manifest

    frames = np.stack(_images(2, count=4, size=32))
    np.savez_compressed(tmp_path / "c.npz", frames=frames)
    write_manifest(tmp_path / "m.jsonl", [ClipRecord("c", "c.npz", "slide left", "test")])

    def oracle(images, instructions, seeds):
        return [frames[-1:]]

    out = tmp_path / "r.json"
    argv = ["--model", "m", "--manifest", str(tmp_path / "m.jsonl"), "--out", str(out)]
    main([*argv, "--clip", str(clip_dir), "--dino", str(dino_dir)], predictor=oracle)
    summary = json.loads(out.read_text())["summary"]
    assert summary["clip_i"] == pytest.approx(1.0, abs=1e-5)
    assert summary["dino_i"] == pytest.approx(1.0, abs=1e-5)
    assert summary["baseline_dino_i"] < summary["dino_i"]
    assert "clip_t" in summary and "baseline_clip_t" in summary
    assert "| DINO-I |" in out.with_suffix(".md").read_text()

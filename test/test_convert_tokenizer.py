"""OpenCLIP's tokenizer from the vocabulary the open-clip-torch package ships; a converter that
needs only the checkpoint."""

import contextlib
import importlib.util
import io
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from showme_model.convert import main
from showme_model.encoders import OpenCLIPTextEncoder, openclip_tokenizer, openclip_vocabulary_file
from showme_model.model import ShowMeModel
from test.test_convert_model import _checkpoint_state

SENTENCES = [
    "a photo of a cat",
    "Pick up the red block and place it in the top drawer.",
    "open   the door\tslowly ",
    "It's 3 o'clock; push the button twice!!",
    "close the window, then press the handle (don't pull it)",
    "",
    "move " * 100,  # longer than the 77-token context
]


@pytest.fixture(scope="module")
def reference():
    """open_clip's own SimpleTokenizer, loaded from its file without importing open_clip (whose
    package import needs torchvision)."""
    path = openclip_vocabulary_file().parent / "tokenizer.py"
    spec = importlib.util.spec_from_file_location("openclip_tokenizer_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer()


def _encoder_ids(tokenizer, texts: list[str]) -> torch.Tensor:
    return OpenCLIPTextEncoder(torch.nn.Identity(), tokenizer).tokenize(texts)


def test_packaged_tokenizer_gives_openclip_ids(reference):
    tokenizer = openclip_tokenizer()
    assert len(tokenizer) == 49408
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (49406, 49407)
    expected = reference(SENTENCES)  # (B, 77): start, text, end, zero padding; truncated
    assert torch.equal(_encoder_ids(tokenizer, SENTENCES), expected)
    assert expected[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]


def _checkpoint_with_openclip_vocabulary(path: Path) -> Path:
    state = _checkpoint_state()
    width = state["cond_stage_model.model.token_embedding.weight"].shape[1]
    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(49408, width, generator=generator) * 0.02
    state["cond_stage_model.model.token_embedding.weight"] = embedding
    save_file(state, path)
    return path


def _convert(checkpoint: Path, output: Path) -> tuple[int, str]:
    args = ["model", str(checkpoint), str(output), "--preset", "tiny"]
    args += ["--text-heads", "4", "--vision-heads", "4", "--projector-heads", "4"]
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        status = main(args)
    return status, err.getvalue()


def test_converter_needs_no_tokenizer_folder(tmp_path, reference):
    checkpoint = _checkpoint_with_openclip_vocabulary(tmp_path / "checkpoint.safetensors")
    status, err = _convert(checkpoint, tmp_path / "model")
    assert status == 0, err
    model = ShowMeModel.from_pretrained(tmp_path / "model")  # the tokenizer was saved with it
    assert torch.equal(model.text_encoder.tokenize(SENTENCES), reference(SENTENCES))
    assert model.encode_text(SENTENCES[:2]).shape == (2, 77, 32)


def test_a_checkpoint_with_another_vocabulary_asks_for_its_tokenizer(tmp_path):
    checkpoint = tmp_path / "checkpoint.safetensors"
    save_file(_checkpoint_state(), checkpoint)  # the fixture's 521-token vocabulary
    status, err = _convert(checkpoint, tmp_path / "model")
    assert status == 1
    assert "has 521 tokens but the tokenizer has 49408" in err and "--clip-tokenizer" in err
    assert not (tmp_path / "model").exists()

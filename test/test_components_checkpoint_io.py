"""checkpoint_io: checkpoints load as data only, bad files get a clear error."""

import pathlib
import random
import re

import pytest
import torch
from safetensors.torch import save_file

from showme_model.checkpoint_io import CheckpointError, load_checkpoint


def _state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(3, 4, generator=generator), "b.bias": torch.arange(5.0)}


def _assert_same(loaded: dict, expected: dict) -> None:
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value)


def test_safetensors_round_trip(tmp_path):
    save_file(_state(), tmp_path / "w.safetensors")
    _assert_same(load_checkpoint(tmp_path / "w.safetensors"), _state())


def test_lightning_checkpoint_is_unwrapped(tmp_path):
    torch.save({"state_dict": _state(), "global_step": 7, "epoch": 1}, tmp_path / "m.ckpt")
    _assert_same(load_checkpoint(tmp_path / "m.ckpt"), _state())


def test_plain_torch_state_dict(tmp_path):
    torch.save(_state(), tmp_path / "m.pt")
    _assert_same(load_checkpoint(tmp_path / "m.pt"), _state())


@pytest.mark.parametrize("name", ["w.safetensors", "m.ckpt"])
def test_truncated_file_is_refused(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file(_state(), path)
    else:
        torch.save({"state_dict": _state()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=re.escape(name)):
        load_checkpoint(path)


@pytest.mark.parametrize("name", ["w.safetensors", "m.ckpt", "m.pth"])
def test_random_bytes_are_refused(tmp_path, name):
    path = tmp_path / name
    generator = random.Random(0)
    for index in range(100):  # some payloads make the restricted unpickler fail in odd ways
        header = b"\x80\x02" if index % 2 else b""  # a pickle header reaches deeper code paths
        path.write_bytes(header + generator.randbytes(generator.choice((16, 256, 4096))))
        with pytest.raises(CheckpointError):
            load_checkpoint(path)


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_code_running_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": _state(), "hook": _Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused without running"):
        load_checkpoint(path)
    assert not marker.exists()


def test_unsupported_suffix_and_missing_file(tmp_path):
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unsupported checkpoint type"):
        load_checkpoint(tmp_path / "w.npz")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_non_tensor_payload_is_refused(tmp_path):
    torch.save({"state_dict": {"a": [1, 2]}}, tmp_path / "m.ckpt")
    with pytest.raises(CheckpointError, match="not tensors"):
        load_checkpoint(tmp_path / "m.ckpt")

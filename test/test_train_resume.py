"""Checkpoints: exact resume, atomic writes, pruning, and the command line."""

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from training import checkpointing
from training.config import config_from_dict
from training.data.flow import cache_manifest_flow
from training.data.manifest import ClipRecord
from training.data.manifest import write_manifest as write_manifest_file
from training.loops import Trainer
from training.synthetic import MovingSquares
from training.train import main

torch.set_num_threads(1)


def make_config(out, max_steps, **extra):
    return config_from_dict(
        {
            "mode": "stage1",
            "output_dir": str(out),
            "max_steps": max_steps,
            "batch_size": 2,
            "save_every": 2,
            "keep_last": 2,
            "report_to": None,
            "dropout": True,  # LoRA/UNet dropout draws on the global RNG: resume must restore it
            "data": {"synthetic": 3, "resolution": 32},  # 3 clips: epochs wrap mid-batch
            "structure": {"threshold": 500},
            **extra,
        }
    )


def trained_state(trainer):
    return {
        "weights": checkpointing.trainable_state(trainer.model),
        "optimizer": trainer.optimizer.state_dict()["state"],
        "rng": torch.get_rng_state(),
    }


def assert_identical(a, b):
    assert a["weights"].keys() == b["weights"].keys()
    for name in a["weights"]:
        assert torch.equal(a["weights"][name], b["weights"][name]), name
    for index, state in a["optimizer"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"][index][key]), (index, key)
    assert torch.equal(a["rng"], b["rng"])


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    trainer = Trainer(make_config(tmp_path_factory.mktemp("straight"), 4))
    state = trainer.train()
    assert (state.step, state.data_position) == (4, 8)
    return trained_state(trainer)


def test_two_steps_resume_two_steps_is_bit_exact(tmp_path, straight_run):
    first = Trainer(make_config(tmp_path, 2))
    first.train()
    assert checkpointing.latest_checkpoint(tmp_path / "checkpoints").name == "step-00000002"
    second = Trainer(make_config(tmp_path, 4))
    second.resume()
    assert (second.state.step, second.state.data_position) == (2, 4)
    second.train()
    assert_identical(trained_state(second), straight_run)
    adapter = load_file(tmp_path / "final/adapters/manipulation/adapter_model.safetensors")
    assert adapter and all("lora" in k for k in adapter)


def test_killed_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch, straight_run):
    real_save = checkpointing.save_file
    calls = []

    def dies_on_second_checkpoint(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            with open(path, "wb") as handle:  # a half-written weights file, then the crash
                handle.write(b"\x00" * 64)
            raise KeyboardInterrupt("killed")
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpointing, "save_file", dies_on_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        Trainer(make_config(tmp_path, 4)).train()
    monkeypatch.undo()

    root = tmp_path / "checkpoints"
    assert [p.name for p in checkpointing.list_checkpoints(root)] == ["step-00000002"]
    assert (root / ".tmp-step-00000004").exists()  # the partial write is never read
    resumed = Trainer(make_config(tmp_path, 4))
    resumed.resume()
    assert resumed.state.step == 2
    resumed.train()
    assert_identical(trained_state(resumed), straight_run)
    assert not list(root.glob(".tmp-*"))  # cleaned up by the next successful write


def test_keep_last_and_checkpoint_errors(tmp_path):
    trainer = Trainer(make_config(tmp_path, 6, structure={"enabled": False}))
    trainer.train()
    names = [p.name for p in checkpointing.list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step-00000004", "step-00000006"]
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        trainer.resume(tmp_path)
    stage2 = Trainer(
        make_config(tmp_path / "s2", 1, mode="stage2", data={"synthetic": 2, "resolution": 32})
    )
    with pytest.raises(ValueError, match="does not fit"):
        stage2.resume(tmp_path / "checkpoints" / "step-00000006")


def write_manifest(folder, frames=6, size=32):
    """Two .npz clips of moving squares, a manifest, and their cached flow magnitudes."""
    data = MovingSquares(2, size, frames)
    records = []
    for index in range(2):
        item = data[index]
        pixels = ((item["video"].permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy()
        np.savez(folder / f"clip{index}.npz", frames=pixels)
        records.append(
            ClipRecord(id=str(index), path=f"clip{index}.npz", instruction=item["instruction"])
        )
    write_manifest_file(folder / "manifest.jsonl", records)
    cache_manifest_flow(folder / "manifest.jsonl", frames=3, size=size)
    return folder / "manifest.jsonl"


def test_command_line_on_a_manifest(tmp_path, capsys):
    manifest = write_manifest(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(
        "report_to: null\nsave_every: 1\nsample_every: 1\nsample_steps: 2\n"
        f"data: {{manifest: {manifest}, resolution: 32, num_frames: 3}}\n"
        "motion: {threshold: -1}\n"
        f"output_dir: {tmp_path / 'out'}\n"
    )
    main(["stage1", "--config", str(config), "--max-steps", "1"])
    main(
        [
            "stage2",
            "--config",
            str(config),
            "--max-steps",
            "1",
            "--output-dir",
            str(tmp_path / "out2"),
        ]
    )
    main(
        [
            "stage2",
            "--config",
            str(config),
            "--max-steps",
            "2",
            "--output-dir",
            str(tmp_path / "out2"),
            "--resume",
        ]
    )
    assert "stage2 to step 2" in capsys.readouterr().out
    assert (tmp_path / "out/final/adapters/manipulation/adapter_config.json").is_file()
    assert (tmp_path / "out2/final/adapters/prediction/adapter_config.json").is_file()
    goal = cv2.imread(str(tmp_path / "out/samples/step-00000001.png"))
    rollout = cv2.imread(str(tmp_path / "out2/samples/step-00000002.png"))
    assert goal.shape[0] == 32 and goal.shape[1] == 3 * 32 + 2 * 4  # input | goal | truth
    assert rollout.shape[1] == 7 * 32 + 6 * 4  # input | 3 predicted | 3 true frames
    with pytest.raises(SystemExit):
        main(["stage3", "--config", str(config)])

import json
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from training.data.clips import ClipError, even_indices, pair_indices, read_clip
from training.data.dataset import ClipDataset
from training.data.manifest import ClipRecord, read_manifest, write_manifest


def _moving_square(num_frames: int, size: int = 48) -> np.ndarray:
    """Frames whose index is readable back: a bright square moves 1 px right per frame."""
    frames = np.zeros((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        frames[t, 10:20, 2 + t : 12 + t] = (255, 128, 0)
        frames[t, 0, 0] = t  # exact index in a lossless format
    return frames


def _write_video(path: Path, frames: np.ndarray) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, frames.shape[2:0:-1])
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def _write_folder(path: Path, frames: np.ndarray) -> None:
    path.mkdir()
    for t, frame in enumerate(frames):
        cv2.imwrite(str(path / f"frame_{t:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))


@pytest.mark.parametrize(
    ("n", "length", "stride"), [(16, 16, 1), (31, 16, 2), (46, 16, 3), (40, 8, 6)]
)
def test_even_indices_cover_first_to_last_with_stride(n, length, stride):
    indices, got_stride = even_indices(n, length)
    assert len(indices) == length
    assert indices[0] == 0 and indices[-1] == n - 1
    assert all(b > a for a, b in pairwise(indices))
    assert got_stride == stride


def test_even_indices_rejects_short_clip():
    with pytest.raises(ClipError) as err:
        even_indices(10, 16)
    assert err.value.reason == "short"


def test_pair_indices_stay_in_their_ranges():
    rng = np.random.default_rng(0)
    seen_sources, seen_targets = set(), set()
    for _ in range(500):
        source, target = pair_indices(20, 2, 3, rng)
        assert 0 <= source < 2
        assert 17 <= target < 20
        seen_sources.add(source)
        seen_targets.add(target)
    assert seen_sources == {0, 1} and seen_targets == {17, 18, 19}
    assert pair_indices(5, 2, 3, rng)[1] >= 2
    with pytest.raises(ClipError):
        pair_indices(4, 2, 3, rng)


def test_read_clip_formats_agree(tmp_path):
    frames = _moving_square(20)
    np.savez_compressed(tmp_path / "a.npz", frames=frames)
    _write_folder(tmp_path / "b", frames)
    _write_video(tmp_path / "c.mp4", frames)
    pick = lambda n: [0, 5, n - 1]  # noqa: E731
    npz = read_clip(tmp_path / "a.npz", pick)
    folder = read_clip(tmp_path / "b", pick)
    video = read_clip(tmp_path / "c.mp4", pick)
    assert np.array_equal(npz, frames[[0, 5, 19]])
    assert np.array_equal(folder, npz)
    assert video.shape == npz.shape
    assert np.abs(video.astype(int) - npz.astype(int)).mean() < 12  # lossy codec
    assert np.array_equal(read_clip(tmp_path / "a.npz", lambda n: [n - 1], 4, 10), frames[[9]])


def _manifest(tmp_path: Path, names: list[str]) -> Path:
    records = [ClipRecord(id=n, path=n, instruction=f"do {n}") for n in names]
    write_manifest(tmp_path / "manifest.jsonl", records)
    return tmp_path / "manifest.jsonl"


def test_stage2_clip_tensor_shape_range_and_stride(tmp_path):
    np.savez_compressed(tmp_path / "a.npz", frames=_moving_square(31))
    ds = ClipDataset(_manifest(tmp_path, ["a.npz"]), frames=16, size=32)
    sample = ds[0]
    video = sample["video"]
    assert video.shape == (3, 16, 32, 32) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1 and video.max() > 0.9
    assert sample["frame_stride"] == 2 and sample["instruction"] == "do a.npz"


def test_stage1_pairs_come_from_first_and_last_frames(tmp_path):
    np.savez_compressed(tmp_path / "a.npz", frames=_moving_square(20))
    ds = ClipDataset(_manifest(tmp_path, ["a.npz"]), mode="pair", size=48, first_k=2, last_m=3)
    for epoch in range(6):
        ds.set_epoch(epoch)
        sample = ds[0]
        assert sample["source"].shape == (3, 1, 48, 48)
        source_t = round((sample["source"][0, 0, 0, 0].item() + 1) * 127.5)
        target_t = round((sample["target"][0, 0, 0, 0].item() + 1) * 127.5)
        assert source_t in (0, 1) and target_t in (17, 18, 19)
        assert sample["frame_stride"] == target_t - source_t


def test_missing_corrupt_and_short_clips_are_skipped_and_counted(tmp_path):
    np.savez_compressed(tmp_path / "good.npz", frames=_moving_square(20))
    np.savez_compressed(tmp_path / "short.npz", frames=_moving_square(5))
    (tmp_path / "corrupt.mp4").write_bytes(b"not a video at all" * 100)
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 truncated")
    names = ["missing.mp4", "corrupt.mp4", "good.npz", "corrupt.npz", "short.npz"]
    ds = ClipDataset(_manifest(tmp_path, names), frames=16, size=32)
    assert ds[0]["id"] == "good.npz"  # falls through to the next usable clip
    assert ds.skipped == {"missing": 1, "corrupt": 1}
    report = ds.check()
    assert report.usable == 1 and report.total == 5
    assert report.skipped == {"missing": 1, "corrupt": 2, "short": 1}
    assert len(ds) == 1


def test_samples_are_deterministic_across_workers(tmp_path):
    names = []
    for i in range(6):
        np.savez_compressed(tmp_path / f"c{i}.npz", frames=_moving_square(20 + i))
        names.append(f"c{i}.npz")
    manifest = _manifest(tmp_path, names)
    ds = ClipDataset(manifest, mode="pair", size=48, seed=3)
    serial = [ds[i]["frame_stride"] for i in range(6)]
    loader = DataLoader(ds, batch_size=2, num_workers=2)
    parallel = torch.cat([b["frame_stride"] for b in loader]).tolist()
    assert parallel == serial
    ds.set_epoch(1)
    strides = {tuple(ds[i]["frame_stride"] for i in range(6)) for _ in range(2)}
    assert len(strides) == 1


def test_manifest_round_trip_and_bad_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    write_manifest(
        path,
        [
            ClipRecord(
                id="x",
                path="x.npz",
                instruction="open",
                split="test",
                start=2,
                end=9,
                meta={"k": 1},
            )
        ],
    )
    (record,) = read_manifest(path)
    assert (record.split, record.start, record.end, record.meta) == ("test", 2, 9, {"k": 1})
    path.write_text(json.dumps({"id": "y", "path": "y", "instruction": "i", "split": "nope"}))
    with pytest.raises(ValueError, match=r"m\.jsonl:1"):
        read_manifest(path)


def test_alternative_phrasings_are_drawn_per_sample_without_changing_the_frames(tmp_path):
    np.savez_compressed(tmp_path / "a.npz", frames=_moving_square(20))
    phrasings = ["open the drawer", "pull the drawer out", "slide the drawer open"]
    plain = _manifest(tmp_path, ["a.npz"])
    alternatives = tmp_path / "alternatives.jsonl"
    write_manifest(
        alternatives,
        [ClipRecord(id="a", path="a.npz", instruction=phrasings[0], alternatives=phrasings[1:])],
    )
    assert read_manifest(alternatives)[0].phrasings == phrasings
    with_alternatives = ClipDataset(alternatives, mode="pair", size=48, seed=5)
    without = ClipDataset(plain, mode="pair", size=48, seed=5)
    drawn = []
    for epoch in range(24):
        with_alternatives.set_epoch(epoch)
        without.set_epoch(epoch)
        sample = with_alternatives[0]
        assert torch.equal(sample["target"], without[0]["target"])
        assert sample["instruction"] == with_alternatives[0]["instruction"]  # deterministic
        drawn.append(sample["instruction"])
    assert set(drawn) == set(phrasings)

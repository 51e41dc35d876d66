import cv2
import numpy as np
import pytest

from training.data.dataset import ClipDataset
from training.data.flow import cache_manifest_flow, dis_flow, flow_cache_path, flow_magnitudes
from training.data.manifest import ClipRecord, write_manifest


def _texture(size: int = 96, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).random((size, size)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 2.0)
    gray = cv2.normalize(smooth, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


@pytest.mark.parametrize(("dx", "dy"), [(3, 0), (0, -2), (2, 3)])
def test_dis_flow_recovers_a_shift(dx, dy):
    first = _texture()
    second = np.roll(first, (dy, dx), axis=(0, 1))
    flow = dis_flow(first, second)[16:-16, 16:-16]  # away from the wrapped border
    assert np.median(flow[..., 0]) == pytest.approx(dx, abs=0.25)
    assert np.median(flow[..., 1]) == pytest.approx(dy, abs=0.25)


def test_flow_magnitudes_are_latent_sized_and_in_latent_cells():
    first = _texture(64)
    frames = np.stack([first, np.roll(first, 4, axis=1), np.roll(first, 4, axis=1)])
    mags = flow_magnitudes(frames, latent_factor=8)
    assert mags.shape == (2, 8, 8) and mags.dtype == np.float16
    assert np.median(mags[0, 2:-2, 2:-2]) == pytest.approx(0.5, abs=0.06)  # 4 px / 8
    assert np.median(mags[1]) < 0.05  # no motion


def test_flow_is_cached_once_and_loaded_with_the_clip(tmp_path):
    first = _texture(64)
    frames = np.stack([np.roll(first, t, axis=1) for t in range(16)])
    np.savez_compressed(tmp_path / "a.npz", frames=frames)
    (tmp_path / "b.npz").write_bytes(b"broken")
    manifest = tmp_path / "m.jsonl"
    write_manifest(
        manifest, [ClipRecord(id=n, path=n, instruction="x") for n in ("a.npz", "b.npz")]
    )
    report = cache_manifest_flow(manifest, frames=16, size=64)
    assert (report.written, report.skipped["corrupt"]) == (1, 1)
    assert cache_manifest_flow(manifest, frames=16, size=64).existing == 1
    assert flow_cache_path(tmp_path / "a.npz", 16, 8, 8).exists()
    sample = ClipDataset(manifest, frames=16, size=64)[0]
    assert sample["flow"].shape == (15, 8, 8)

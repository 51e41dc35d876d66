import numpy as np
import torch

from training.data.epic import cosine_to, select_target


def _unit(v):
    return v / np.linalg.norm(v)


def test_dual_similarity_picks_frame_matching_text_and_scene():
    rng = np.random.default_rng(0)
    dim = 32
    text = _unit(rng.normal(size=dim))
    scene = _unit(rng.normal(size=dim))
    # 8 candidates: weak text match, same scene; frame 5 matches the text best;
    # frame 2 matches the text even better but is a different scene.
    clip_feats = np.stack([_unit(0.3 * text + rng.normal(size=dim) * 0.1) for _ in range(8)])
    clip_feats[5] = _unit(text + rng.normal(size=dim) * 0.05)
    clip_feats[2] = text
    dino_first = scene
    dino_feats = np.stack([_unit(scene + rng.normal(size=dim) * 0.1) for _ in range(8)])
    dino_feats[2] = _unit(rng.normal(size=dim))
    text_sim = cosine_to(torch.tensor(text), torch.tensor(clip_feats)).numpy()
    dino_sim = cosine_to(torch.tensor(dino_first), torch.tensor(dino_feats)).numpy()
    assert int(np.argmax(text_sim)) == 2  # text alone would pick the scene change
    best, score = select_target(text_sim, dino_sim)
    assert best == 5
    assert score == np.max(text_sim * dino_sim)


def test_dual_similarity_threshold_rejects_weak_clips():
    best, score = select_target(np.full(8, 0.3), np.full(8, 0.3))
    assert best is None and score == np.float64(0.3) * 0.3
    best, _ = select_target(np.full(8, 0.34), np.full(8, 0.3))
    assert best == 0

import argparse
import json

import numpy as np
import pytest

from training.data.cli import build_parser, seed_list
from training.data.dataset import ClipDataset
from training.data.manifest import ClipRecord
from training.data.metaworld_gen import (
    NOOP_TASK,
    generate,
    layout_jobs,
    load_tasks,
    split_for_seed,
    wants_noop,
)


@pytest.mark.slow
def test_generator_writes_a_shared_start_pair(tmp_path):
    summary = generate(tmp_path, clips=2, size=64, frames=16, workers=1, progress=False)
    assert summary.clips == 2 and summary.failures == {}
    records = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    tasks = [r["meta"]["task"] for r in records]
    assert tasks == ["drawer-open-v3", "drawer-close-v3"]
    assert records[0]["meta"]["scene_id"] == records[1]["meta"]["scene_id"]
    assert records[0]["split"] == split_for_seed(0)
    clips = [np.load(tmp_path / r["path"]) for r in records]
    for clip in clips:
        assert clip["frames"].shape == (16, 64, 64, 3) and clip["frames"].dtype == np.uint8
        assert clip["depth"].shape == (16, 64, 64) and clip["depth"].dtype == np.float16
        assert clip["frames"].std() > 10  # a rendered scene, not a black frame
        assert 0.2 < float(clip["depth"].min()) < 3.0
        assert clip["steps"][0] == 0 and clip["steps"][-1] > 16
    first = [c["frames"][0] for c in clips]
    last = [c["frames"][-1].astype(int) for c in clips]
    assert np.array_equal(first[0], first[1])  # same start, the instruction decides
    assert np.abs(last[0] - last[1]).mean() > 1.0
    phrasings = load_tasks()[1]
    pool = "train" if records[0]["split"] == "train" else "eval"
    for record in records:
        assert record["instruction"] in phrasings[record["meta"]["task"]][pool]
    sample = ClipDataset(tmp_path / "manifest.jsonl", frames=16, size=64)[1]
    assert sample["video"].shape == (3, 16, 64, 64)


def test_phrasings_for_evaluation_are_separate():
    scenes, phrasings = load_tasks()
    tasks = {t for s in scenes for t in s.tasks} | {NOOP_TASK}
    assert tasks == set(phrasings)
    for task in tasks:
        train, held_out = set(phrasings[task]["train"]), set(phrasings[task]["eval"])
        assert len(train) >= 3 and len(held_out) >= 2 and not train & held_out
        assert len(phrasings[task]["val"]) >= 2
    every_phrasing = [p for task in tasks for pool in phrasings[task].values() for p in pool]
    assert len(every_phrasing) == len(set(every_phrasing))  # no phrasing names two tasks
    assert {split_for_seed(s) for s in range(200)} == {"train", "val", "test"}


@pytest.mark.parametrize("pool", ["train", "val", "eval"])
def test_evaluation_rephrases_a_clip_from_the_named_pool_the_same_way_every_run(pool):
    from training.evaluate import rephrase

    phrasings = load_tasks()[1]["door-unlock-v3"]
    clips = [
        ClipRecord(
            id=f"door-lock-{i:06d}_unlock",
            path="c.npz",
            instruction="unlock the door",
            split="val",
            meta={"task": "door-unlock-v3"},
        )
        for i in range(20)
    ]
    chosen = [rephrase(clip, pool) for clip in clips]
    assert set(chosen) <= set(phrasings[pool]) and len(set(chosen)) > 1
    assert chosen == [rephrase(clip, pool) for clip in clips]
    assert rephrase(clips[0], "recorded") == "unlock the door"


def test_layout_jobs_cover_every_scene_of_each_seed_in_the_given_split():
    scenes, _ = load_tasks()
    jobs = layout_jobs([3005, 3001], split="test")
    assert [(job.seed, job.scene.name) for job in jobs] == [
        (seed, scene.name) for seed in (3005, 3001) for scene in scenes
    ]
    assert {job.split for job in jobs} == {"test"}
    assert [job.index for job in jobs] == list(range(len(jobs)))
    hashed = layout_jobs(range(40))
    assert {job.split for job in hashed} == {split_for_seed(s) for s in range(40)}
    with pytest.raises(ValueError, match="split"):
        layout_jobs([1], split="holdout")
    with pytest.raises(ValueError, match="repeat"):
        layout_jobs([1, 1])


def test_seed_list_parses_ranges_and_rejects_bad_lists():
    assert seed_list("3000-3003,4000, 17") == [3000, 3001, 3002, 3003, 4000, 17]
    for bad in ("3000-2999", "a-b", "1,1", "5-"):
        with pytest.raises(argparse.ArgumentTypeError):
            seed_list(bad)
    args = build_parser().parse_args(
        ["metaworld", "--layout-seeds", "3000-3001", "--split", "test"]
    )
    assert args.layout_seeds == [3000, 3001] and args.split == "test"


@pytest.mark.slow
def test_held_out_layouts_get_evaluation_phrasings_whatever_their_seed_hash(tmp_path):
    seed = next(s for s in range(3000, 3100) if split_for_seed(s) == "train")
    summary = generate(
        tmp_path,
        None,
        size=32,
        frames=4,
        workers=1,
        progress=False,
        layout_seeds=[seed],
        split="test",
    )
    scenes, phrasings = load_tasks()
    records = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert summary.clips == len(records) > 0
    assert summary.scenes + sum(summary.failures.values()) == len(scenes)  # each scene tried
    assert summary.splits == {"test": len(records)}
    for record in records:
        assert record["split"] == "test" and record["meta"]["seed"] == seed
        assert record["meta"]["phrasing_set"] == "eval"
        assert set(record["alternatives"]) | {record["instruction"]} == set(
            phrasings[record["meta"]["task"]]["eval"]
        )
        assert (tmp_path / record["path"]).is_file()


def test_noop_layouts_are_a_fixed_share_of_scene_layouts():
    scenes, _ = load_tasks()
    draws = [wants_noop(seed, scene, 0.25) for seed in range(200) for scene in scenes]
    assert 0.2 < np.mean(draws) < 0.3
    assert draws == [wants_noop(seed, scene, 0.25) for seed in range(200) for scene in scenes]
    assert not any(wants_noop(seed, scenes[0], 0.0) for seed in range(50))
    assert all(wants_noop(seed, scenes[0], 1.0) for seed in range(50))
    assert {job.noop for job in layout_jobs([5], noop_fraction=1.0)} == {True}
    with pytest.raises(ValueError, match="no-op"):
        wants_noop(0, scenes[0], 1.5)


@pytest.mark.slow
def test_noop_clip_repeats_the_shared_first_frame(tmp_path):
    generate(
        tmp_path,
        3,
        size=32,
        frames=4,
        workers=1,
        progress=False,
        layout_seeds=[3001],
        split="train",
        noop_fraction=1.0,
    )
    records = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [r["meta"]["task"] for r in records] == ["drawer-open-v3", "drawer-close-v3", NOOP_TASK]
    noop, action = records[2], records[0]
    assert noop["meta"]["scene_id"] is None and noop["meta"]["opposite"] is None
    assert noop["meta"]["start_of"] == action["meta"]["scene_id"]
    assert noop["instruction"] in load_tasks()[1][NOOP_TASK]["train"]
    frames = np.load(tmp_path / noop["path"])["frames"]
    first = np.load(tmp_path / action["path"])["frames"][0]
    assert frames.shape == (4, 32, 32, 3)
    assert all(np.array_equal(frame, first) for frame in frames)

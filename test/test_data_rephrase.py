import json

import pytest

from training.data.cli import main
from training.data.manifest import ClipRecord, read_manifest, write_manifest
from training.data.metaworld_gen import load_tasks
from training.data.rephrase import load_extra_phrasings, rephrase_manifest

TABLE = {
    "_doc": "test table",
    "scenes": [{"name": "drawer", "tasks": ["drawer-open-v3"], "rand_vec": "same"}],
    "phrasings": {
        "drawer-open-v3": {
            "train": ["open the drawer", "pull the drawer open", "tug the drawer open"],
            "eval": ["get the drawer open", "pull out the drawer"],
            "val": ["please open the drawer"],
        }
    },
}


def _record(name: str, instruction: str, phrasing_set: str, source: str = "metaworld"):
    return ClipRecord(
        id=name,
        path=f"clips/{name}.npz",
        instruction=instruction,
        split="train" if phrasing_set == "train" else "test",
        source=source,
        meta={"task": "drawer-open-v3", "phrasing_set": phrasing_set},
        alternatives=["open the drawer"] if instruction != "open the drawer" else [],
    )


@pytest.fixture
def table(tmp_path):
    """The test task table, written as a file."""
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(TABLE))
    return path


def test_pools_come_from_the_table_and_clips_keep_their_instruction(tmp_path, table):
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(
        manifest,
        [
            _record("a", "pull the drawer open", "train"),
            _record("b", "get the drawer open", "eval"),
            _record("c", "an old phrasing", "train"),
            _record("d", "pull the drawer open", "train", source="rosbag"),
        ],
    )
    lines = rephrase_manifest(manifest, tmp_path / "new.jsonl", table)
    a, b, c, d = read_manifest(tmp_path / "new.jsonl")
    assert a.instruction == "pull the drawer open"
    assert a.alternatives == ["open the drawer", "tug the drawer open"]
    assert b.alternatives == ["pull out the drawer"]  # evaluation clips stay on their own set
    assert c.alternatives == ["open the drawer"]  # left the table: unchanged, and counted
    assert d.alternatives == ["open the drawer"]
    assert "instruction not in table 1" in lines[0] and "refreshed 2" in lines[0]
    assert "not metaworld 1" in lines[0]


def test_the_new_manifest_must_sit_beside_the_clips(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, [_record("a", "open the drawer", "train")])
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ValueError, match="relative"):
        rephrase_manifest(manifest, tmp_path / "elsewhere" / "new.jsonl")


def test_extra_phrasings_join_training_pools_only(tmp_path, table):
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(
        manifest,
        [_record("a", "open the drawer", "train"), _record("b", "get the drawer open", "eval")],
    )
    extra = {"drawer-open-v3": ["yank the drawer open"]}
    rephrase_manifest(manifest, tmp_path / "new.jsonl", table, extra)
    a, b = read_manifest(tmp_path / "new.jsonl")
    assert a.alternatives == ["pull the drawer open", "tug the drawer open", "yank the drawer open"]
    assert b.alternatives == ["pull out the drawer"]
    with pytest.raises(ValueError, match="already in the table"):
        rephrase_manifest(
            manifest, tmp_path / "new.jsonl", table, {"drawer-open-v3": ["get the drawer open"]}
        )


def test_packaged_extra_phrasings_are_new_and_cover_every_task():
    phrasings = load_tasks()[1]
    extra = load_extra_phrasings()
    assert set(extra) == set(phrasings)
    known = [p for task in phrasings.values() for pool in task.values() for p in pool]
    added = [p for pool in extra.values() for p in pool]
    assert len(set(added)) == len(added) and not set(added) & set(known)


def test_cli_refreshes_with_the_packaged_files(tmp_path, capsys):
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, [_record("a", "open the drawer", "train")])
    out = tmp_path / "new.jsonl"
    main(["rephrase", "--manifest", str(manifest), "--out", str(out)])
    (plain,) = read_manifest(out)
    main(["rephrase", "--manifest", str(manifest), "--out", str(out), "--extra-phrasings"])
    (extended,) = read_manifest(out)
    pool = load_tasks()[1]["drawer-open-v3"]["train"]
    assert plain.alternatives == [p for p in pool if p != "open the drawer"]
    assert extended.alternatives == plain.alternatives + load_extra_phrasings()["drawer-open-v3"]
    assert "refreshed 1" in capsys.readouterr().out

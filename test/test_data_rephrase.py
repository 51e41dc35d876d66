import json

import pytest

from training.data.cli import main
from training.data.manifest import ClipRecord, read_manifest, write_manifest
from training.data.rephrase import rephrase_manifest

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


def test_pools_come_from_the_table_and_clips_keep_their_instruction(tmp_path):
    table = tmp_path / "tasks.json"
    table.write_text(json.dumps(TABLE))
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


def test_cli_refreshes_with_the_packaged_table(tmp_path, capsys):
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, [_record("a", "open the drawer", "train")])
    main(["rephrase", "--manifest", str(manifest), "--out", str(tmp_path / "new.jsonl")])
    (record,) = read_manifest(tmp_path / "new.jsonl")
    assert len(record.alternatives) >= 15 and "open the drawer" not in record.alternatives
    assert "refreshed 1" in capsys.readouterr().out

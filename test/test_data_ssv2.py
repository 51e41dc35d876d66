import json

from training.data.ssv2 import convert_ssv2, kept_templates, load_templates, normalize_template

EXCLUDING_WORDS = (
    "pretending",
    "holding",
    "showing",
    "fail",
    "nothing happens",
    "hitting",
    "throw",
)


def test_template_list_keeps_exactly_112_of_174():
    templates = load_templates()
    assert len(templates) == 174
    assert len({t["template"] for t in templates}) == 174
    assert sorted(t["id"] for t in templates) == list(range(174))
    assert sum(t["keep"] for t in templates) == 112
    assert len(kept_templates()) == 112
    for t in templates:
        assert t["reason"]
        if any(word in t["template"].lower() for word in EXCLUDING_WORDS):
            assert not t["keep"], t["template"]
    kept = kept_templates()
    assert "opening something" in kept and "closing something" in kept
    assert "holding something" not in kept


def test_converter_filters_templates_splits_and_counts(tmp_path):
    labels, videos = tmp_path / "labels", tmp_path / "videos"
    labels.mkdir()
    videos.mkdir()

    def item(i, template, label):
        return {"id": str(i), "template": template, "label": label, "placeholders": []}

    train = [
        item(1, "Opening [something]", "opening a box"),
        item(2, "Holding [something]", "holding a pen"),
        item(3, "Closing [something]", "closing a jar"),  # video missing
    ]
    val = [
        item(10 + i, "Putting [something] into [something]", f"putting {i} in") for i in range(4)
    ]
    (labels / "train.json").write_text(json.dumps(train))
    (labels / "validation.json").write_text(json.dumps(val))
    for i in (1, 2, 10, 11, 12, 13):
        (videos / f"{i}.webm").write_bytes(b"")
    report = convert_ssv2(labels, videos, tmp_path / "m.jsonl", test_clips=2)
    assert report.splits == {"train": 1, "val": 2, "test": 2}
    assert report.excluded_template == 1
    assert report.skipped == {"missing": 1}
    lines = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert lines[0]["instruction"] == "opening a box" and lines[0]["source"] == "ssv2"
    # decoding the (empty) videos finds them corrupt
    checked = convert_ssv2(labels, videos, tmp_path / "c.jsonl", test_clips=2, check_videos=True)
    assert checked.skipped == {"missing": 1, "corrupt": 5}


def test_normalize_template():
    assert normalize_template("Putting [something] into [something]") == (
        "putting something into something"
    )

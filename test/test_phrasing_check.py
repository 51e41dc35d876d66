import torch

from training.phrasing_check import check_phrasings, format_checks

WORDS = ["open", "close", "drawer", "unlock", "lock", "position"]
PHRASINGS = {
    "open": {"train": ["open drawer", "unlock drawer"], "eval": ["drawer open position"]},
    "close": {"train": ["close drawer", "lock drawer position"], "val": ["close close"]},
}


def bag_of_words(texts: list[str]) -> dict[str, torch.Tensor]:
    """Word counts: similarity follows shared words, like a simple text encoder."""
    return {
        "words": torch.tensor(
            [[t.split().count(w) for w in WORDS] for t in texts], dtype=torch.float
        )
    }


def test_a_phrasing_sharing_words_with_the_opposite_task_is_flagged():
    checks = check_phrasings(bag_of_words, PHRASINGS, [("open", "close")])
    by_phrasing = {c.phrasing: c for c in checks}
    assert set(by_phrasing) == {"drawer open position", "close close"}
    flagged = by_phrasing["drawer open position"]
    # "drawer open position" shares two words with "lock drawer position" and two with
    # "open drawer", but the latter is shorter, so its cosine is higher: not flagged.
    assert flagged.nearest == "open drawer" and not flagged.nearer_opposite
    assert by_phrasing["close close"].nearest == "close drawer"
    assert by_phrasing["close close"].margin > 0


def test_the_opposite_tasks_nearest_phrasing_is_reported():
    phrasings = {**PHRASINGS, "open": {**PHRASINGS["open"], "eval": ["lock position"]}}
    (check,) = [
        c for c in check_phrasings(bag_of_words, phrasings, [("open", "close")]) if c.task == "open"
    ]
    assert check.nearer_opposite and check.nearest == "lock drawer position"
    lines = format_checks([check])
    assert "| words | eval | 1 | 1 |" in lines
    assert any("lock position" in line and "lock drawer position" in line for line in lines)

import pytest
import torch

from training.phrasing_check import add_own_phrasings, check_phrasings, format_checks

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


def test_own_phrasings_join_their_task_as_a_set_of_their_own():
    merged = add_own_phrasings(PHRASINGS, ["open=pull it out", "open=lock position"])
    assert merged["open"]["own"] == ["pull it out", "lock position"]
    assert "own" not in PHRASINGS["open"]  # the table itself is left alone
    checks = check_phrasings(bag_of_words, merged, [("open", "close")], sets=["own"])
    assert [c.phrasing for c in checks if c.nearer_opposite] == ["lock position"]
    for bad, words in (("open", "TASK=TEXT"), ("shut=close it", "unknown task")):
        with pytest.raises(ValueError, match=words):
            add_own_phrasings(PHRASINGS, [bad])


def test_the_report_says_when_nothing_is_flagged_and_can_list_every_phrasing():
    checks = check_phrasings(bag_of_words, PHRASINGS, [("open", "close")])
    assert (
        format_checks(checks)[-1] == "No phrasing is nearer the opposite task's training phrasings."
    )
    listed = format_checks(checks, every=True)
    assert sum("| +0." in line for line in listed) == len(checks)

"""Refresh the phrasings of Meta-World clips from the task table, keeping the clips.

A manifest stores each clip's phrasing pool (``instruction`` plus ``alternatives``) as it was
when the clips were generated. This rewrites the pools from the task table, optionally with
extra training phrasings (``metaworld_extra_phrasings.json``), so that training draws from
them without re-simulating the clips. Each clip keeps its recorded instruction and its
phrasing set; only train-set pools take the extra phrasings.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

from training.data.manifest import ClipRecord, format_counts, iter_manifest, write_manifest
from training.data.metaworld_gen import load_tasks

EXTRA_PHRASINGS_FILE = Path(__file__).with_name("metaworld_extra_phrasings.json")


def load_extra_phrasings(path: Path = EXTRA_PHRASINGS_FILE) -> dict[str, list[str]]:
    """Return ``task -> extra training phrasings`` from a file shaped like the packaged one."""
    return json.loads(path.read_text())["train"]


def rephrase_record(
    record: ClipRecord, phrasings: dict[str, dict[str, list[str]]]
) -> tuple[ClipRecord, str]:
    """Return the record with its pool from ``phrasings`` and what happened to it.

    The outcome is ``"refreshed"``, ``"not metaworld"`` (other sources pass unchanged) or
    ``"instruction not in table"`` (the recorded instruction left the table's set: unchanged).
    """
    task = record.meta.get("task")
    phrasing_set = record.meta.get("phrasing_set")
    if record.source != "metaworld" or task not in phrasings or phrasing_set is None:
        return record, "not metaworld"
    pool = phrasings[task][phrasing_set]
    if record.instruction not in pool:
        return record, "instruction not in table"
    alternatives = [p for p in pool if p != record.instruction]
    return replace(record, alternatives=alternatives), "refreshed"


def rephrase_manifest(
    manifest: Path,
    out: Path,
    tasks_file: Path | None = None,
    extra: dict[str, list[str]] | None = None,
) -> list[str]:
    """Write ``out``: ``manifest`` with Meta-World pools from the task table; summary lines.

    ``extra`` phrasings join the training pools after the table's. ``out`` must lie in the
    manifest's folder, since clip paths are relative to it.
    """
    if out.resolve().parent != manifest.resolve().parent:
        raise ValueError(f"{out} must be in {manifest.parent} (clip paths are relative to it)")
    _, phrasings = load_tasks() if tasks_file is None else load_tasks(tasks_file)
    for task, added in (extra or {}).items():
        known = {p for pool in phrasings[task].values() for p in pool}
        if known & set(added):
            raise ValueError(
                f"extra phrasings of {task} already in the table: {known & set(added)}"
            )
        phrasings[task] = {**phrasings[task], "train": [*phrasings[task]["train"], *added]}
    outcomes: Counter[str] = Counter()
    records = []
    for record in iter_manifest(manifest):
        record, outcome = rephrase_record(record, phrasings)
        outcomes[outcome] += 1
        records.append(record)
    written = write_manifest(out, records)
    return [f"clips: {written} ({format_counts(outcomes)})", f"manifest: {out}"]

"""``showme-data``: prepare training data (Meta-World, SSv2, EPIC-KITCHENS, rosbags, optical flow).

Every command shows progress and ends with a summary of what it wrote and what it skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def seed_list(text: str) -> list[int]:
    """Parse layout seeds such as ``3000-3099,4000,4005-4009`` (ranges inclusive)."""
    seeds: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last if dash else first)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad layout seed list {text!r}") from None
        if high < low:
            raise argparse.ArgumentTypeError(f"empty seed range {part.strip()!r}")
        seeds.extend(range(low, high + 1))
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"layout seeds repeat in {text!r}")
    return seeds


def _metaworld(args: argparse.Namespace) -> list[str]:
    from training.data.metaworld_gen import generate

    if args.layout_seeds is not None and args.seed is not None:
        raise SystemExit("showme-data metaworld: give --seed or --layout-seeds, not both")
    clips = 2000 if args.clips is None and args.layout_seeds is None else args.clips
    out = Path(args.out or f"data/metaworld{args.size}")
    summary = generate(
        out,
        clips,
        args.size,
        args.frames,
        args.workers,
        args.seed or 0,
        layout_seeds=args.layout_seeds,
        split=args.split,
        noop_fraction=args.noop_fraction,
    )
    return [*summary.lines(), f"manifest: {out / 'manifest.jsonl'}"]


def _rephrase(args: argparse.Namespace) -> list[str]:
    from training.data.rephrase import load_extra_phrasings, rephrase_manifest

    extra = load_extra_phrasings() if args.extra_phrasings else None
    return rephrase_manifest(Path(args.manifest), Path(args.out), extra=extra)


def _ssv2(args: argparse.Namespace) -> list[str]:
    from training.data.ssv2 import convert_ssv2

    report = convert_ssv2(
        args.labels, args.videos, Path(args.out), args.test_clips, args.seed, args.check_videos
    )
    return report.lines()


def _epic(args: argparse.Namespace) -> list[str]:
    from training.data.epic import curate_epic

    report = curate_epic(
        args.annotations,
        args.videos,
        Path(args.out),
        args.clip,
        args.dino,
        args.split,
        args.threshold,
        args.device,
    )
    return report.lines()


def _rosbag(args: argparse.Namespace) -> list[str]:
    from training.data.rosbag import convert_rosbags

    report = convert_rosbags(
        args.bags,
        Path(args.out),
        args.camera_topic,
        args.instruction_topic,
        args.segments,
        args.split,
        args.size,
    )
    return report.lines()


def _flow(args: argparse.Namespace) -> list[str]:
    from training.data.flow import cache_manifest_flow

    report = cache_manifest_flow(Path(args.manifest), args.frames, args.size, args.latent_factor)
    return report.lines()


def build_parser() -> argparse.ArgumentParser:
    """Build the ``showme-data`` argument parser."""
    parser = argparse.ArgumentParser(prog="showme-data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    mw = sub.add_parser("metaworld", help="generate Meta-World clips with scripted experts")
    mw.add_argument(
        "--clips",
        type=int,
        default=None,
        help="number of clips (default 2000; with --layout-seeds: every scene of every seed)",
    )
    mw.add_argument("--size", type=int, default=64, help="frame side in pixels (64 or 128)")
    mw.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    mw.add_argument("--out", help="output folder (default data/metaworld<size>)")
    mw.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    mw.add_argument(
        "--seed", type=int, default=None, help="first layout seed of a contiguous block (default 0)"
    )
    mw.add_argument(
        "--layout-seeds",
        type=seed_list,
        default=None,
        help="exact layout seeds, e.g. 3000-3099,4000: every scene at each",
    )
    mw.add_argument(
        "--split",
        choices=["train", "val", "test"],
        default=None,
        help="put every clip in this split (val/test get evaluation-only phrasings); "
        "default: a hash of the layout seed",
    )
    mw.add_argument(
        "--noop-fraction",
        type=float,
        default=0.0,
        help="share of scene layouts that also give a no-op clip (a 'do nothing' phrasing, "
        "the first frame repeated); default 0",
    )
    mw.set_defaults(run=_metaworld)

    rp = sub.add_parser(
        "rephrase",
        help="refresh Meta-World clips' phrasing pools from the task table (clips unchanged)",
    )
    rp.add_argument("--manifest", required=True, help="Meta-World manifest (.jsonl)")
    rp.add_argument("--out", required=True, help="new manifest, in the same folder")
    rp.add_argument(
        "--extra-phrasings",
        action="store_true",
        help="add the training phrasings of metaworld_extra_phrasings.json to train clips' pools",
    )
    rp.set_defaults(run=_rephrase)

    ss = sub.add_parser("ssv2", help="Something-Something v2 labels + videos -> manifest")
    ss.add_argument("--labels", type=Path, required=True, help="folder with train.json etc.")
    ss.add_argument("--videos", type=Path, required=True, help="folder with <id>.webm")
    ss.add_argument("--out", required=True, help="output manifest (.jsonl)")
    ss.add_argument("--test-clips", type=int, default=2048, help="test clips drawn from val")
    ss.add_argument("--seed", type=int, default=0)
    ss.add_argument("--check-videos", action="store_true", help="decode each video once")
    ss.set_defaults(run=_ssv2)

    ep = sub.add_parser("epic", help="EPIC-KITCHENS-100 dual-similarity curation -> manifest")
    ep.add_argument("--annotations", type=Path, required=True, help="EPIC_100_<split>.csv")
    ep.add_argument("--videos", type=Path, required=True, help="folder with <narration_id>.mp4")
    ep.add_argument("--out", required=True, help="output manifest (.jsonl)")
    ep.add_argument("--clip", type=Path, required=True, help="local CLIP model folder")
    ep.add_argument("--dino", type=Path, required=True, help="local DINO model folder")
    ep.add_argument("--split", default="train", choices=["train", "val", "test"])
    ep.add_argument("--threshold", type=float, default=0.1)
    ep.add_argument("--device", default="cpu")
    ep.set_defaults(run=_epic)

    rb = sub.add_parser("rosbag", help="rosbag2 recordings (MCAP, sqlite3) -> manifest clips")
    rb.add_argument("bags", type=Path, nargs="+", help="bag folders or .mcap/.db3 files")
    rb.add_argument("--camera-topic", required=True, help="sensor_msgs/Image or CompressedImage")
    segments = rb.add_mutually_exclusive_group(required=True)
    segments.add_argument("--instruction-topic", help="std_msgs/String topic of instructions")
    segments.add_argument(
        "--segments", type=Path, help="CSV of start,end,instruction[,bag] (seconds from bag start)"
    )
    rb.add_argument("--out", required=True, help="output folder (manifest.jsonl and clips/)")
    rb.add_argument("--split", default="train", choices=["train", "val", "test"])
    rb.add_argument("--size", type=int, default=None, help="resize and crop frames to size x size")
    rb.set_defaults(run=_rosbag)

    fl = sub.add_parser("flow", help="cache optical-flow magnitudes next to each clip")
    fl.add_argument("--manifest", required=True)
    fl.add_argument("--frames", type=int, default=16, help="frames sampled per clip")
    fl.add_argument("--size", type=int, default=64, help="training resolution")
    fl.add_argument("--latent-factor", type=int, default=8, help="pixels per latent cell")
    fl.set_defaults(run=_flow)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``showme-data``."""
    args = build_parser().parse_args(argv)
    lines = args.run(args)
    print("\n".join(["", f"== showme-data {args.command}: summary", *lines]))


if __name__ == "__main__":
    main()

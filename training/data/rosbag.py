"""rosbag2 recordings (MCAP or sqlite3) -> manifest clips of a robot's own camera.

Bags are read with ``rosbags`` (no ROS install needed). A clip is one instruction segment of
one camera topic (``sensor_msgs/Image`` in any encoding ``rosbags-image`` converts to RGB, or
``sensor_msgs/CompressedImage`` in a format OpenCV decodes). Segments come from either

- a ``std_msgs/String`` instruction topic: each message starts a segment that lasts until the
  next message or the end of the bag; an empty message ends the current segment without
  starting one; or
- a sidecar CSV file with the columns ``start``, ``end`` (seconds from the start of the bag),
  ``instruction`` and, when several bags are converted, ``bag`` (the bag folder's or file's name).

Times are the bag's receive times. From each segment, 16 camera frames spread evenly from its
first to its last frame are written to ``clips/<bag>/<segment>.npz`` as ``frames``
``(T, H, W, 3)`` uint8 RGB, like the Meta-World generator's clips. Camera messages that cannot
be read or decoded are skipped and counted by reason (only the sampled messages are decoded), and
the frames are spread again over the rest; a segment with too few usable frames is skipped and
counted too.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from training.data.clips import ClipError, even_indices, resize_center_crop
from training.data.manifest import ClipRecord, format_counts, write_manifest

SAMPLED_FRAMES = 16
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
STRING_TYPE = "std_msgs/msg/String"
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class Segment:
    """One instruction over a time range of a bag (receive times in nanoseconds, end exclusive)."""

    start_ns: int
    end_ns: int
    instruction: str


@dataclass
class RosbagReport:
    """Counts of a rosbag conversion run."""

    bags: int = 0
    camera_messages: int = 0
    segments: int = 0
    clips: int = 0
    bad_messages: Counter[str] = field(default_factory=Counter)
    skipped_segments: Counter[str] = field(default_factory=Counter)
    out: Path | None = None

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        return [
            f"bags: {self.bags}, camera messages: {self.camera_messages}",
            f"segments: {self.segments}, clips written: {self.clips}",
            f"bad camera messages skipped: {format_counts(self.bad_messages)}",
            f"segments skipped: {format_counts(self.skipped_segments)}",
            f"manifest: {self.out}",
        ]


class BadMessageError(Exception):
    """A camera message that cannot become an RGB frame; ``reason`` names why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def image_to_rgb(msg: Any) -> np.ndarray:
    """Return a ``(H, W, 3)`` uint8 RGB frame from a deserialized Image or CompressedImage."""
    if hasattr(msg, "format"):
        frame = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            raise BadMessageError("undecodable", f"OpenCV cannot decode format {msg.format!r}")
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    from rosbags.image import ImageConversionError, ImageFormatError, image_to_cvimage
    from rosbags.image.image import to_cvtype

    try:
        depth, _, _, channels = to_cvtype(msg.encoding)
    except ImageFormatError as err:
        raise BadMessageError("unsupported encoding", str(err)) from err
    row = msg.width * channels * depth // 8
    if msg.height == 0 or msg.width == 0:
        raise BadMessageError("empty", "image has no pixels")
    if msg.step < row or len(msg.data) < msg.step * msg.height:
        raise BadMessageError("truncated", f"{len(msg.data)} bytes for step {msg.step}")
    rows = np.frombuffer(msg.data, np.uint8)[: msg.step * msg.height].reshape(msg.height, -1)
    packed = dataclasses.replace(msg, data=np.ascontiguousarray(rows[:, :row]), step=row)
    try:
        frame = image_to_cvimage(packed, "rgb8")
    except (ImageConversionError, ImageFormatError, cv2.error) as err:
        raise BadMessageError("unsupported encoding", str(err)) from err
    return np.ascontiguousarray(frame)


def segments_from_messages(messages: Sequence[tuple[int, str]], bag_end_ns: int) -> list[Segment]:
    """Segments of ``(receive time, text)`` instruction messages sorted by time."""
    segments = []
    for i, (start, text) in enumerate(messages):
        end = messages[i + 1][0] if i + 1 < len(messages) else bag_end_ns + 1
        if text.strip() and end > start:
            segments.append(Segment(start, end, text.strip()))
    return segments


def read_segment_file(path: Path) -> list[tuple[str | None, float, float, str]]:
    """Rows ``(bag or None, start s, end s, instruction)`` of a sidecar CSV segment file."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"start", "end", "instruction"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        rows = []
        for number, row in enumerate(reader, start=2):
            try:
                start, end = float(row["start"]), float(row["end"])
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}:{number}: start and end must be seconds") from err
            if end <= start or not (row["instruction"] or "").strip():
                raise ValueError(f"{path}:{number}: needs end > start and an instruction")
            rows.append((row.get("bag") or None, start, end, row["instruction"].strip()))
    return rows


def _bag_name(bag: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", bag.name.removesuffix(".mcap").removesuffix(".db3"))


def _file_segments(
    rows: list[tuple[str | None, float, float, str]], bags: Sequence[Path]
) -> dict[str, list[tuple[float, float, str]]]:
    names = {_bag_name(b) for b in bags}
    by_bag: dict[str, list[tuple[float, float, str]]] = {name: [] for name in names}
    for bag, start, end, text in rows:
        if bag is None and len(names) > 1:
            raise ValueError("the segment file needs a 'bag' column when several bags are given")
        name = _bag_name(Path(bag)) if bag else next(iter(names))
        if name not in by_bag:
            raise ValueError(f"segment file names bag {bag!r}, not among {sorted(names)}")
        by_bag[name].append((start, end, text))
    return by_bag


def _connection(reader: Any, topic: str, types: tuple[str, ...], bag: Path) -> Any:
    connections = [c for c in reader.connections if c.topic == topic]
    if not connections:
        topics = sorted({c.topic for c in reader.connections})
        raise ValueError(f"{bag}: no topic {topic!r}; topics: {topics}")
    if connections[0].msgtype not in types:
        raise ValueError(f"{bag}: {topic} is {connections[0].msgtype}, expected one of {types}")
    return connections


def _decode(reader: Any, connection: Any, raw: bytes) -> np.ndarray:
    try:
        msg = reader.deserialize(raw, connection.msgtype)
    except Exception as err:  # rosbags raises assorted errors for malformed CDR
        raise BadMessageError("undeserializable", str(err)) from err
    return image_to_rgb(msg)


def _instructions(reader: Any, connections: Any, report: RosbagReport) -> list[tuple[int, str]]:
    messages = []
    for connection, t, raw in reader.messages(connections):
        try:
            messages.append((t, reader.deserialize(raw, connection.msgtype).data))
        except Exception:  # rosbags raises assorted errors for malformed CDR
            report.bad_messages["undeserializable instruction"] += 1
    return messages


def convert_bag(
    bag: Path,
    out: Path,
    camera_topic: str,
    report: RosbagReport,
    instruction_topic: str | None = None,
    file_segments: list[tuple[float, float, str]] | None = None,
    split: str = "train",
    size: int | None = None,
) -> list[ClipRecord]:
    """Write the clips of one bag under ``out/clips`` and return their manifest records."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore
    from tqdm import tqdm

    name = _bag_name(bag)
    with AnyReader([bag], default_typestore=get_typestore(Stores.LATEST)) as reader:
        camera = _connection(reader, camera_topic, (IMAGE_TYPE, COMPRESSED_TYPE), bag)
        if instruction_topic is not None:
            texts = _connection(reader, instruction_topic, (STRING_TYPE,), bag)
            segments = segments_from_messages(_instructions(reader, texts, report), reader.end_time)
        else:
            segments = [
                Segment(
                    reader.start_time + round(s * NS_PER_S),
                    reader.start_time + round(e * NS_PER_S),
                    text,
                )
                for s, e, text in file_segments or []
            ]
        times = [t for _, t, _ in reader.messages(camera)]
        report.camera_messages += len(times)
        report.segments += len(segments)
        records = []
        for number, segment in enumerate(tqdm(segments, desc=name, unit="segment")):
            first = bisect.bisect_left(times, segment.start_ns)
            inside = list(range(first, bisect.bisect_left(times, segment.end_ns)))
            frames = _segment_frames(reader, camera, times, inside, report, size)
            if isinstance(frames, str):
                report.skipped_segments[frames] += 1
                continue
            rel = Path("clips") / name / f"{number:04d}.npz"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(out / rel, frames=frames)
            duration = (times[inside[-1]] - times[inside[0]]) / NS_PER_S
            records.append(
                ClipRecord(
                    id=f"{name}_{number:04d}",
                    path=str(rel),
                    instruction=segment.instruction,
                    split=split,
                    source="rosbag",
                    meta={
                        "bag": str(bag),
                        "topic": camera_topic,
                        "start_s": (segment.start_ns - reader.start_time) / NS_PER_S,
                        "duration_s": round(duration, 3),
                        "camera_frames": len(inside),
                    },
                )
            )
            report.clips += 1
    return records


def _segment_frames(
    reader: Any,
    camera: Any,
    times: list[int],
    inside: list[int],
    report: RosbagReport,
    size: int | None,
) -> np.ndarray | str:
    """Decode the segment's evenly spread frames, or return why the segment is skipped.

    A bad message is counted and the frames are spread again over the rest.
    """
    decoded: dict[int, np.ndarray] = {}
    bad: set[int] = set()
    while True:
        usable = [i for i in inside if i not in bad]
        try:
            picks = [usable[p] for p in even_indices(len(usable), SAMPLED_FRAMES)[0]]
        except ClipError:
            return "short"
        needed = sorted(set(picks) - decoded.keys())
        if not needed:
            break
        first = bisect.bisect_left(times, times[needed[0]])
        stop = times[needed[-1]] + 1
        messages = reader.messages(camera, start=times[needed[0]], stop=stop)
        for position, (connection, _, raw) in enumerate(messages, start=first):
            if position not in needed:
                continue
            try:
                decoded[position] = _decode(reader, connection, raw)
            except BadMessageError as err:
                report.bad_messages[err.reason] += 1
                bad.add(position)
        if any(i not in decoded and i not in bad for i in needed):
            raise RuntimeError("camera messages changed between two reads of the bag")
    frames = [decoded[i] for i in picks]
    if size is not None:
        return np.concatenate([resize_center_crop(f[None], size, size) for f in frames])
    if len({f.shape for f in frames}) != 1:
        return "mixed frame sizes"
    return np.stack(frames)


def convert_rosbags(
    bags: Sequence[Path],
    out: Path,
    camera_topic: str,
    instruction_topic: str | None = None,
    segment_file: Path | None = None,
    split: str = "train",
    size: int | None = None,
) -> RosbagReport:
    """Convert bags into ``out/manifest.jsonl`` and ``out/clips/``; see the module docstring."""
    if (instruction_topic is None) == (segment_file is None):
        raise ValueError("give exactly one of an instruction topic and a segment file")
    for bag in bags:
        if not bag.exists():
            raise FileNotFoundError(f"bag not found: {bag}")
    by_bag = _file_segments(read_segment_file(segment_file), bags) if segment_file else {}
    report = RosbagReport(out=out / "manifest.jsonl")
    records: list[ClipRecord] = []
    for bag in bags:
        records += convert_bag(
            bag,
            out,
            camera_topic,
            report,
            instruction_topic,
            by_bag.get(_bag_name(bag)),
            split,
            size,
        )
        report.bags += 1
    write_manifest(out / "manifest.jsonl", records)
    return report

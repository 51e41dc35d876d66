"""showme-data rosbag: bags the test writes with rosbags (MCAP and sqlite3) become manifest clips;
bad camera messages are skipped and counted; a converted bag trains stage 1 into a model folder
the pipeline loads."""

import shutil

import cv2
import numpy as np
import pytest
import torch
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from showme_model import adapters
from showme_model.model import ShowMeModel
from showme_model.pipeline import ShowMePipeline
from training.data.cli import main as data_main
from training.data.clips import even_indices
from training.data.manifest import read_manifest
from training.data.rosbag import convert_rosbags, segments_from_messages
from training.train import main as train_main

STORE = get_typestore(Stores.ROS2_KILTED)
Image = STORE.types["sensor_msgs/msg/Image"]
CompressedImage = STORE.types["sensor_msgs/msg/CompressedImage"]
String = STORE.types["std_msgs/msg/String"]
Header = STORE.types["std_msgs/msg/Header"]
Time = STORE.types["builtin_interfaces/msg/Time"]
T0 = 1_700_000_000 * 10**9
PERIOD = 10**8  # a 10 Hz camera
HEIGHT, WIDTH = 24, 32


def frame_pixels(index):
    """An RGB frame whose red channel names its camera message and whose left half is darker."""
    pixels = np.full((HEIGHT, WIDTH, 3), (index, 100, 200), np.uint8)
    pixels[:, : WIDTH // 2, 1] = 20
    return pixels


def header(t):
    return Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="camera")


def raw_image(index, t, encoding="rgb8", padding=4):
    pixels = frame_pixels(index)
    if encoding == "bgr8":
        pixels = pixels[..., ::-1]
    rows = np.zeros((HEIGHT, WIDTH * 3 + padding), np.uint8)
    rows[:, : WIDTH * 3] = pixels.reshape(HEIGHT, -1)
    return Image(
        header=header(t),
        height=HEIGHT,
        width=WIDTH,
        encoding=encoding,
        is_bigendian=0,
        step=WIDTH * 3 + padding,
        data=rows.ravel(),
    )


def png_image(index, t):
    ok, data = cv2.imencode(".png", frame_pixels(index)[..., ::-1])
    assert ok
    return CompressedImage(header=header(t), format="rgb8; png compressed bgr8", data=data.ravel())


def write_bag(path, storage, camera, instructions=(), compressed=False):
    """camera: {index: message factory or None}; instructions: [(time ns, text)]."""
    camera_type = CompressedImage if compressed else Image
    with Writer(path, version=9, storage_plugin=storage) as writer:
        cam = writer.add_connection("/camera/image", camera_type.__msgtype__, typestore=STORE)
        text = writer.add_connection("/instruction", String.__msgtype__, typestore=STORE)
        events = [(t, text, String(data=s)) for t, s in instructions]
        events += [(T0 + i * PERIOD, cam, make(i, T0 + i * PERIOD)) for i, make in camera.items()]
        for t, connection, msg in sorted(events, key=lambda e: e[0]):
            writer.write(connection, t, STORE.serialize_cdr(msg, connection.msgtype))
    return path


def truncated(index, t):
    msg = raw_image(index, t)
    msg.data = msg.data[: len(msg.data) // 2]
    return msg


def float_depth(index, t):
    data = np.zeros(HEIGHT * WIDTH * 4, np.uint8)
    return Image(
        header=header(t),
        height=HEIGHT,
        width=WIDTH,
        encoding="32FC1",
        is_bigendian=0,
        step=WIDTH * 4,
        data=data,
    )


def raw_bag(path, storage):
    """80 frames; "open" over frames 1..40 (14 truncated), an empty message ending it, "close"
    over 50..75 (60 in an unsupported encoding, 55 in bgr8), "push" over 76..79 (too short)."""
    camera = {i: raw_image for i in range(80)}
    camera[14] = truncated
    camera[60] = float_depth
    camera[55] = lambda i, t: raw_image(i, t, encoding="bgr8", padding=0)
    instructions = [
        (T0 + PERIOD // 2, "open the drawer"),
        (T0 + 40 * PERIOD + PERIOD // 2, ""),
        (T0 + 50 * PERIOD - 1, "close the drawer"),
        (T0 + 76 * PERIOD - 1, "push the button"),
    ]
    return write_bag(path, storage, camera, instructions)


def expected_indices(usable):
    return [usable[p] for p in even_indices(len(usable), 16)[0]]


@pytest.mark.parametrize(
    "storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3], ids=["mcap", "sqlite3"]
)
def test_instruction_topic_segments_become_clips(tmp_path, storage, capsys):
    bag = raw_bag(tmp_path / "episode", storage)
    out = tmp_path / "data"
    data_main(
        [
            "rosbag",
            str(bag),
            "--camera-topic",
            "/camera/image",
            "--instruction-topic",
            "/instruction",
            "--out",
            str(out),
        ]
    )
    summary = capsys.readouterr().out
    assert "camera messages: 80" in summary
    assert "segments: 3, clips written: 2" in summary
    assert "bad camera messages skipped: truncated 1, unsupported encoding 1" in summary
    assert "segments skipped: short 1" in summary

    records = read_manifest(out / "manifest.jsonl")
    assert [r.instruction for r in records] == ["open the drawer", "close the drawer"]
    assert all(r.source == "rosbag" and r.split == "train" for r in records)
    wanted = [
        expected_indices([i for i in range(1, 41) if i != 14]),
        expected_indices([i for i in range(50, 76) if i != 60]),
    ]
    for record, indices in zip(records, wanted, strict=True):
        frames = np.load(out / record.path)["frames"]
        assert frames.shape == (16, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
        assert frames[:, 0, 0, 0].tolist() == indices  # evenly spread, bad ones left out
        assert (frames[:, :, : WIDTH // 2, 1] == 20).all()
        assert (frames[:, :, WIDTH // 2 :, 1] == 100).all()
        assert (frames[..., 2] == 200).all()  # row padding dropped, bgr8 turned into RGB
    assert 55 in wanted[1]


def test_compressed_camera_with_a_segment_file(tmp_path, capsys):
    camera = {i: png_image for i in range(60)}
    camera[8] = lambda i, t: CompressedImage(
        header=header(t), format="jpeg", data=np.arange(50, dtype=np.uint8)
    )
    bag = write_bag(tmp_path / "run.mcap", StoragePlugin.MCAP, camera, compressed=True)
    segments = tmp_path / "segments.csv"
    segments.write_text("start,end,instruction\n0,2.5,pick up the cup\n3.0,5.95,put the cup down\n")
    report = convert_rosbags(
        [bag], tmp_path / "data", "/camera/image", segment_file=segments, size=16
    )
    assert (report.clips, dict(report.bad_messages)) == (2, {"undecodable": 1})
    records = read_manifest(tmp_path / "data" / "manifest.jsonl")
    assert [r.instruction for r in records] == ["pick up the cup", "put the cup down"]
    first = np.load(tmp_path / "data" / records[0].path)["frames"]
    assert first.shape == (16, 16, 16, 3)
    assert first[:, 8, 8, 0].tolist() == expected_indices([i for i in range(25) if i != 8])


def test_bad_arguments_are_refused(tmp_path):
    bag = write_bag(tmp_path / "b", StoragePlugin.MCAP, {0: raw_image})
    with pytest.raises(ValueError, match="no topic '/nope'"):
        convert_rosbags([bag], tmp_path / "o", "/nope", instruction_topic="/instruction")
    with pytest.raises(ValueError, match="String"):
        convert_rosbags([bag], tmp_path / "o", "/camera/image", instruction_topic="/camera/image")
    bad = tmp_path / "bad.csv"
    bad.write_text("start,end,instruction\n2,1,oops\n")
    with pytest.raises(ValueError, match="end > start"):
        convert_rosbags([bag], tmp_path / "o", "/camera/image", segment_file=bad)
    with pytest.raises(ValueError, match="exactly one"):
        convert_rosbags([bag], tmp_path / "o", "/camera/image")


def test_segments_from_messages():
    segments = segments_from_messages([(10, "a"), (20, " "), (30, "b")], bag_end_ns=40)
    assert [(s.start_ns, s.end_ns, s.instruction) for s in segments] == [
        (10, 20, "a"),
        (30, 41, "b"),
    ]


@pytest.mark.slow
def test_recording_to_trained_model_folder(tmp_path, capsys):
    """recording -> showme-data rosbag -> showme-train stage1 -> model folder -> predictions."""
    torch.set_num_threads(1)
    bag = raw_bag(tmp_path / "episode", StoragePlugin.SQLITE3)
    data = tmp_path / "data"
    data_main(
        [
            *("rosbag", str(bag), "--camera-topic", "/camera/image"),
            *("--instruction-topic", "/instruction", "--out", str(data), "--size", "32"),
        ]
    )
    base = tmp_path / "base"
    torch.manual_seed(0)
    ShowMeModel.from_config_name("tiny").save_pretrained(base)
    config = tmp_path / "stage1.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'run'}\nbatch_size: 2\nreport_to: null\n"
        f"model: {{preset: null, folder: {base}}}\n"
        f"data: {{manifest: {data / 'manifest.jsonl'}, resolution: 32, num_frames: 2}}\n"
        "structure: {edge_model: sobel}\n"
    )
    train_main(["stage1", "--config", str(config), "--max-steps", "2"])
    assert "trained stage1 to step 2" in capsys.readouterr().out

    model = tmp_path / "model"
    shutil.copytree(base, model)
    shutil.copytree(tmp_path / "run" / "final" / "adapters", model / "adapters")
    pipeline = ShowMePipeline.from_pretrained(model)
    assert adapters.adapter_roles(pipeline.model) == ["manipulation"]
    frame = np.load(data / read_manifest(data / "manifest.jsonl")[0].path)["frames"][0]
    prediction = pipeline.predict(frame, "open the drawer", mode="image", num_steps=2)
    goal = prediction.frames
    assert goal.shape[:2] == (1, 1) and goal.shape[-1] == 3 and goal.dtype == np.uint8
    trained = [p for n, p in pipeline.model.named_parameters() if "lora_B" in n]
    assert trained and any(p.abs().sum() > 0 for p in trained)  # LoRA B starts at zero

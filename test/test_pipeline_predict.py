"""ShowMePipeline on the tiny random model: modes, guidance batching, seeds, caches, cancel."""

import numpy as np
import pytest
import torch
from peft.tuners.lora import LoraLayer

from showme_model import adapters
from showme_model.model import ShowMeModel
from showme_model.pipeline import PredictionCancelledError, ShowMePipeline
from showme_model.preprocessing import prepare_image

STEPS = 2


@pytest.fixture(scope="module")
def pipeline():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = ShowMeModel.from_config_name("tiny")
    for role in ("manipulation", "prediction"):
        adapters.add_adapter(model, role, rank=4)
    with torch.no_grad():  # give the adapters an effect (fresh LoRA B is zero)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    return ShowMePipeline(model)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)


class UNetCalls:
    """Records each UNet forward: input, batch, temporal flag and active adapters."""

    def __init__(self, model):
        self.calls = []
        self.model = model
        self.handle = model.unet.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        active = set()
        for layer in self.model.unet.modules():
            if isinstance(layer, LoraLayer):
                active.update(layer.active_adapters)
        temporal = kwargs.get("temporal", True)
        self.calls.append({"sample": args[0].clone(), "temporal": temporal, "active": active})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_image_mode_makes_one_goal_frame_per_candidate(pipeline, image):
    with UNetCalls(pipeline.model) as unet:
        result = pipeline.predict(image, ["open drawer", "push cup"], num_steps=STEPS, seed=3)
    assert result.frames.shape == (2, 1, 64, 64, 3) and result.frames.dtype == np.uint8
    # cond and uncond of both candidates in one forward per step, temporal modules off,
    # only the manipulation adapter acting.
    assert len(unet.calls) == STEPS
    assert all(c["sample"].shape[:3] == (4, 8, 1) for c in unet.calls)
    assert all(c["temporal"] is False and c["active"] == {"manipulation"} for c in unet.calls)
    meta = result.metadata
    assert meta["seeds"] == [3, 4] and meta["mode"] == "image" and meta["num_steps"] == STEPS
    assert set(meta["seconds"]) == {"encode", "denoise", "decode"}
    assert all(v >= 0 for v in meta["seconds"].values())


def test_video_mode_conditions_frame_zero_only(pipeline, image):
    with UNetCalls(pipeline.model) as unet:
        result = pipeline.predict(image, "open drawer", mode="video", num_frames=3, num_steps=1)
    assert result.frames.shape == (1, 3, 64, 64, 3)
    (call,) = unet.calls
    assert call["temporal"] is True and call["active"] == {"manipulation", "prediction"}
    concat = call["sample"][:, 4:]
    pixels, _ = prepare_image(image, pipeline.resolution)
    with torch.no_grad():
        first = pipeline.model.encode_latents(pixels[None])
    assert torch.allclose(concat[:, :, 0], first.expand(2, -1, -1, -1), atol=1e-5)
    assert concat[:, :, 1:].abs().max() == 0


def test_two_scale_guidance_runs_three_branches_in_one_forward(pipeline, image):
    with UNetCalls(pipeline.model) as unet:
        two = pipeline.predict(image, "a", num_steps=1, seed=0, image_guidance_scale=2.0)
    assert [c["sample"].shape[0] for c in unet.calls] == [3]
    one = pipeline.predict(image, "a", num_steps=1, seed=0)
    assert not np.array_equal(one.frames, two.frames)


def test_guidance_scale_one_runs_the_conditional_branch_only(pipeline, image):
    with UNetCalls(pipeline.model) as unet:
        pipeline.predict(image, "a", num_steps=1, seed=0, guidance_scale=1.0)
    assert unet.calls[0]["sample"].shape[0] == 1


def test_batched_candidates_equal_separate_calls_with_the_same_seeds(pipeline, image):
    texts = ["open drawer", "push cup", "close window"]
    batched = pipeline.predict(image, texts, num_steps=STEPS, seed=10, output_type="float")
    for i, text in enumerate(texts):
        single = pipeline.predict(image, text, num_steps=STEPS, seed=10 + i, output_type="float")
        assert np.abs(batched.frames[i] - single.frames[0]).max() < 1e-4
    assert np.abs(batched.frames[0] - batched.frames[1]).max() > 1e-3


def test_batched_images_equal_separate_calls(pipeline, image):
    other = np.ascontiguousarray(image[::-1])
    batched = pipeline.predict([image, other], "a", num_steps=STEPS, seed=0, output_type="float")
    single = pipeline.predict(other, "a", num_steps=STEPS, seed=1, output_type="float")
    assert np.abs(batched.frames[1] - single.frames[0]).max() < 1e-4


def test_same_seed_same_frames_and_a_random_seed_is_reported(pipeline, image):
    a = pipeline.predict(image, "a", num_steps=STEPS, seed=7)
    b = pipeline.predict(image, "a", num_steps=STEPS, seed=7)
    assert np.array_equal(a.frames, b.frames)
    drawn = pipeline.predict(image, "a", num_steps=STEPS)
    again = pipeline.predict(image, "a", num_steps=STEPS, seed=drawn.metadata["seeds"][0])
    assert np.array_equal(drawn.frames, again.frames)


def test_embeddings_are_encoded_once_across_calls(pipeline, image, monkeypatch):
    pipeline.to("cpu")  # clears the caches
    counts = {"text": 0, "image": 0}
    encode_text, encode_image = pipeline.model.encode_text, pipeline.model.encode_image_context

    def count_text(texts):
        counts["text"] += len(texts)
        return encode_text(texts)

    def count_image(images):
        counts["image"] += len(images)
        return encode_image(images)

    monkeypatch.setattr(pipeline.model, "encode_text", count_text)
    monkeypatch.setattr(pipeline.model, "encode_image_context", count_image)
    pipeline.predict(image, ["a", "b"], num_steps=1, seed=0)
    assert counts == {"text": 3, "image": 2}  # a, b, "" ; the image and the all-zero image
    pipeline.predict(image, ["b", "a"], num_steps=1, seed=0)
    assert counts == {"text": 3, "image": 2}


def test_callback_reports_every_step_and_cancels_within_one(pipeline, image):
    seen = []
    pipeline.predict(image, "a", num_steps=3, seed=0, callback=lambda *s: seen.append(s))
    assert [s[:2] for s in seen] == [(0, 3), (1, 3), (2, 3)]
    assert [s[2] for s in seen] == sorted((s[2] for s in seen), reverse=True)
    stops = []

    def cancel_after_first(step, total, timestep):
        stops.append(step)
        return step < 1

    with pytest.raises(PredictionCancelledError):
        pipeline.predict(image, "a", num_steps=5, seed=0, callback=cancel_after_first)
    assert stops == [0, 1]


@pytest.mark.parametrize(
    "name", ["ddim", "dpmsolver++", "dpmsolver++-sde", "unipc", "euler", "euler-ancestral"]
)
def test_schedulers_are_selected_by_name(pipeline, image, name):
    result = pipeline.predict(image, "a", num_steps=STEPS, seed=0, scheduler=name)
    assert result.frames.shape == (1, 1, 64, 64, 3) and result.metadata["scheduler"] == name


def test_unknown_scheduler_and_bad_requests_are_refused(pipeline, image):
    with pytest.raises(ValueError, match="unknown scheduler"):
        pipeline.predict(image, "a", num_steps=1, scheduler="plms")
    with pytest.raises(ValueError, match="exceeds"):
        pipeline.predict(image, "a", mode="video", num_frames=pipeline.max_frames + 1)
    with pytest.raises(ValueError, match="empty"):
        pipeline.predict(np.zeros((0, 0, 3), np.uint8), "a", num_steps=1)
    with pytest.raises(ValueError, match="mode"):
        pipeline.predict(image, "a", mode="movie")
    with pytest.raises(ValueError, match="num_steps"):
        pipeline.predict(image, "a", num_steps=0)


def test_outputs_restore_to_the_input_region_and_float_matches_uint8(pipeline, image):
    restored = pipeline.predict(image, "a", num_steps=1, seed=0, restore_size=True)
    assert restored.frames.shape == (1, 1, 48, 48, 3)
    stretched = pipeline.predict(
        image, "a", num_steps=1, seed=0, restore_size=True, resize_mode="stretch"
    )
    assert stretched.frames.shape == (1, 1, 48, 80, 3)
    as_uint8 = pipeline.predict(image, "a", num_steps=1, seed=0)
    as_float = pipeline.predict(image, "a", num_steps=1, seed=0, output_type="float")
    assert np.abs(as_float.frames * 255 - as_uint8.frames).max() <= 0.5 + 1e-3

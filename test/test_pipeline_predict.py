"""ShowMePipeline on the tiny random model: modes, guidance batching, seeds, caches, callbacks,
stored sampler settings, CPU offload."""

import copy

import numpy as np
import pytest
import torch
from accelerate.hooks import CpuOffload, UserCpuOffloadHook
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from peft.tuners.lora import LoraLayer

from showme_model import adapters
from showme_model.model import ShowMeModel
from showme_model.pipeline import PredictionCancelledError, ShowMePipeline
from showme_model.preprocessing import prepare_image
from showme_model.sampler_config import (
    REFERENCE_SAMPLER_CONFIG,
    SamplerConfig,
    SamplerSettingsError,
)
from showme_model.schedulers import make_scheduler

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


def derived(pipeline, **kwargs):
    """A pipeline over a copy of the fixture's model: a pipeline assumes it alone switches the
    model's active adapters."""
    return ShowMePipeline(copy.deepcopy(pipeline.model), **kwargs)


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
        result = pipeline(image, ["open drawer", "push cup"], num_inference_steps=STEPS, seed=3)
    assert result.frames.shape == (2, 1, 64, 64, 3) and result.frames.dtype == np.uint8
    # cond and uncond of both candidates in one forward per step, temporal modules off,
    # only the manipulation adapter acting.
    assert len(unet.calls) == STEPS
    assert all(c["sample"].shape[:3] == (4, 8, 1) for c in unet.calls)
    assert all(c["temporal"] is False and c["active"] == {"manipulation"} for c in unet.calls)
    meta = result.metadata
    assert (
        meta["seeds"] == [3, 4] and meta["mode"] == "image" and meta["num_inference_steps"] == STEPS
    )
    assert set(meta["seconds"]) == {"encode", "denoise", "decode"}
    assert all(v >= 0 for v in meta["seconds"].values())


def test_video_mode_conditions_frame_zero_only(pipeline, image):
    with UNetCalls(pipeline.model) as unet:
        result = pipeline(image, "open drawer", mode="video", num_frames=3, num_inference_steps=1)
    assert result.frames.shape == (1, 3, 64, 64, 3)
    (call,) = unet.calls
    assert call["temporal"] is True and call["active"] == {"manipulation", "prediction"}
    concat = call["sample"][:, 4:]
    pixels, _ = prepare_image(image, pipeline.resolution)
    with torch.no_grad():
        first = pipeline.model.encode_latents(pixels[None])
    assert torch.allclose(concat[:, :, 0], first.expand(2, -1, -1, -1), atol=1e-5)
    assert concat[:, :, 1:].abs().max() == 0


def test_video_mode_repeats_the_input_for_a_model_trained_that_way(pipeline, image):
    repeated = derived(pipeline, sampler_config=SamplerConfig(concat_layout="repeated"))
    with UNetCalls(repeated.model) as unet:
        repeated(image, "open drawer", mode="video", num_frames=3, num_inference_steps=1)
    concat = unet.calls[0]["sample"][:, 4:]
    for frame in (1, 2):
        torch.testing.assert_close(concat[:, :, frame], concat[:, :, 0])
    assert concat.abs().max() > 0


def test_two_scale_guidance_runs_three_branches_in_one_forward(pipeline, image):
    with UNetCalls(pipeline.model) as unet:
        two = pipeline(image, "a", num_inference_steps=1, seed=0, image_guidance_scale=2.0)
    assert [c["sample"].shape[0] for c in unet.calls] == [3]
    one = pipeline(image, "a", num_inference_steps=1, seed=0)
    assert not np.array_equal(one.frames, two.frames)


def test_guidance_scale_one_runs_the_conditional_branch_only(pipeline, image):
    with UNetCalls(pipeline.model) as unet:
        pipeline(image, "a", num_inference_steps=1, seed=0, guidance_scale=1.0)
    assert unet.calls[0]["sample"].shape[0] == 1


def test_batched_candidates_equal_separate_calls_with_the_same_seeds(pipeline, image):
    texts = ["open drawer", "push cup", "close window"]
    batched = pipeline(image, texts, num_inference_steps=STEPS, seed=10, output_type="float")
    for i, text in enumerate(texts):
        single = pipeline(image, text, num_inference_steps=STEPS, seed=10 + i, output_type="float")
        assert np.abs(batched.frames[i] - single.frames[0]).max() < 1e-4
    assert np.abs(batched.frames[0] - batched.frames[1]).max() > 1e-3


def test_batched_images_equal_separate_calls(pipeline, image):
    other = np.ascontiguousarray(image[::-1])
    batched = pipeline([image, other], "a", num_inference_steps=STEPS, seed=0, output_type="float")
    single = pipeline(other, "a", num_inference_steps=STEPS, seed=1, output_type="float")
    assert np.abs(batched.frames[1] - single.frames[0]).max() < 1e-4


def test_same_seed_same_frames_and_a_random_seed_is_reported(pipeline, image):
    a = pipeline(image, "a", num_inference_steps=STEPS, seed=7)
    b = pipeline(image, "a", num_inference_steps=STEPS, seed=7)
    assert np.array_equal(a.frames, b.frames)
    drawn = pipeline(image, "a", num_inference_steps=STEPS)
    again = pipeline(image, "a", num_inference_steps=STEPS, seed=drawn.metadata["seeds"][0])
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
    pipeline(image, ["a", "b"], num_inference_steps=1, seed=0)
    assert counts == {"text": 3, "image": 2}  # a, b, "" ; the image and the all-zero image
    pipeline(image, ["b", "a"], num_inference_steps=1, seed=0)
    assert counts == {"text": 3, "image": 2}


def test_step_end_callback_sees_and_replaces_the_latents(pipeline, image):
    seen = []

    def zero_last(pipe, step, timestep, callback_kwargs):
        seen.append((step, int(timestep), pipe.num_timesteps, set(callback_kwargs)))
        if step == pipe.num_timesteps - 1:
            return {"latents": torch.zeros_like(callback_kwargs["latents"])}
        return callback_kwargs

    result = pipeline(
        image,
        "a",
        num_inference_steps=3,
        seed=0,
        output_type="latent",
        callback_on_step_end=zero_last,
    )
    assert [s[0] for s in seen] == [0, 1, 2] and all(s[2:] == (3, {"latents"}) for s in seen)
    assert [s[1] for s in seen] == sorted((s[1] for s in seen), reverse=True)
    assert result.frames.abs().max() == 0
    with pytest.raises(ValueError, match="noise_pred"):
        pipeline(
            image, "a", num_inference_steps=1, callback_on_step_end_tensor_inputs=["noise_pred"]
        )


def test_step_end_callback_interrupts_within_one_step(pipeline, image):
    steps = []

    def stop_at_second(pipe, step, timestep, callback_kwargs):
        steps.append(step)
        pipe._interrupt = step >= 1
        return callback_kwargs

    with pytest.raises(PredictionCancelledError, match="after step 2 of 5"):
        pipeline(image, "a", num_inference_steps=5, seed=0, callback_on_step_end=stop_at_second)
    assert steps == [0, 1]
    pipeline(image, "a", num_inference_steps=2, seed=0)  # the next call runs to the end


def test_predict_keeps_the_earlier_names_and_step_callback(pipeline, image):
    seen = []
    old = pipeline.predict(
        image, "a", "video", num_frames=2, num_steps=3, seed=0, callback=lambda *s: seen.append(s)
    )
    new = pipeline(image, "a", "video", num_frames=2, num_inference_steps=3, seed=0)
    assert np.array_equal(old.frames, new.frames) and old.metadata["num_inference_steps"] == 3
    assert [s[:2] for s in seen] == [(0, 3), (1, 3), (2, 3)]
    assert all(isinstance(s[2], int) for s in seen)
    stops = []

    def cancel_after_first(step, total, timestep):
        stops.append(step)
        return step < 1

    with pytest.raises(PredictionCancelledError):
        pipeline.predict(image, "a", num_steps=5, seed=0, callback=cancel_after_first)
    assert stops == [0, 1]


# Expected per name, written out here rather than read from schedulers.SCHEDULERS.
SCHEDULER_CLASSES = {
    "ddim": (DDIMScheduler, {}),
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "dpmsolver++-sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": (UniPCMultistepScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler-ancestral": (EulerAncestralDiscreteScheduler, {}),
}


@pytest.mark.parametrize("name", sorted(SCHEDULER_CLASSES))
def test_schedulers_are_selected_by_name(pipeline, image, name, monkeypatch):
    made = []

    def recording_make_scheduler(*args, **kwargs):
        made.append(make_scheduler(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr("showme_model.pipeline.make_scheduler", recording_make_scheduler)
    result = pipeline(image, "a", num_inference_steps=STEPS, seed=0, scheduler=name)
    assert result.frames.shape == (1, 1, 64, 64, 3) and result.metadata["scheduler"] == name
    cls, settings = SCHEDULER_CLASSES[name]
    (sampler,) = made
    assert type(sampler) is cls
    assert all(sampler.config[key] == value for key, value in settings.items())


def test_unknown_scheduler_and_bad_requests_are_refused(pipeline, image):
    with pytest.raises(SamplerSettingsError, match="unknown scheduler"):
        pipeline(image, "a", num_inference_steps=1, scheduler="plms")
    with pytest.raises(SamplerSettingsError, match="exceeds"):
        pipeline(image, "a", mode="video", num_frames=pipeline.max_frames + 1)
    with pytest.raises(ValueError, match="empty"):
        pipeline(np.zeros((0, 0, 3), np.uint8), "a", num_inference_steps=1)
    with pytest.raises(ValueError, match="mode"):
        pipeline(image, "a", mode="movie")
    with pytest.raises(SamplerSettingsError, match="num_inference_steps"):
        pipeline(image, "a", num_inference_steps=0)
    with pytest.raises(SamplerSettingsError, match="guidance_scale"):
        pipeline(image, "a", guidance_scale=1e6)


def test_sampler_arguments_default_to_the_stored_settings(pipeline, image):
    stored = SamplerConfig(
        num_inference_steps=3, guidance_scale=1.0, eta=0.0, scheduler="euler", num_frames=2
    )
    tuned = derived(pipeline, sampler_config=stored)
    with UNetCalls(tuned.model) as unet:
        result = tuned(image, "a", mode="video", seed=0)
    # 3 steps, one branch (guidance 1), 2 frames
    assert [tuple(c["sample"].shape[:3]) for c in unet.calls] == [(1, 8, 2)] * 3
    meta = result.metadata
    assert (meta["num_inference_steps"], meta["guidance_scale"], meta["eta"]) == (3, 1.0, 0.0)
    assert (meta["scheduler"], meta["num_frames"]) == ("euler", 2)
    with UNetCalls(tuned.model) as unet:
        tuned(image, "a", mode="video", seed=0, num_inference_steps=1, guidance_scale=2.0)
    assert [tuple(c["sample"].shape[:3]) for c in unet.calls] == [(2, 8, 2)]
    assert derived(pipeline).sampler_config == REFERENCE_SAMPLER_CONFIG


def test_model_cpu_offload_runs_every_component_through_its_hook(pipeline, image, monkeypatch):
    reference = pipeline(
        image, ["a", "b"], mode="video", num_frames=2, num_inference_steps=2, seed=5
    )
    events = []
    pre_forward, offload = CpuOffload.pre_forward, UserCpuOffloadHook.offload
    offloaded = derived(pipeline)
    names = {
        id(getattr(offloaded.model, n)): n for n in ShowMePipeline.model_cpu_offload_seq.split("->")
    }

    def record_on(hook, module, *args, **kwargs):
        events.append(("on", names[id(module)]))
        return pre_forward(hook, module, *args, **kwargs)

    def record_off(user_hook):
        events.append(("off", names[id(user_hook.model)]))
        return offload(user_hook)

    monkeypatch.setattr(CpuOffload, "pre_forward", record_on)
    monkeypatch.setattr(UserCpuOffloadHook, "offload", record_off)
    try:
        offloaded.enable_model_cpu_offload(device="cpu")
        with pytest.raises(RuntimeError, match="offload"):
            offloaded.to("cpu")
        events.clear()
        result = offloaded(
            image, ["a", "b"], mode="video", num_frames=2, num_inference_steps=2, seed=5
        )
    finally:
        offloaded.remove_all_hooks()
    assert np.array_equal(result.frames, reference.frames)
    used = [name for kind, name in events if kind == "on"]
    # text first, image tokens, the first-frame latent, two UNet steps, then the decoder
    assert [name for i, name in enumerate(used) if i == 0 or used[i - 1] != name] == [
        "text_encoder",
        "image_encoder",
        "image_projector",
        "vae",
        "unet",
        "vae",
    ]
    assert used.count("unet") == 2
    offloads = [name for kind, name in events if kind == "off"]
    assert sorted(offloads[-5:]) == sorted(names.values())  # all back on the CPU at the end
    assert not hasattr(offloaded.model.unet, "_hf_hook")  # hooks removed
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            derived(pipeline).enable_model_cpu_offload()


def test_image_cache_keys_on_a_digest_and_its_size_is_configurable(pipeline, image, monkeypatch):
    def counting(size):
        counts = []
        made = derived(pipeline, image_cache_size=size)
        encode_image = made.model.encode_image_context

        def count_image(images):
            counts.append(len(images))
            return encode_image(images)

        monkeypatch.setattr(made.model, "encode_image_context", count_image)
        return made, counts

    other = np.ascontiguousarray(image[::-1])
    cached, counts = counting(1)
    for picture in (image, image, other, image):
        cached(picture, "a", num_inference_steps=1, guidance_scale=1.0, seed=0)
    assert counts == [1, 1, 1]  # the repeat hit; the third image evicted the first
    (key,) = cached._image_cache
    assert sum(len(str(part)) for part in key) < 100  # a digest, not the pixels
    uncached, counts = counting(0)
    for _ in range(2):
        uncached(image, "a", num_inference_steps=1, guidance_scale=1.0, seed=0)
    assert counts == [1, 1] and len(uncached._image_cache) == 0
    with pytest.raises(ValueError, match="cache size"):
        ShowMePipeline(pipeline.model, image_cache_size=-1)


def test_save_pretrained_round_trips_model_and_sampler_settings(pipeline, image, tmp_path):
    stored = SamplerConfig(num_inference_steps=2, guidance_scale=2.0, num_frames=3)
    derived(pipeline, sampler_config=stored).save_pretrained(tmp_path)
    loaded = ShowMePipeline.from_pretrained(tmp_path)
    assert loaded.sampler_config == stored
    assert loaded._roles_present == pipeline._roles_present
    expected = pipeline(image, "a", "video", seed=1, **stored.to_dict(), output_type="float")
    got = loaded(image, "a", "video", seed=1, output_type="float")
    assert np.abs(expected.frames - got.frames).max() < 1e-5


def test_a_folder_without_settings_says_it_uses_the_reference_sampler(pipeline, tmp_path, caplog):
    pipeline.model.save_pretrained(tmp_path)
    assert not (tmp_path / "sampler_config.json").exists()
    with caplog.at_level("WARNING", logger="showme_model.pipeline"):
        loaded = ShowMePipeline.from_pretrained(tmp_path)
    assert loaded.sampler_config == REFERENCE_SAMPLER_CONFIG
    assert "no sampler_config.json" in caplog.text and "reference" in caplog.text


def test_outputs_restore_to_the_input_region_and_float_matches_uint8(pipeline, image):
    restored = pipeline(image, "a", num_inference_steps=1, seed=0, restore_size=True)
    assert restored.frames.shape == (1, 1, 48, 48, 3)
    stretched = pipeline(
        image, "a", num_inference_steps=1, seed=0, restore_size=True, resize_mode="stretch"
    )
    assert stretched.frames.shape == (1, 1, 48, 80, 3)
    as_uint8 = pipeline(image, "a", num_inference_steps=1, seed=0)
    as_float = pipeline(image, "a", num_inference_steps=1, seed=0, output_type="float")
    assert np.abs(as_float.frames * 255 - as_uint8.frames).max() <= 0.5 + 1e-3

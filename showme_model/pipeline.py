"""``ShowMePipeline``: goal images and rollout videos from one model.

One call encodes the inputs, runs the denoising loop and decodes the frames:

- ``mode="image"``: a goal image. Temporal modules are off and only the ``manipulation``
  adapter acts; the source image's latent is the concat condition of the single frame.
- ``mode="video"``: a rollout of ``num_frames`` frames. Temporal modules are on, the
  ``manipulation`` and ``prediction`` adapters act, and the concat condition is the source
  image's latent at frame 0 with zeros elsewhere (as ShowMe's inference does).

Classifier-free guidance follows DynamiCrafter: the unconditional branch is the empty prompt with
the image tokens of an all-zero image and the same concat condition. With
``image_guidance_scale`` set, two-scale guidance is used instead::

    e = e(0, 0) + s_img * (e(0, img) - e(0, 0)) + s_txt * (e(txt, img) - e(0, img))

All branches of all batch items run in one UNet forward per step.

Randomness: the initial latents and the per-step noise of stochastic samplers (DDIM with
``eta > 0``) are drawn, in that order, from the generator(s). ``seed=s`` gives item ``i`` its own
generator seeded ``s + i``, so a batched call returns what separate calls with those seeds
return. A single ``generator`` is shared by the whole batch in the order of the original
DynamiCrafter sampler: seeding it like ``torch.manual_seed`` before their ``DDIMSampler``
reproduces their samples. ``latents`` may be passed to fix the initial noise.

Cancellation: ``callback(step, num_steps, timestep)`` is called after each denoising step;
returning ``False`` stops the loop at once and ``predict`` raises :class:`PredictionCancelledError`.
"""

from __future__ import annotations

import inspect
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from showme_model import adapters as adapter_lib
from showme_model.model import ShowMeModel
from showme_model.preprocessing import (
    ChannelOrder,
    InputGeometry,
    ResizeMode,
    prepare_image,
    restore_frames,
)
from showme_model.schedulers import make_scheduler

Mode = Literal["image", "video"]
StepCallback = Callable[[int, int, int], bool | None]
SHIPPED_MODEL = Path(__file__).parent / "weights" / "showme-metaworld-64"
DEFAULT_MAX_FRAMES = 16  # DynamiCrafter's training length, used when the model does not say
MODE_ROLES = {"image": adapter_lib.IMAGE_MODE_ROLES, "video": adapter_lib.VIDEO_MODE_ROLES}
_CACHE_SIZE = 256


class PredictionCancelledError(RuntimeError):
    """The progress callback asked the sampler to stop."""


def default_model_path() -> Path:
    """Return the model folder shipped inside the package.

    Raises:
        FileNotFoundError: No model ships with this installation.

    """
    if not (SHIPPED_MODEL / "model_index.json").is_file():
        raise FileNotFoundError(
            f"no model ships with this installation ({SHIPPED_MODEL} is missing); "
            "pass a model folder explicitly (--model DIR)"
        )
    return SHIPPED_MODEL


@dataclass
class Prediction:
    """Frames and how they were made.

    Attributes:
        frames: ``(B, T, H, W, 3)`` uint8 RGB (``T = 1`` in image mode), or, with
            ``output_type="float"``, float32 in [0, 1] of the same shape, or with
            ``output_type="latent"`` the ``(B, C, T, h, w)`` latents.
        metadata: seeds, settings and seconds spent encoding, denoising and decoding.

    """

    frames: np.ndarray | torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)


def check_settings(
    num_steps: int,
    guidance_scale: float,
    image_guidance_scale: float | None,
    eta: float,
    num_frames: int,
    max_frames: int,
) -> None:
    """Raise ``ValueError`` for settings the sampler cannot honour."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or not 1 <= num_steps <= 1000:
        raise ValueError(f"num_steps must be an integer in 1..1000, got {num_steps!r}")
    scales = {"guidance_scale": guidance_scale, "eta": eta}
    if image_guidance_scale is not None:
        scales["image_guidance_scale"] = image_guidance_scale
    for name, value in scales.items():
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
    if num_frames > max_frames:
        raise ValueError(f"num_frames={num_frames} exceeds the {max_frames} this model produces")


def _as_list(value: Any, kind: str) -> list:
    if isinstance(value, (str, np.ndarray)) or not isinstance(value, Sequence):
        value = [value]
    if not value:
        raise ValueError(f"no {kind} given")
    return list(value)


def pair_inputs(images: Any, instructions: str | Sequence[str]) -> tuple[list, list[str]]:
    """Pair images with instructions: one with many broadcasts, equal counts pair up."""
    images, instructions = _as_list(images, "image"), _as_list(instructions, "instruction")
    if not all(isinstance(text, str) for text in instructions):
        raise ValueError("instructions must be strings")
    if len(images) == 1:
        images = images * len(instructions)
    elif len(instructions) == 1:
        instructions = instructions * len(images)
    if len(images) != len(instructions):
        raise ValueError(
            f"got {len(images)} images and {len(instructions)} instructions; give one of "
            "them once, or the same number of each"
        )
    return images, instructions


class _Cache(OrderedDict):
    """A small least-recently-used cache of embeddings."""

    def lookup(
        self, keys: list[Hashable], make: Callable[[list[Hashable]], torch.Tensor]
    ) -> list[torch.Tensor]:
        """Values for ``keys``; ``make(missing_keys)`` computes the absent ones in one batch."""
        missing = [key for key in dict.fromkeys(keys) if key not in self]
        fresh = dict(zip(missing, make(missing), strict=True)) if missing else {}
        values = [fresh[key] if key in fresh else self[key] for key in keys]
        for key in dict.fromkeys(keys):
            if key in self:
                self.move_to_end(key)
        self.update(fresh)
        while len(self) > _CACHE_SIZE:
            self.popitem(last=False)
        return values


class ShowMePipeline:
    """Goal images and rollouts from a :class:`~showme_model.model.ShowMeModel`.

    The pipeline reads which adapters the model has when it is made, and switches the active
    ones per mode only when the mode changes (switching walks every module); it assumes nothing
    else switches them between its calls.

    Args:
        model: The model, with its adapters injected (see :mod:`showme_model.adapters`).

    """

    def __init__(self, model: ShowMeModel) -> None:
        self.model = model.eval()
        self._text_cache = _Cache()
        self._image_cache = _Cache()
        self._roles_present = adapter_lib.adapter_roles(model)
        self._roles_active: tuple[str, ...] | None = None
        self._placement()

    @classmethod
    def from_pretrained(
        cls,
        model_folder: str | Path,
        adapters: Sequence[str] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> ShowMePipeline:
        """Load a model folder.

        Args:
            model_folder: A folder written by ``ShowMeModel.save_pretrained`` or
                ``showme-convert``.
            adapters: Roles to load from ``adapters/<role>``; every one present when ``None``.
            device: Where to run (default CPU).
            dtype: Weight dtype (default as stored).

        """
        folder = Path(model_folder)
        model = ShowMeModel.from_pretrained(folder, load_adapters=False)
        roles = adapters
        if roles is None:
            adapter_dir = folder / "adapters"
            roles = sorted(p.name for p in adapter_dir.iterdir()) if adapter_dir.is_dir() else []
        for role in roles:
            path = folder / "adapters" / role
            if not path.is_dir():
                raise adapter_lib.AdapterError(f"{folder} has no {role!r} adapter ({path})")
            adapter_lib.load_adapter(model, path, role)
        return cls(model).to(device or "cpu", dtype)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> ShowMePipeline:
        """Move the model (and forget cached embeddings); returns ``self``."""
        self.model.to(device=device, dtype=dtype)
        self._text_cache.clear()
        self._image_cache.clear()
        self._placement()
        return self

    def _placement(self) -> None:
        # Read once: diffusers' device/dtype properties walk the whole module tree.
        weight = next(self.model.unet.parameters())
        self._device, self._dtype = weight.device, weight.dtype

    @property
    def device(self) -> torch.device:
        """Device of the UNet."""
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        """Weight dtype of the UNet."""
        return self._dtype

    @property
    def resolution(self) -> tuple[int, int]:
        """``(height, width)`` of the frames the model makes."""
        size = self.model.vae.config.sample_size
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    @property
    def max_frames(self) -> int:
        """The longest rollout the model makes."""
        return self.model.image_projector.config.video_length or DEFAULT_MAX_FRAMES

    def _roles(self, mode: Mode) -> list[str]:
        return [role for role in MODE_ROLES[mode] if role in self._roles_present]

    def _activate(self, roles: Sequence[str]) -> None:
        if self._roles_present and tuple(roles) != self._roles_active:
            adapter_lib.set_active_adapters(self.model, roles)
            self._roles_active = tuple(roles)

    def encode_text(self, instructions: Sequence[str]) -> torch.Tensor:
        """Text tokens ``(B, L, D)``; each distinct prompt is encoded once and cached."""
        return torch.stack(self._text_cache.lookup(list(instructions), self.model.encode_text))

    @torch.no_grad()
    def encode_image_tokens(self, images: torch.Tensor, roles: Sequence[str]) -> torch.Tensor:
        """Image context tokens ``(B, N, D)`` of ``(B, 3, H, W)`` images; cached per image.

        The key includes the active adapter roles: an adapter may act on the image projector.
        """
        keys: list[Hashable] = [
            (tuple(roles), image.float().cpu().numpy().tobytes()) for image in images
        ]
        by_key = dict(zip(keys, images, strict=True))

        def make(missing: list[Hashable]) -> torch.Tensor:
            batch = torch.stack([by_key[key] for key in missing]).to(self.device, self.dtype)
            self._activate(roles)
            return self.model.encode_image_context(batch)

        return torch.stack(self._image_cache.lookup(keys, make))

    @torch.no_grad()
    def predict(
        self,
        images: Any,
        instructions: str | Sequence[str],
        mode: Mode = "image",
        num_frames: int = 16,
        num_steps: int = 50,
        guidance_scale: float = 7.5,
        image_guidance_scale: float | None = None,
        eta: float = 1.0,
        frame_stride: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        scheduler: str = "ddim",
        callback: StepCallback | None = None,
        channel_order: ChannelOrder = "rgb",
        resize_mode: ResizeMode = "crop",
        restore_size: bool = False,
        latents: torch.Tensor | None = None,
        output_type: Literal["uint8", "float", "latent"] = "uint8",
    ) -> Prediction:
        """Predict goal images (``mode="image"``) or rollouts (``mode="video"``).

        Args:
            images: One image or a list (see :mod:`showme_model.preprocessing` for the accepted
                forms and the resize rule).
            instructions: One instruction or a list; one image with several instructions gives
                one candidate per instruction, equal counts pair up.
            mode: ``"image"`` for a goal image, ``"video"`` for a rollout.
            num_frames: Rollout length in video mode (ignored in image mode).
            num_steps: Denoising steps, 1..1000.
            guidance_scale: Text (or, without ``image_guidance_scale``, joint) guidance scale;
                1 disables guidance.
            image_guidance_scale: Enables two-scale guidance with this image scale.
            eta: DDIM noise scale (1.0 in the reference sampler); other schedulers ignore it.
            frame_stride: Frame-stride condition in video mode; the model's default when None.
            seed: Base seed; item ``i`` uses ``seed + i``. Random (and reported) when neither
                ``seed`` nor ``generator`` is given.
            generator: A generator shared by the batch, or one per item.
            scheduler: A name from :data:`showme_model.schedulers.SCHEDULERS`.
            callback: ``callback(step, num_steps, timestep)`` after each step; return ``False``
                to cancel (raises :class:`PredictionCancelledError`).
            channel_order: ``"rgb"`` or ``"bgr"`` for 3/4-channel inputs.
            resize_mode: ``"crop"`` (centre crop to the model's aspect ratio) or ``"stretch"``.
            restore_size: Resize outputs back to the input region's size (uint8 output only).
            latents: Initial noise ``(B, C, T, h, w)``; drawn from the generator when None.
            output_type: ``"uint8"`` frames, ``"float"`` frames in [0, 1], or ``"latent"``.

        Returns:
            A :class:`Prediction`.

        """
        if mode not in MODE_ROLES:
            raise ValueError(f"mode must be 'image' or 'video', got {mode!r}")
        frames = num_frames if mode == "video" else 1
        check_settings(
            num_steps, guidance_scale, image_guidance_scale, eta, frames, self.max_frames
        )
        if restore_size and output_type != "uint8":
            raise ValueError("restore_size needs output_type='uint8'")
        image_list, texts = pair_inputs(images, instructions)
        batch = len(texts)
        generators, seeds = self._generators(seed, generator, batch)
        roles = self._roles(mode)
        sync = self._synchronize

        start = time.perf_counter()
        prepared = [
            prepare_image(img, self.resolution, channel_order, resize_mode) for img in image_list
        ]
        pixels = torch.stack([p[0] for p in prepared])
        geometry: list[InputGeometry] = [p[1] for p in prepared]
        contexts = self._contexts(pixels, texts, roles, guidance_scale, image_guidance_scale)
        first = self.model.encode_latents(pixels.to(self.device, self.dtype)).unsqueeze(2)
        concat = torch.zeros_like(first).repeat(1, 1, frames, 1, 1)
        concat[:, :, :1] = first
        sync()
        encoded = time.perf_counter()

        self._activate(roles)
        sample = self.denoise(
            contexts,
            concat,
            temporal=mode == "video",
            num_steps=num_steps,
            guidance_scale=guidance_scale,
            image_guidance_scale=image_guidance_scale,
            eta=eta,
            frame_stride=frame_stride,
            generator=generators,
            scheduler=scheduler,
            callback=callback,
            latents=latents,
        )
        sync()
        denoised = time.perf_counter()

        if output_type == "latent":
            output: np.ndarray | torch.Tensor = sample
        else:
            decoded = self.model.decode_latents(sample).float()
            unit = ((decoded + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 2, 3, 4, 1).cpu()
            output = unit.numpy() if output_type == "float" else _to_uint8(unit)
            if restore_size:
                output = np.stack(
                    [restore_frames(f, g) for f, g in zip(output, geometry, strict=True)]
                )
        sync()
        decoded_at = time.perf_counter()

        metadata = {
            "mode": mode,
            "seeds": seeds,
            "instructions": texts,
            "num_frames": frames,
            "num_steps": num_steps,
            "guidance_scale": guidance_scale,
            "image_guidance_scale": image_guidance_scale,
            "eta": eta,
            "frame_stride": frame_stride,
            "scheduler": scheduler,
            "adapters": roles,
            "resolution": self.resolution,
            "seconds": {
                "encode": encoded - start,
                "denoise": denoised - encoded,
                "decode": decoded_at - denoised,
            },
        }
        return Prediction(output, metadata)

    def _contexts(
        self,
        pixels: torch.Tensor,
        texts: list[str],
        roles: list[str],
        guidance_scale: float,
        image_guidance_scale: float | None,
    ) -> list[torch.Tensor]:
        """Context tokens of each guidance branch, conditional first."""
        text = self.encode_text(texts)
        image = self.encode_image_tokens(pixels, roles)
        contexts = [torch.cat([text, image], dim=1)]
        if image_guidance_scale is None and guidance_scale == 1.0:
            return contexts
        empty = self.encode_text([""]).expand_as(text)
        zero_image = self.encode_image_tokens(torch.zeros_like(pixels[:1]), roles).expand_as(image)
        if image_guidance_scale is not None:
            contexts.append(torch.cat([empty, image], dim=1))
        contexts.append(torch.cat([empty, zero_image], dim=1))
        return contexts

    def denoise(
        self,
        contexts: list[torch.Tensor],
        concat: torch.Tensor,
        temporal: bool,
        num_steps: int = 50,
        guidance_scale: float = 7.5,
        image_guidance_scale: float | None = None,
        eta: float = 1.0,
        frame_stride: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        scheduler: str = "ddim",
        callback: StepCallback | None = None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the denoising loop on prepared conditions; returns the final latents.

        Args:
            contexts: ``[cond]``, ``[cond, uncond]`` or, for two-scale guidance,
                ``[cond, text-free, uncond]`` context tokens, each ``(B, L, D)``.
            concat: ``(B, C, T, h, w)`` concat condition.
            temporal: Video mode (temporal modules on).
            num_steps: Denoising steps.
            guidance_scale: Text or joint guidance scale.
            image_guidance_scale: Image scale of two-scale guidance.
            eta: DDIM noise scale.
            frame_stride: Frame-stride condition (video mode).
            generator: Generator(s) for the initial and per-step noise.
            scheduler: Scheduler name.
            callback: Progress callback; returning ``False`` cancels.
            latents: Initial noise; drawn from ``generator`` when None.

        """
        sampler = make_scheduler(scheduler, self.model.scheduler_config)
        sampler.set_timesteps(num_steps, device=self.device)
        dtype = self.dtype
        if latents is None:
            latents = _randn(concat.shape, generator, self.device)
        # The sampler state stays in float32 whatever the weights' dtype.
        latents = latents.to(self.device, torch.float32) * sampler.init_noise_sigma
        branches = len(contexts)
        context = torch.cat(contexts).to(self.device, dtype)
        concat = concat.to(self.device, dtype).repeat(branches, 1, 1, 1, 1)
        stride = None
        if temporal and frame_stride is not None:
            stride = torch.full((context.shape[0],), frame_stride, device=self.device)
        accepted = inspect.signature(sampler.step).parameters
        step_kwargs = {k: v for k, v in (("generator", generator), ("eta", eta)) if k in accepted}
        timesteps = sampler.timesteps
        for index, t in enumerate(timesteps):
            scaled = sampler.scale_model_input(latents, t).to(dtype).repeat(branches, 1, 1, 1, 1)
            output = self.model.unet(
                torch.cat([scaled, concat], dim=1),
                t,
                context,
                frame_stride=stride,
                temporal=temporal,
            )
            guided = _guide(output.float().chunk(branches), guidance_scale, image_guidance_scale)
            latents = sampler.step(guided, t, latents, **step_kwargs).prev_sample
            if callback is not None and callback(index, len(timesteps), int(t)) is False:
                raise PredictionCancelledError(
                    f"cancelled after step {index + 1} of {len(timesteps)}"
                )
        return latents

    def _generators(
        self,
        seed: int | None,
        generator: torch.Generator | list[torch.Generator] | None,
        batch: int,
    ) -> tuple[torch.Generator | list[torch.Generator], list[int] | None]:
        if generator is not None:
            if seed is not None:
                raise ValueError("pass either seed or generator, not both")
            if isinstance(generator, list) and len(generator) != batch:
                raise ValueError(f"got {len(generator)} generators for {batch} items")
            return generator, None
        if seed is None:
            seed = random.randrange(2**62)
        seeds = [seed + i for i in range(batch)]
        return [torch.Generator("cpu").manual_seed(s) for s in seeds], seeds

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _guide(
    outputs: tuple[torch.Tensor, ...], guidance_scale: float, image_guidance_scale: float | None
) -> torch.Tensor:
    if len(outputs) == 1:
        return outputs[0]
    if image_guidance_scale is None:
        cond, uncond = outputs
        return uncond + guidance_scale * (cond - uncond)
    cond, text_free, uncond = outputs
    return (
        uncond + image_guidance_scale * (text_free - uncond) + guidance_scale * (cond - text_free)
    )


def _randn(
    shape: torch.Size,
    generator: torch.Generator | list[torch.Generator] | None,
    device: torch.device,
) -> torch.Tensor:
    """Noise drawn on the CPU (so seeds give the same numbers on every device)."""
    if isinstance(generator, list):
        noise = torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in generator])
    else:
        noise = torch.randn(shape, generator=generator)
    return noise.to(device)


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames * 255.0).round().to(torch.uint8).numpy()

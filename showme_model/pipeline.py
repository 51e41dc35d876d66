"""``ShowMePipeline``: goal images and rollouts from one model, called like a diffusers pipeline.

One call encodes the inputs, runs the denoising loop and decodes the frames:

- ``mode="image"``: a goal image. Temporal modules are off and only the ``manipulation``
  adapter acts; the source image's latent is the concat condition of the single frame.
- ``mode="video"``: a rollout of ``num_frames`` frames. Temporal modules are on, the
  ``manipulation`` and ``prediction`` adapters act, and the concat condition is the source
  image's latent at frame 0 with zeros elsewhere (as ShowMe's inference does), or at every
  frame for a model trained that way (``concat_layout`` of its sampler settings).

Those are the method's adapters per mode; a model folder may choose others in
``mode_adapters.json`` (:attr:`ShowMeModel.mode_roles`), which the pipeline follows. The roles of
a mode that are not loaded are left out.

Sampler settings (``num_inference_steps``, ``guidance_scale``, ``eta``, ``scheduler``,
``num_frames``, ``frame_stride``, ``concat_layout``, ``keep_scene`` and its thresholds)
default to ``None``: the call then takes :attr:`ShowMePipeline.sampler_config`, the settings
stored in the model folder (:mod:`showme_model.sampler_config`). Every request is checked by
:func:`~showme_model.sampler_config.validate_request`.

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

Step callbacks and cancellation: ``callback_on_step_end(pipeline, step, timestep,
callback_kwargs)`` runs after each denoising step, as in diffusers; it returns
``callback_kwargs``, whose ``"latents"`` replace the current latents. Setting
``pipeline._interrupt = True`` in it stops the loop, and the call raises
:class:`PredictionCancelledError` (diffusers would decode the unfinished latents instead).
:meth:`ShowMePipeline.predict` keeps the older form ``callback(step, num_steps, timestep)``,
which cancels by returning ``False``.

Image-embedding cache: image context tokens are kept per image, keyed on a BLAKE2b digest of
the prepared pixels (with their shape, dtype and the active adapters), in a least-recently-used
cache of ``image_cache_size`` entries (0 disables it). It pays off when the same image is asked
about again (candidate instructions, a planner's repeated queries); on a live camera stream every
frame is new, so the ROS node turns it off.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from accelerate import cpu_offload_with_hook
from accelerate.hooks import UserCpuOffloadHook

from showme_model import adapters as adapter_lib
from showme_model import scene_keeping
from showme_model.memory import VARIANT_DTYPES, EncoderOffload, OffloadStorage
from showme_model.model import ShowMeModel
from showme_model.onnx_export import merged_unet
from showme_model.preprocessing import (
    ChannelOrder,
    InputGeometry,
    ResizeMode,
    prepare_image,
    restore_frames,
)
from showme_model.sampler_config import (
    REFERENCE_SAMPLER_CONFIG,
    SAMPLER_CONFIG_NAME,
    SamplerConfig,
    validate_request,
)
from showme_model.schedulers import make_scheduler
from showme_model.unet_blocks import AttentionKernel, set_attention_kernel

Mode = Literal["image", "video"]
StepCallback = Callable[[int, int, int], bool | None]
StepEndCallback = Callable[
    ["ShowMePipeline", int, torch.Tensor, dict[str, torch.Tensor]], dict[str, torch.Tensor]
]
SHIPPED_MODEL = Path(__file__).parent / "weights" / "showme-metaworld-64"
DEFAULT_MAX_FRAMES = 16  # DynamiCrafter's training length, used when the model does not say
TEXT_CACHE_SIZE = 256
DEFAULT_IMAGE_CACHE_SIZE = 256

logger = logging.getLogger(__name__)


class PredictionCancelledError(RuntimeError):
    """The step callback asked the sampler to stop."""


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


def _as_list(value: Any, kind: str) -> list:
    if isinstance(value, (str, np.ndarray)) or not isinstance(value, Sequence):
        value = [value]
    if not value:
        raise ValueError(f"no {kind} given")
    return list(value)


def concat_condition(first: torch.Tensor, num_frames: int, layout: str) -> torch.Tensor:
    """Video mode's concat condition ``(B, C, T, h, w)`` from the input latent ``(B, C, 1, h, w)``.

    ``layout`` is a :data:`~showme_model.sampler_config.CONCAT_LAYOUTS` name: ``first_frame``
    puts the latent at frame 0 and zeros elsewhere, ``repeated`` at every frame.
    """
    if layout == "repeated":
        return first.expand(-1, -1, num_frames, -1, -1)
    if layout != "first_frame":
        raise ValueError(f"unknown concat layout {layout!r}")
    rest = torch.zeros_like(first).expand(-1, -1, num_frames - 1, -1, -1)
    return torch.cat([first, rest], dim=2)


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


def image_digest(image: torch.Tensor) -> tuple[str, tuple[int, ...], str]:
    """Cache key of a prepared image: BLAKE2b digest of its bytes, with its shape and dtype."""
    array = image.detach().cpu().contiguous().numpy()
    digest = hashlib.blake2b(array.tobytes(), digest_size=16).hexdigest()
    return digest, tuple(array.shape), str(array.dtype)


class _Cache(OrderedDict):
    """A least-recently-used cache of embeddings holding at most ``max_size`` entries."""

    def __init__(self, max_size: int) -> None:
        super().__init__()
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
            raise ValueError(f"cache size must be an integer >= 0, got {max_size!r}")
        self.max_size = max_size

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
        while len(self) > self.max_size:
            self.popitem(last=False)
        return values


class ShowMePipeline:
    """Goal images and rollouts from a :class:`~showme_model.model.ShowMeModel`.

    The pipeline reads which adapters the model has when it is made, and switches the active
    ones per mode only when the mode changes (switching walks every module); it assumes nothing
    else switches them between its calls.

    Args:
        model: The model, with its adapters injected (see :mod:`showme_model.adapters`).
        sampler_config: Default sampler settings; the model's stored ones when ``None``, else
            :data:`~showme_model.sampler_config.REFERENCE_SAMPLER_CONFIG`.
        image_cache_size: Image embeddings kept between calls (0 disables the cache).
        merge_adapters: Denoise with a copy of the UNet that has the mode's adapters folded into
            its weights: no LoRA layers run per step (on the CPU a goal image of the shipped
            model takes about 0.6x the time), at the memory of a copy of the adapted weights.
            The copy is made per mode, device and dtype: make a new pipeline after changing
            the model's weights. Not used with model CPU offload. On the CPU, a bfloat16 copy
            computes attention as matmul, softmax, matmul
            (:func:`~showme_model.unet_blocks.set_attention_kernel`), the faster kernel there.
        compile_unet: Denoise with ``torch.compile`` of the UNet (with ``merge_adapters``, of
            each mode's merged copy, with inductor's weight freezing, then kept for every
            mode). A mode's first call, and its first call at a new batch size or rollout
            length, compiles: seconds on a GPU, a minute or more on a CPU. Not used with model
            CPU offload.

    Attributes:
        sampler_config: The settings every sampler argument left at ``None`` takes.

    """

    model_cpu_offload_seq = "text_encoder->image_encoder->image_projector->vae->unet"
    _callback_tensor_inputs = ("latents",)

    def __init__(
        self,
        model: ShowMeModel,
        sampler_config: SamplerConfig | None = None,
        image_cache_size: int = DEFAULT_IMAGE_CACHE_SIZE,
        merge_adapters: bool = False,
        compile_unet: bool = False,
    ) -> None:
        self.model = model.eval()
        self.merge_adapters = merge_adapters
        self.compile_unet = compile_unet
        self._merged: dict[tuple, torch.nn.Module] = {}
        self._compiled: dict[tuple, torch.nn.Module] = {}
        self.sampler_config = sampler_config or model.sampler_config or REFERENCE_SAMPLER_CONFIG
        self._text_cache = _Cache(TEXT_CACHE_SIZE)
        self._image_cache = _Cache(image_cache_size)
        self._roles_present = adapter_lib.adapter_roles(model)
        adapter_lib.mode_roles(model.mode_roles)  # refuse a bad stored choice before any call
        self._roles_active: tuple[str, ...] | None = None
        self._offload_hooks: dict[str, UserCpuOffloadHook] = {}
        self._encoder_offload: EncoderOffload | None = None
        self._interrupt = False
        self._num_timesteps = 0
        self._placement()

    @classmethod
    def from_pretrained(
        cls,
        model_folder: str | Path,
        adapters: Sequence[str] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        image_cache_size: int = DEFAULT_IMAGE_CACHE_SIZE,
        variant: str | None = None,
        merge_adapters: bool = False,
        compile_unet: bool = False,
    ) -> ShowMePipeline:
        """Load a model folder, its adapters and its sampler settings.

        Args:
            model_folder: A folder written by :meth:`save_pretrained`,
                ``ShowMeModel.save_pretrained`` or ``showme-convert``.
            adapters: Roles to load from ``adapters/<role>``; every one present when ``None``.
            device: Where to run (default CPU).
            dtype: Weight dtype (default: the variant's, else as stored).
            image_cache_size: Image embeddings kept between calls (0 disables the cache).
            variant: Load the ``<weights>.<variant>.safetensors`` files (e.g. ``"fp16"``).
            merge_adapters: Denoise with the mode's adapters folded into a UNet copy.
            compile_unet: Denoise with ``torch.compile`` of the UNet (or of its merged copies).

        """
        folder = Path(model_folder)
        model = ShowMeModel.from_pretrained(folder, load_adapters=False, variant=variant)
        if model.sampler_config is None:
            logger.warning(
                "%s has no %s; using DynamiCrafter's reference sampler settings (%s). Write the "
                "settings the model was tuned for with SamplerConfig(...).save_pretrained(folder).",
                folder,
                SAMPLER_CONFIG_NAME,
                REFERENCE_SAMPLER_CONFIG,
            )
        roles = adapters
        if roles is None:
            adapter_dir = folder / "adapters"
            roles = sorted(p.name for p in adapter_dir.iterdir()) if adapter_dir.is_dir() else []
        for role in roles:
            path = folder / "adapters" / role
            if not path.is_dir():
                raise adapter_lib.AdapterError(f"{folder} has no {role!r} adapter ({path})")
            adapter_lib.load_adapter(model, path, role)
        dtype = dtype or VARIANT_DTYPES.get(variant or "")
        pipeline = cls(
            model,
            image_cache_size=image_cache_size,
            merge_adapters=merge_adapters,
            compile_unet=compile_unet,
        )
        return pipeline.to(device or "cpu", dtype)

    def save_pretrained(self, folder: str | Path) -> None:
        """Write the model folder: components, adapters and :attr:`sampler_config`."""
        self.model.save_pretrained(folder)
        self.sampler_config.save_pretrained(folder)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> ShowMePipeline:
        """Move the model (and forget cached embeddings); returns ``self``."""
        if (self._offload_hooks or self._encoder_offload) and device is not None:
            raise RuntimeError(
                "offloading is enabled: it places each component; call remove_all_hooks() "
                "first, or enable the offloading again with device=... to run elsewhere"
            )
        self.model.to(device=device, dtype=dtype)
        self._text_cache.clear()
        self._image_cache.clear()
        self._placement()
        return self

    def enable_model_cpu_offload(
        self, gpu_id: int | None = None, device: torch.device | str = "cuda"
    ) -> None:
        """Keep every component on the CPU and move it to ``device`` only while it runs.

        As diffusers does, with accelerate's ``cpu_offload_with_hook``: components are chained
        in :attr:`model_cpu_offload_seq`, each one's hook offloads the previous component when it
        starts, and every component goes back to the CPU at the end of a call. Peak accelerator
        memory is about the largest component (the UNet) plus the activations.

        Args:
            gpu_id: Accelerator index when ``device`` has none (default 0).
            device: The execution device.

        """
        execution = torch.device(device)
        if execution.type != "cpu" and execution.index is None:
            execution = torch.device(execution.type, gpu_id or 0)
        if execution.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"cannot offload to {execution}: CUDA is not available here")
        self.remove_all_hooks()
        hook = None
        for name in self.model_cpu_offload_seq.split("->"):
            component = getattr(self.model, name)
            if isinstance(component, torch.nn.Module):
                _, hook = cpu_offload_with_hook(component, execution, prev_module_hook=hook)
                self._offload_hooks[name] = hook
        self._text_cache.clear()
        self._image_cache.clear()
        self._device = execution

    def enable_encoder_offload(
        self,
        storage: OffloadStorage = "cpu",
        device: torch.device | str | None = None,
        folder: str | Path | None = None,
    ) -> None:
        """Keep the text and image encoders off ``device`` except while they encode.

        The UNet, VAE and image projector move to ``device`` (default: the current one) and
        stay there; the encoders are offloaded as soon as a request's embeddings are computed
        (see :mod:`showme_model.memory`). ``storage="disk"`` (for memory shared by CPU and GPU)
        writes the encoders' weights to ``folder`` and rereads them for each request that
        needs them.
        """
        self.remove_all_hooks()
        execution = torch.device(device) if device is not None else self.device
        for name in ("unet", "vae", "image_projector"):
            getattr(self.model, name).to(execution)
        self._encoder_offload = EncoderOffload(self.model, execution, storage, folder)
        self._text_cache.clear()
        self._image_cache.clear()
        self._device = execution

    def remove_all_hooks(self) -> None:
        """Undo :meth:`enable_model_cpu_offload` or :meth:`enable_encoder_offload`.

        Offloaded components stay on the CPU.
        """
        for hook in self._offload_hooks.values():
            hook.remove()
        self._offload_hooks = {}
        if self._encoder_offload is not None:
            self._encoder_offload.restore()
            self._encoder_offload = None
        self._placement()

    def _onload(self, name: str) -> None:
        """Move a component to the execution device before a call that is not its ``forward``.

        The offload hooks fire on ``forward``; the encoders and the VAE are called through
        ``encode`` / ``decode``.
        """
        hook = self._offload_hooks.get(name)
        if hook is not None:
            hook.hook.pre_forward(hook.model)
        if self._encoder_offload is not None:
            self._encoder_offload.onload(name)

    def _offload_all(self) -> None:
        for hook in self._offload_hooks.values():
            hook.offload()

    def _placement(self) -> None:
        # Read once: diffusers' device/dtype properties walk the whole module tree. A UNet
        # without parameters (onnx_unet.OnnxUNet) has its own device and dtype.
        weight = next(self.model.unet.parameters(), self.model.unet)
        self._device, self._dtype = weight.device, weight.dtype

    @property
    def device(self) -> torch.device:
        """Where the pipeline computes: the UNet's device, or the offload execution device."""
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

    @property
    def num_timesteps(self) -> int:
        """Denoising steps of the current (or last) call."""
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """Whether a step callback asked the current call to stop."""
        return self._interrupt

    def _roles(self, mode: Mode) -> list[str]:
        return adapter_lib.roles_for_mode(self.model, mode, self._roles_present)

    def _activate(self, roles: Sequence[str]) -> None:
        if self._roles_present and tuple(roles) != self._roles_active:
            adapter_lib.set_active_adapters(self.model, roles)
            self._roles_active = tuple(roles)

    def _denoiser(self) -> torch.nn.Module:
        """Return the UNet the denoising loop calls (merged, compiled, as the options say).

        With :attr:`merge_adapters`, a merged copy is made for the active roles, device and
        dtype. Without compilation only the latest copy is kept (memory); compiled copies are
        kept per key, so that switching modes does not compile again.
        """
        if self._offload_hooks:
            return self.model.unet
        key: tuple = ("unet",)
        unet = self.model.unet
        if (
            self.merge_adapters
            and self._roles_active is not None
            and adapter_lib.has_adapters(self.model.unet)
        ):
            key = (self._roles_active, self.device, self.dtype)
            if key not in self._merged:
                if not self.compile_unet:
                    self._merged.clear()  # free the previous copy first
                self._merged[key] = merged_unet(self.model.unet, self._roles_active)
                set_attention_kernel(self._merged[key], self._merged_attention_kernel())
            unet = self._merged[key]
        if not self.compile_unet:
            return unet
        if key not in self._compiled:
            # A merged copy's weights never change: inductor may fold them in as constants
            # and prepack them for oneDNN (freezing). The model's own UNet switches adapters.
            options = {"freezing": True} if unet is not self.model.unet else None
            self._compiled[key] = torch.compile(unet, options=options)
        return self._compiled[key]

    def _merged_attention_kernel(self) -> AttentionKernel:
        """Return the attention kernel of a merged copy: ``"math"`` in bfloat16 on the CPU.

        Measured on the shipped model at one thread, PyTorch's fused CPU kernel made the
        bfloat16 8-frame forward 1.4-1.65x slower compiled and 1.18x eager; in float32 the two
        kernels were as fast (``docs/BENCHMARKS.md``).
        """
        cpu_bfloat16 = self.device.type == "cpu" and self.dtype == torch.bfloat16
        return "math" if cpu_bfloat16 else "sdpa"

    def _resolve(
        self, image_guidance_scale: float | None = None, **overrides: Any
    ) -> SamplerConfig:
        """:attr:`sampler_config` with the given (non-``None``) settings, validated."""
        settings = self.sampler_config.resolve(**overrides)
        validate_request(
            settings.num_inference_steps,
            settings.guidance_scale,
            settings.eta,
            settings.num_frames,
            self.max_frames,
            image_guidance_scale=image_guidance_scale,
            frame_stride=settings.frame_stride,
            scheduler=settings.scheduler,
        )
        return settings

    def encode_text(self, instructions: Sequence[str]) -> torch.Tensor:
        """Text tokens ``(B, L, D)``; each distinct prompt is encoded once and cached."""

        def make(texts: list[Hashable]) -> torch.Tensor:
            self._onload("text_encoder")
            return self.model.encode_text(texts).to(self.device)

        return torch.stack(self._text_cache.lookup(list(instructions), make))

    @torch.no_grad()
    def encode_image_tokens(self, images: torch.Tensor, roles: Sequence[str]) -> torch.Tensor:
        """Image context tokens ``(B, N, D)`` of ``(B, 3, H, W)`` images; cached per image.

        The key includes the active adapter roles: an adapter may act on the image projector.
        """
        keys: list[Hashable] = [(tuple(roles), *image_digest(image)) for image in images]
        by_key = dict(zip(keys, images, strict=True))

        def make(missing: list[Hashable]) -> torch.Tensor:
            batch = torch.stack([by_key[key] for key in missing]).to(self.device, self.dtype)
            self._activate(roles)
            self._onload("image_encoder")
            return self.model.encode_image_context(batch).to(self.device)

        return torch.stack(self._image_cache.lookup(keys, make))

    @torch.no_grad()
    def __call__(
        self,
        images: Any,
        instructions: str | Sequence[str],
        mode: Mode = "image",
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        image_guidance_scale: float | None = None,
        eta: float | None = None,
        num_frames: int | None = None,
        frame_stride: int | None = None,
        scheduler: str | None = None,
        concat_layout: str | None = None,
        keep_scene: bool | None = None,
        keep_scene_low: float | None = None,
        keep_scene_high: float | None = None,
        keep_scene_radius: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: Literal["uint8", "float", "latent"] = "uint8",
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        channel_order: ChannelOrder = "rgb",
        resize_mode: ResizeMode = "crop",
        restore_size: bool = False,
    ) -> Prediction:
        """Predict goal images (``mode="image"``) or rollouts (``mode="video"``).

        Sampler arguments left at ``None`` take :attr:`sampler_config`.

        Args:
            images: One image or a list (see :mod:`showme_model.preprocessing` for the accepted
                forms and the resize rule).
            instructions: One instruction or a list; one image with several instructions gives
                one candidate per instruction, equal counts pair up.
            mode: ``"image"`` for a goal image, ``"video"`` for a rollout.
            num_inference_steps: Denoising steps.
            guidance_scale: Text (or, without ``image_guidance_scale``, joint) guidance scale;
                1 disables guidance.
            image_guidance_scale: Enables two-scale guidance with this image scale.
            eta: DDIM noise scale; other schedulers ignore it.
            num_frames: Rollout length in video mode (ignored in image mode).
            frame_stride: Frame-stride condition in video mode.
            scheduler: A name from :data:`showme_model.schedulers.SCHEDULERS`.
            concat_layout: Video mode's concat condition, one of
                :data:`~showme_model.sampler_config.CONCAT_LAYOUTS`; the model was trained with
                its stored one.
            keep_scene: Composite the frames over the input frame where they do not change it
                (:mod:`showme_model.scene_keeping`, with the stored thresholds); ``False`` gives
                the model's frames as decoded. Not applied to ``output_type="latent"``.
            keep_scene_low: Largest change that keeps the input's pixel (scene keeping).
            keep_scene_high: Smallest change that keeps the prediction's pixel.
            keep_scene_radius: Dilation and feathering of the change mask, in pixels.
            seed: Base seed; item ``i`` uses ``seed + i``. Random (and reported) when neither
                ``seed`` nor ``generator`` is given.
            generator: A generator shared by the batch, or one per item.
            latents: Initial noise ``(B, C, T, h, w)``; drawn from the generator when None.
            output_type: ``"uint8"`` frames, ``"float"`` frames in [0, 1], or ``"latent"``.
            callback_on_step_end: ``f(pipeline, step, timestep, callback_kwargs) -> dict``
                after each step (see the module docstring).
            callback_on_step_end_tensor_inputs: Tensors put in ``callback_kwargs``.
            channel_order: ``"rgb"`` or ``"bgr"`` for 3/4-channel inputs.
            resize_mode: ``"crop"`` (centre crop to the model's aspect ratio) or ``"stretch"``.
            restore_size: Resize outputs back to the input region's size (uint8 output only).

        Returns:
            A :class:`Prediction`.

        Raises:
            SamplerSettingsError: Settings out of bounds (a ``ValueError``).
            PredictionCancelledError: A step callback interrupted the call.

        """
        if mode not in adapter_lib.METHOD_MODE_ROLES:
            raise ValueError(f"mode must be 'image' or 'video', got {mode!r}")
        settings = self._resolve(
            image_guidance_scale,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            eta=eta,
            num_frames=num_frames if mode == "video" else 1,
            frame_stride=frame_stride,
            scheduler=scheduler,
            concat_layout=concat_layout,
            keep_scene=keep_scene,
            keep_scene_low=keep_scene_low,
            keep_scene_high=keep_scene_high,
            keep_scene_radius=keep_scene_radius,
        )
        if restore_size and output_type != "uint8":
            raise ValueError("restore_size needs output_type='uint8'")
        image_list, texts = pair_inputs(images, instructions)
        generators, seeds = self._generators(seed, generator, len(texts))
        try:
            output, seconds = self._predict(
                image_list,
                texts,
                mode,
                settings,
                image_guidance_scale,
                generators,
                latents,
                output_type,
                callback_on_step_end,
                callback_on_step_end_tensor_inputs,
                channel_order,
                resize_mode,
                restore_size,
            )
        finally:
            self._offload_all()
        metadata = {
            "mode": mode,
            "seeds": seeds,
            "instructions": texts,
            **settings.to_dict(),
            "image_guidance_scale": image_guidance_scale,
            "adapters": self._roles(mode),
            "resolution": self.resolution,
            "seconds": seconds,
        }
        return Prediction(output, metadata)

    def predict(
        self,
        images: Any,
        instructions: str | Sequence[str],
        mode: Mode = "image",
        num_frames: int | None = None,
        num_steps: int | None = None,
        callback: StepCallback | None = None,
        **kwargs: Any,
    ) -> Prediction:
        """Call the pipeline with the earlier names ``num_steps`` and ``callback(step, total, t)``.

        ``callback`` runs after each step; returning ``False`` cancels (raises
        :class:`PredictionCancelledError`). Every other argument is passed to :meth:`__call__`.
        """
        on_step_end = None
        if callback is not None:

            def on_step_end(
                pipeline: ShowMePipeline, step: int, timestep: torch.Tensor, tensors: dict
            ) -> dict:
                if callback(step, pipeline.num_timesteps, int(timestep)) is False:
                    pipeline._interrupt = True
                return tensors

        return self(
            images,
            instructions,
            mode,
            num_inference_steps=num_steps,
            num_frames=num_frames,
            callback_on_step_end=on_step_end,
            **kwargs,
        )

    def _predict(
        self,
        image_list: list,
        texts: list[str],
        mode: Mode,
        settings: SamplerConfig,
        image_guidance_scale: float | None,
        generators: torch.Generator | list[torch.Generator],
        latents: torch.Tensor | None,
        output_type: str,
        callback_on_step_end: StepEndCallback | None,
        callback_on_step_end_tensor_inputs: Sequence[str],
        channel_order: ChannelOrder,
        resize_mode: ResizeMode,
        restore_size: bool,
    ) -> tuple[np.ndarray | torch.Tensor, dict[str, float]]:
        """Encode, denoise and decode; returns the output and the seconds of each phase."""
        roles = self._roles(mode)
        sync = self._synchronize
        start = time.perf_counter()
        prepared = [
            prepare_image(img, self.resolution, channel_order, resize_mode) for img in image_list
        ]
        pixels = torch.stack([p[0] for p in prepared])
        geometry: list[InputGeometry] = [p[1] for p in prepared]
        contexts = self._contexts(
            pixels, texts, roles, settings.guidance_scale, image_guidance_scale
        )
        if self._encoder_offload is not None:
            self._encoder_offload.offload()
        self._onload("vae")
        first = self.model.encode_latents(pixels.to(self.device, self.dtype)).unsqueeze(2)
        concat = concat_condition(first, settings.num_frames, settings.concat_layout)
        sync()
        encoded = time.perf_counter()

        self._activate(roles)
        sample = self.denoise(
            contexts,
            concat,
            temporal=mode == "video",
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            image_guidance_scale=image_guidance_scale,
            eta=settings.eta,
            frame_stride=settings.frame_stride,
            scheduler=settings.scheduler,
            generator=generators,
            latents=latents,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        sync()
        denoised = time.perf_counter()

        if output_type == "latent":
            output: np.ndarray | torch.Tensor = sample
        else:
            self._onload("vae")
            decoded = self.model.decode_latents(sample).float().clamp(-1.0, 1.0)
            if settings.keep_scene:
                decoded = scene_keeping.keep_scene(
                    decoded,
                    pixels.to(decoded.device),
                    self.model.decode_latents(first).float()[:, :, 0].clamp(-1.0, 1.0),
                    settings.keep_scene_low,
                    settings.keep_scene_high,
                    settings.keep_scene_radius,
                )
            unit = ((decoded + 1.0) / 2.0).permute(0, 2, 3, 4, 1).cpu()
            output = unit.numpy() if output_type == "float" else _to_uint8(unit)
            if restore_size:
                output = np.stack(
                    [restore_frames(f, g) for f, g in zip(output, geometry, strict=True)]
                )
        sync()
        seconds = {
            "encode": encoded - start,
            "denoise": denoised - encoded,
            "decode": time.perf_counter() - denoised,
        }
        return output, seconds

    def _contexts(
        self,
        pixels: torch.Tensor,
        texts: list[str],
        roles: list[str],
        guidance_scale: float,
        image_guidance_scale: float | None,
    ) -> list[torch.Tensor]:
        """Context tokens of each guidance branch, conditional first.

        The unconditional branch's empty prompt and all-zero image are encoded in the same
        batches as the inputs.
        """
        guided = image_guidance_scale is not None or guidance_scale != 1.0
        batch = len(texts)
        text = self.encode_text([*texts, ""] if guided else texts)
        images = torch.cat([pixels, torch.zeros_like(pixels[:1])]) if guided else pixels
        image = self.encode_image_tokens(images, roles)
        contexts = [torch.cat([text[:batch], image[:batch]], dim=1)]
        if not guided:
            return contexts
        empty, zero_image = text[batch:].expand(batch, -1, -1), image[batch:].expand(batch, -1, -1)
        if image_guidance_scale is not None:
            contexts.append(torch.cat([empty, image[:batch]], dim=1))
        contexts.append(torch.cat([empty, zero_image], dim=1))
        return contexts

    @torch.no_grad()
    def denoise(
        self,
        contexts: list[torch.Tensor],
        concat: torch.Tensor,
        temporal: bool,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        image_guidance_scale: float | None = None,
        eta: float | None = None,
        frame_stride: int | None = None,
        scheduler: str | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> torch.Tensor:
        """Run the denoising loop on prepared conditions; returns the final latents.

        Sampler arguments left at ``None`` take :attr:`sampler_config`.

        Args:
            contexts: ``[cond]``, ``[cond, uncond]`` or, for two-scale guidance,
                ``[cond, text-free, uncond]`` context tokens, each ``(B, L, D)``.
            concat: ``(B, C, T, h, w)`` concat condition.
            temporal: Video mode (temporal modules on).
            num_inference_steps: Denoising steps.
            guidance_scale: Text or joint guidance scale.
            image_guidance_scale: Image scale of two-scale guidance.
            eta: DDIM noise scale.
            frame_stride: Frame-stride condition (video mode).
            scheduler: Scheduler name.
            generator: Generator(s) for the initial and per-step noise.
            latents: Initial noise; drawn from ``generator`` when None.
            callback_on_step_end: ``f(pipeline, step, timestep, callback_kwargs) -> dict``.
            callback_on_step_end_tensor_inputs: Tensors put in ``callback_kwargs``.

        """
        unknown = sorted(
            set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        )
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs: {unknown} are not available; "
                f"choose from {list(self._callback_tensor_inputs)}"
            )
        settings = self._resolve(
            image_guidance_scale,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            eta=eta,
            num_frames=concat.shape[2],
            frame_stride=frame_stride,
            scheduler=scheduler,
        )
        sampler = make_scheduler(settings.scheduler, self.model.scheduler_config)
        sampler.set_timesteps(settings.num_inference_steps, device=self.device)
        dtype = self.dtype
        if latents is None:
            latents = _randn(concat.shape, generator, self.device)
        # The sampler state stays in float32 whatever the weights' dtype.
        latents = latents.to(self.device, torch.float32) * sampler.init_noise_sigma
        branches = len(contexts)
        context = torch.cat(contexts).to(self.device, dtype)
        concat = concat.to(self.device, dtype).repeat(branches, 1, 1, 1, 1)
        stride = None
        if temporal and settings.frame_stride is not None:
            stride = torch.full((context.shape[0],), settings.frame_stride, device=self.device)
        accepted = inspect.signature(sampler.step).parameters
        step_kwargs = {
            k: v for k, v in (("generator", generator), ("eta", settings.eta)) if k in accepted
        }
        timesteps = sampler.timesteps
        unet = self._denoiser()
        self._num_timesteps = len(timesteps)
        self._interrupt = False
        for index, t in enumerate(timesteps):
            scaled = sampler.scale_model_input(latents, t).to(dtype).repeat(branches, 1, 1, 1, 1)
            output = unet(
                torch.cat([scaled, concat], dim=1),
                t,
                context,
                frame_stride=stride,
                temporal=temporal,
            )
            guided = _guide(
                output.float().chunk(branches), settings.guidance_scale, image_guidance_scale
            )
            latents = sampler.step(guided, t, latents, **step_kwargs).prev_sample
            if callback_on_step_end is not None:
                tensors = {"latents": latents}
                callback_kwargs = {
                    name: tensors[name] for name in callback_on_step_end_tensor_inputs
                }
                latents = callback_on_step_end(self, index, t, callback_kwargs).pop(
                    "latents", latents
                )
            if self._interrupt:
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

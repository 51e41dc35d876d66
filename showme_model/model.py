"""``ShowMeModel``: the separately trained components of the world model and their folder format.

A model folder follows diffusers' layout: ``model_index.json`` names each component's class,
and each component has its own sub-folder with its config and one safetensors file. LoRA
adapters, when present, live in ``adapters/<role>/`` (see :mod:`showme_model.adapters`), and
the sampler settings the model was tuned for in ``sampler_config.json`` (see
:mod:`showme_model.sampler_config`) and, when a mode runs other adapters than the method's, the
roles of each mode in ``mode_adapters.json`` (:func:`showme_model.adapters.read_mode_roles`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
from diffusers.utils.hub_utils import _add_variant
from safetensors.torch import save_file
from torch import nn
from transformers import BertConfig, BertModel

from showme_model import presets
from showme_model.encoders import (
    ConvImageEncoder,
    OpenCLIPImageEncoder,
    OpenCLIPTextEncoder,
    SentenceTextEncoder,
)
from showme_model.memory import VARIANT_DTYPES
from showme_model.resampler import ImageProjector
from showme_model.sampler_config import SamplerConfig
from showme_model.unet import ShowMeUNet

MODEL_INDEX = "model_index.json"
ADAPTERS_FOLDER = "adapters"
COMPONENTS = ("unet", "vae", "text_encoder", "image_encoder", "image_projector")
# The only classes a model folder may name: loading never imports anything a file asks for.
_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        ShowMeUNet,
        AutoencoderKL,
        OpenCLIPTextEncoder,
        SentenceTextEncoder,
        OpenCLIPImageEncoder,
        ConvImageEncoder,
        ImageProjector,
    )
}

TextEncoder = OpenCLIPTextEncoder | SentenceTextEncoder
ImageEncoder = OpenCLIPImageEncoder | ConvImageEncoder


class ModelFolderError(ValueError):
    """A model folder that is missing, incomplete or unreadable."""


class ShowMeModel(nn.Module):
    """The UNet, VAE, text and image encoders, image projector and noise schedule.

    Args:
        unet: The spatio-temporal denoiser.
        vae: The frame autoencoder; ``vae.config.scaling_factor`` scales its latents.
        text_encoder: Prompt encoder, ``encode(list[str]) -> (B, L, D)``.
        image_encoder: Image encoder, ``encode((B, 3, H, W) in [-1, 1]) -> (B, N, D_img)``.
        image_projector: Resampler from image-encoder tokens to context tokens.
        scheduler_config: Keyword arguments of diffusers' ``DDIMScheduler`` (noise schedule and
            prediction type the UNet was trained with).
        sampler_config: The sampler settings stored with the model, or ``None`` when it has
            none (the pipeline then uses the reference sampler).
        mode_roles: The adapter roles acting in each mode when they differ from the method's
            (:func:`showme_model.adapters.mode_roles`); ``None``: the method's.

    """

    def __init__(
        self,
        unet: ShowMeUNet,
        vae: AutoencoderKL,
        text_encoder: TextEncoder,
        image_encoder: ImageEncoder,
        image_projector: ImageProjector,
        scheduler_config: dict,
        sampler_config: SamplerConfig | None = None,
        mode_roles: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.image_projector = image_projector
        self.scheduler_config = dict(scheduler_config)
        self.sampler_config = sampler_config
        self.mode_roles = mode_roles

    @classmethod
    def from_config_name(cls, name: str) -> ShowMeModel:
        """Build a randomly initialised model from a named preset (``tiny``: for tests)."""
        if name != "tiny":
            raise KeyError(f"no random-initialised component set for {name!r}; choose 'tiny'")
        unet_config = presets.unet_config(name)
        width = unet_config["cross_attention_dim"]
        bert = BertConfig(
            hidden_size=width,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=2 * width,
        )
        minilm = SentenceTextEncoder.from_package()
        text_encoder = SentenceTextEncoder(
            BertModel(bert), minilm.tokenizer, max_length=unet_config["text_length"]
        )
        image_encoder = ConvImageEncoder(image_size=32, channels=(16, 32), out_dim=48)
        projector = ImageProjector(
            input_dim=image_encoder.dim,
            dim=width,
            output_dim=width,
            depth=1,
            heads=2,
            dim_head=16,
            num_queries=unet_config["image_tokens_per_frame"],
            video_length=None,
            ff_mult=2,
        )
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(16, 16, 16, 16),
            layers_per_block=1,
            norm_num_groups=8,
            latent_channels=4,
            sample_size=64,
            scaling_factor=0.18215,
        )
        return cls(
            ShowMeUNet(**unet_config),
            vae,
            text_encoder,
            image_encoder,
            projector,
            presets.scheduler_config(name),
        )

    @property
    def device(self) -> torch.device:
        """Device of the UNet weights."""
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the UNet weights."""
        return self.unet.dtype

    def make_scheduler(self) -> DDIMScheduler:
        """Return a fresh DDIM scheduler with the model's noise schedule."""
        return DDIMScheduler.from_config(self.scheduler_config)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Context tokens ``(B, L, D)`` for a list of prompts."""
        return self.text_encoder.encode(list(texts)).to(self.device, self.dtype)

    def encode_image_context(self, images: torch.Tensor) -> torch.Tensor:
        """Image context tokens ``(B, N, D)`` for ``(B, 3, H, W)`` images in ``[-1, 1]``.

        The image encoder is frozen; the projector keeps its graph so adapters on it can train.
        """
        with torch.no_grad():
            tokens = self.image_encoder.encode(images.to(self.image_encoder.device))
        return self.image_projector(
            tokens.to(self.image_projector.device, self.image_projector.dtype)
        )

    def encode_latents(
        self, frames: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False
    ) -> torch.Tensor:
        """Scaled VAE latents of frames in ``[-1, 1]``.

        Args:
            frames: ``(B, 3, T, H, W)`` video or ``(B, 3, H, W)`` images.
            generator: Random generator used when ``sample`` is set.
            sample: Draw from the posterior instead of taking its mode.

        Returns:
            ``(B, C, T, h, w)`` or ``(B, C, h, w)``, following the input layout.

        """
        video = frames.ndim == 5
        if not video and frames.ndim != 4:
            raise ValueError(f"expected (B, 3, T, H, W) or (B, 3, H, W), got {tuple(frames.shape)}")
        images = _frames_to_images(frames) if video else frames
        posterior = self.vae.encode(images.to(self.vae.device, self.vae.dtype)).latent_dist
        latents = posterior.sample(generator) if sample else posterior.mode()
        latents = latents * self.vae.config.scaling_factor
        return _images_to_frames(latents, frames.shape[0]) if video else latents

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Frames in ``[-1, 1]`` from scaled latents ``(B, C, T, h, w)`` or ``(B, C, h, w)``."""
        video = latents.ndim == 5
        if not video and latents.ndim != 4:
            raise ValueError(
                f"expected (B, C, T, h, w) or (B, C, h, w), got {tuple(latents.shape)}"
            )
        flat = _frames_to_images(latents) if video else latents
        flat = flat.to(self.vae.device, self.vae.dtype) / self.vae.config.scaling_factor
        images = self.vae.decode(flat).sample
        return _images_to_frames(images, latents.shape[0]) if video else images

    def save_pretrained(self, folder: str | Path, variant: str | None = None) -> None:
        """Write the components, the scheduler config and ``model_index.json`` to ``folder``.

        The sampler settings and the per-mode adapter roles are written when the model has
        them. Adapters injected with
        :mod:`showme_model.adapters` are written to ``adapters/<role>`` and left out of the base
        weights.

        Args:
            folder: The model folder.
            variant: Name the weight files ``<weights>.<variant>.safetensors`` (diffusers'
                convention), next to the full-precision ones. ``"fp16"`` and ``"bf16"`` need the
                weights in that dtype (``model.to(dtype=torch.float16)`` first). Adapters are
                written only where the folder has none yet: they keep their stored precision and
                are cast on loading.

        Raises:
            ValueError: ``variant`` names a dtype the weights are not in.

        """
        from showme_model import adapters

        expected = VARIANT_DTYPES.get(variant or "")
        if expected is not None and self.dtype != expected:
            raise ValueError(
                f"variant {variant!r} holds {expected} weights but the model is {self.dtype}; "
                f"cast it first: model.to(dtype={expected})"
            )
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        index: dict[str, object] = {"_class_name": type(self).__name__}
        for name in COMPONENTS:
            component = getattr(self, name)
            _save_component(component, folder / name, variant)
            library = type(component).__module__.split(".")[0]
            index[name] = [library, type(component).__name__]
        self.make_scheduler().save_pretrained(folder / "scheduler")
        index["scheduler"] = ["diffusers", "DDIMScheduler"]
        (folder / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
        if self.sampler_config is not None:
            self.sampler_config.save_pretrained(folder)
        if self.mode_roles is not None:
            adapters.write_mode_roles(folder, self.mode_roles)
        for role in adapters.adapter_roles(self):
            path = folder / ADAPTERS_FOLDER / role
            if variant is None or not path.is_dir():
                adapters.save_adapter(self, role, path)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        load_adapters: bool = True,
        variant: str | None = None,
    ) -> ShowMeModel:
        """Load a model folder written by :meth:`save_pretrained` (or ``showme-convert``).

        Args:
            folder: The model folder.
            device: Where to put the weights (default: CPU).
            dtype: Weight dtype (default: the variant's, else as stored).
            load_adapters: Also load every adapter found in ``adapters/``.
            variant: Load the ``<weights>.<variant>.safetensors`` files (e.g. ``"fp16"``).

        Raises:
            ModelFolderError: The folder or one of its components is missing or unreadable.
            SamplerSettingsError: The folder's ``sampler_config.json`` is unreadable or invalid.
            AdapterError: The folder's ``mode_adapters.json`` is unreadable or invalid.

        """
        from showme_model import adapters

        folder = Path(folder)
        index = _read_index(folder)
        components = {name: _load_component(folder, name, index, variant) for name in COMPONENTS}
        scheduler_file = folder / "scheduler" / DDIMScheduler.config_name
        if not scheduler_file.is_file():
            raise ModelFolderError(f"{folder} has no scheduler config ({scheduler_file})")
        scheduler_config = dict(
            DDIMScheduler.from_config(json.loads(scheduler_file.read_text())).config
        )
        model = cls(
            **components,
            scheduler_config=scheduler_config,
            sampler_config=SamplerConfig.from_pretrained(folder),
            mode_roles=adapters.read_mode_roles(folder),
        )
        if load_adapters and (folder / ADAPTERS_FOLDER).is_dir():
            for path in sorted((folder / ADAPTERS_FOLDER).iterdir()):
                adapters.load_adapter(model, path, path.name)
        return model.to(device=device or "cpu", dtype=dtype or VARIANT_DTYPES.get(variant or ""))


def _frames_to_images(frames: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B * T, C, H, W)``."""
    return frames.permute(0, 2, 1, 3, 4).flatten(0, 1)


def _images_to_frames(images: torch.Tensor, batch: int) -> torch.Tensor:
    """``(B * T, C, H, W)`` -> ``(B, C, T, H, W)``."""
    return images.unflatten(0, (batch, -1)).permute(0, 2, 1, 3, 4)


def _save_component(component: nn.Module, folder: Path, variant: str | None) -> None:
    """Save a component; injected LoRA layers are stripped from its base weights."""
    from showme_model.adapters import base_state_dict, has_adapters

    if not has_adapters(component):
        component.save_pretrained(folder, variant=variant)
        return
    component.save_config(folder)
    save_file(base_state_dict(component), folder / _add_variant(SAFETENSORS_WEIGHTS_NAME, variant))


def _read_index(folder: Path) -> dict:
    if not folder.is_dir():
        raise ModelFolderError(f"model folder not found: {folder}")
    path = folder / MODEL_INDEX
    if not path.is_file():
        raise ModelFolderError(f"{folder} is not a model folder: {MODEL_INDEX} is missing")
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ModelFolderError(f"{path} is not valid JSON: {error}") from error
    missing = [name for name in COMPONENTS if name not in index]
    if missing:
        raise ModelFolderError(f"{path} lacks components: {', '.join(missing)}")
    return index


def _load_component(folder: Path, name: str, index: dict, variant: str | None) -> nn.Module:
    entry = index[name]
    class_name = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
    if class_name not in _CLASSES:
        raise ModelFolderError(
            f"{folder / MODEL_INDEX}: component {name!r} names an unknown class {entry!r}; "
            f"known: {', '.join(_CLASSES)}"
        )
    path = folder / name
    if not path.is_dir():
        raise ModelFolderError(f"{folder} lacks the {name!r} component folder")
    try:
        return _CLASSES[class_name].from_pretrained(path, variant=variant)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ModelFolderError(f"cannot load {name!r} from {path}: {error}") from error

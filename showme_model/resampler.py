"""The image-context projector: DynamiCrafter's Resampler (the paper's "Q-Former").

An IP-Adapter-Plus perceiver: learned queries attend to the image-encoder tokens (and to
themselves) through ``depth`` attention + feed-forward blocks, then are projected to the UNet's
context width. diffusers' :class:`IPAdapterPlusImageProjection` computes the same function as
the original once its fused ``to_kv`` projection is split into ``to_k`` and ``to_v`` halves.
"""

from __future__ import annotations

import re

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import IPAdapterPlusImageProjection
from diffusers.models.modeling_utils import ModelMixin

# Module name patterns (relative to the projector) that LoRA adapters may target.
LORA_TARGETS = (r"layers\.\d+\.attn\.to_q", r"layers\.\d+\.attn\.to_k", r"layers\.\d+\.attn\.to_v")

# Original (lvdm Resampler) key suffixes -> ours, per layer.
_LAYER_RENAMES = {
    "0.norm1": "ln0",
    "0.norm2": "ln1",
    "0.to_q": "attn.to_q",
    "0.to_out": "attn.to_out.0",
    "1.0": "ff.0",
    "1.1": "ff.1.net.0.proj",
    "1.3": "ff.1.net.2",
}
_LAYER_KEY = re.compile(r"^layers\.(\d+)\.(\d\.[a-z_0-9]+)\.(weight|bias)$")


class ImageProjector(IPAdapterPlusImageProjection, ModelMixin, ConfigMixin):
    """Perceiver resampler from image-encoder tokens to UNet context tokens.

    Args:
        input_dim: Width of the image-encoder tokens (1280 for OpenCLIP ViT-H-14).
        dim: Internal width of the perceiver.
        output_dim: Width of the produced context tokens (the UNet's cross-attention width).
        depth: Number of attention + feed-forward blocks.
        heads: Attention heads.
        dim_head: Width of one head.
        num_queries: Learned queries per frame.
        video_length: Frames the queries are made for (DynamiCrafter: 16 queries x 16 frames);
            ``None`` for a single set of ``num_queries`` queries.
        ff_mult: Feed-forward expansion ratio.

    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        input_dim: int = 1280,
        dim: int = 1024,
        output_dim: int = 1024,
        depth: int = 4,
        heads: int = 12,
        dim_head: int = 64,
        num_queries: int = 16,
        video_length: int | None = 16,
        ff_mult: int = 4,
    ) -> None:
        super().__init__(
            embed_dims=input_dim,
            output_dims=output_dim,
            hidden_dims=dim,
            depth=depth,
            dim_head=dim_head,
            heads=heads,
            num_queries=num_queries * (video_length or 1),
            ffn_ratio=ff_mult,
        )

    @property
    def num_tokens(self) -> int:
        """Number of context tokens produced per image."""
        return self.latents.shape[1]

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """Project ``(B, N, input_dim)`` image tokens to ``(B, num_tokens, output_dim)``."""
        if image_tokens.ndim != 3 or image_tokens.shape[-1] != self.config.input_dim:
            raise ValueError(
                f"expected image tokens of shape (B, N, {self.config.input_dim}), "
                f"got {tuple(image_tokens.shape)}"
            )
        return super().forward(image_tokens)


def convert_resampler_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original Resampler state dict (``image_proj_model.*`` without the prefix).

    The fused ``to_kv`` weight is split into its key (first) and value (second) halves.

    Raises:
        KeyError: A key that has no counterpart in :class:`ImageProjector`.

    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "latents" or key.split(".")[0] in ("proj_in", "proj_out", "norm_out"):
            converted[key] = value
            continue
        match = _LAYER_KEY.match(key)
        if match is None:
            raise KeyError(f"unexpected Resampler key {key!r}")
        index, name, kind = match.groups()
        prefix = f"layers.{index}."
        if name == "0.to_kv":
            key_half, value_half = value.chunk(2, dim=0)
            converted[f"{prefix}attn.to_k.{kind}"] = key_half
            converted[f"{prefix}attn.to_v.{kind}"] = value_half
        elif name in _LAYER_RENAMES:
            converted[f"{prefix}{_LAYER_RENAMES[name]}.{kind}"] = value
        else:
            raise KeyError(f"unexpected Resampler key {key!r}")
    return converted


_SHOWME_LORA_KEY = re.compile(r"^layers\.(\d+)\.0\.stage[12]_lora_cross_attn_([qkv])\.lora_([AB])$")


def convert_showme_lora_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert the ShowMe release's Resampler LoRA (``image_proj_model.*`` without the prefix).

    The release stores ``lora_A`` as ``(in, r)`` and ``lora_B`` as ``(r, out)`` with scaling 1, its
    k and v LoRA acting on the halves of the fused ``to_kv``; the result is in peft's layout
    (``layers.<i>.attn.to_<q|k|v>.lora_<A|B>.weight``, ``(r, in)`` and ``(out, r)``).

    Raises:
        KeyError: A key that is not a Resampler LoRA weight.

    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _SHOWME_LORA_KEY.match(key)
        if match is None:
            raise KeyError(f"unexpected Resampler LoRA key {key!r}")
        index, projection, matrix = match.groups()
        converted[f"layers.{index}.attn.to_{projection}.lora_{matrix}.weight"] = (
            value.T.contiguous()
        )
    return converted

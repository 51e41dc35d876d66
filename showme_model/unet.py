"""ShowMeUNet: a DynamiCrafter-compatible spatio-temporal UNet with a per-call temporal switch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel
from torch import nn

from showme_model.unet_blocks import DownStage, MidStage, UpStage, temporal_transformer

NORM_GROUPS = 32
OUT_NORM_EPS = 1e-5


class ShowMeUNet(ModelMixin, ConfigMixin):
    """The video UNet of DynamiCrafter; with ``temporal=False`` it is an image model.

    Input ``sample`` is ``(B, C_in, T, H, W)``: the noisy latent with the concat condition already
    stacked on the channels. ``encoder_hidden_states`` is ``(B, text_length + N, D)``: text tokens
    first, then image tokens. When ``N == image_tokens_per_frame * T`` each frame attends to its
    own ``image_tokens_per_frame`` image tokens, otherwise every frame sees all of them.

    Video mode (``temporal=True``) is DynamiCrafter's forward pass. Image mode (``temporal=False``)
    processes every frame on its own: the temporal transformers (including ``transformer_in``), the
    frame-stride embedding and, unless ``image_mode_temporal_convs`` is set, the temporal
    convolutions are skipped. ``image_mode_temporal_convs=True`` keeps the temporal convolutions
    running on each single frame (where a (3, 1, 1) kernel reduces to its centre tap), which is how
    the released ShowMe stage-1 LoRA was trained; the paper describes the default.

    Args:
        in_channels: input channels (noisy latent + concat condition).
        out_channels: output channels.
        block_out_channels: channels per resolution level.
        layers_per_block: ResNet layers per down level (up levels have one more).
        attention_levels: per level, whether it has spatial and temporal transformers.
        attention_head_dim: channels per attention head.
        transformer_in_heads: heads of the temporal transformer right after ``conv_in``.
        cross_attention_dim: width ``D`` of the context tokens.
        text_length: number of text tokens at the start of the context.
        image_tokens_per_frame: image tokens per frame when the context holds one set per frame.
        learnable_image_weight: weight image attention by ``tanh(alpha) + 1`` (else by 1).
        default_frame_stride: frame stride used in video mode when none is given.
        dropout: dropout of the ResNet blocks.
        image_mode_temporal_convs: keep the temporal convolutions active in image mode.
        patch_size: side of the latent patches that ``conv_in`` sees as one cell (space to
            depth; ``conv_out``'s cells go back to patches, depth to space). 2 lets a UNet run
            on a finer latent grid at the cost of the grid half its size. DynamiCrafter's is 1.

    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 8,
        out_channels: int = 4,
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        attention_levels: Sequence[bool] = (True, True, True, False),
        attention_head_dim: int = 64,
        transformer_in_heads: int = 8,
        cross_attention_dim: int = 1024,
        text_length: int = 77,
        image_tokens_per_frame: int = 16,
        learnable_image_weight: bool = True,
        default_frame_stride: int = 3,
        dropout: float = 0.1,
        image_mode_temporal_convs: bool = False,
        patch_size: int = 1,
    ) -> None:
        super().__init__()
        if len(attention_levels) != len(block_out_channels):
            raise ValueError("attention_levels needs one entry per block_out_channels entry")
        if any(c % NORM_GROUPS for c in block_out_channels):
            raise ValueError(f"block_out_channels must be multiples of {NORM_GROUPS}")
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        base = block_out_channels[0]
        temb_channels = 4 * base
        stage_kwargs = {
            "temb_channels": temb_channels,
            "head_dim": attention_head_dim,
            "cross_attention_dim": cross_attention_dim,
            "text_length": text_length,
            "learnable_image_weight": learnable_image_weight,
            "dropout": dropout,
        }

        self.time_proj = Timesteps(base, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(base, temb_channels)
        self.fs_embedding = TimestepEmbedding(base, temb_channels)
        nn.init.zeros_(self.fs_embedding.linear_2.weight)
        nn.init.zeros_(self.fs_embedding.linear_2.bias)

        self.conv_in = nn.Conv2d(in_channels * patch_size**2, base, kernel_size=3, padding=1)
        self.transformer_in = temporal_transformer(base, transformer_in_heads, attention_head_dim)

        skip_channels = [base]
        channels = base
        self.down_blocks = nn.ModuleList()
        last = len(block_out_channels) - 1
        for level, (width, attn) in enumerate(
            zip(block_out_channels, attention_levels, strict=True)
        ):
            inputs = [channels] + [width] * (layers_per_block - 1)
            channels = width
            skip_channels += [width] * (layers_per_block + (level != last))
            self.down_blocks.append(
                DownStage(
                    inputs,
                    width,
                    with_attention=attn,
                    **stage_kwargs,
                    resample=None if level == last else "down",
                )
            )

        self.mid_block = MidStage(channels, **stage_kwargs)

        self.up_blocks = nn.ModuleList()
        for level in reversed(range(len(block_out_channels))):
            width = block_out_channels[level]
            inputs = []
            for _ in range(layers_per_block + 1):
                inputs.append(channels + skip_channels.pop())
                channels = width
            self.up_blocks.append(
                UpStage(
                    inputs,
                    width,
                    with_attention=attention_levels[level],
                    **stage_kwargs,
                    resample="up" if level else None,
                )
            )

        self.conv_norm_out = nn.GroupNorm(NORM_GROUPS, base, eps=OUT_NORM_EPS)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(base, out_channels * patch_size**2, kernel_size=3, padding=1)
        self.gradient_checkpointing = False

    def _set_gradient_checkpointing(
        self,
        enable: bool = True,
        gradient_checkpointing_func: Callable = torch.utils.checkpoint.checkpoint,
    ) -> None:
        # Checkpoint whole stages only; nested transformer checkpoints would recompute twice.
        self.gradient_checkpointing = enable
        self._gradient_checkpointing_func = gradient_checkpointing_func

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        frame_stride: torch.Tensor | int | None = None,
        temporal: bool = True,
    ) -> torch.Tensor:
        """Predict the model output (noise or v) for a video or a batch of images.

        Args:
            sample: ``(B, C_in, T, H, W)`` noisy latents stacked with the concat condition.
            timestep: diffusion step, a scalar or ``(B,)``.
            encoder_hidden_states: ``(B, text_length + N, D)`` text tokens then image tokens.
            frame_stride: frame stride, a scalar or ``(B,)``; video mode only. Defaults to
                ``config.default_frame_stride``.
            temporal: ``True`` for video mode, ``False`` for image mode (frames independent).

        Returns:
            ``(B, out_channels, T, H, W)``.

        """
        self._check_inputs(sample, encoder_hidden_states)
        batch, channels, frames, height, width = sample.shape
        dtype = sample.dtype

        emb = self.time_embedding(
            self.time_proj(self._per_sample(timestep, batch, sample)).to(dtype)
        )
        if temporal:
            stride = self.config.default_frame_stride if frame_stride is None else frame_stride
            fs = self.time_proj(self._per_sample(stride, batch, sample)).to(dtype)
            emb = emb + self.fs_embedding(fs)
        emb = emb.repeat_interleave(frames, dim=0)
        context = self._frame_context(encoder_hidden_states, frames)

        num_frames = frames if temporal else 1
        modes = (num_frames, temporal, temporal or self.config.image_mode_temporal_convs)

        patch = self.config.patch_size
        h = sample.transpose(1, 2).reshape(batch * frames, channels, height, width)
        h = self.conv_in(F.pixel_unshuffle(h, patch) if patch > 1 else h)
        if temporal:
            h = self.transformer_in(h, num_frames=num_frames, return_dict=False)[0]
        skips = [h]
        for block in self.down_blocks:
            h, block_skips = self._run(block, h, emb, context, *modes)
            skips.extend(block_skips)
        h = self._run(self.mid_block, h, emb, context, *modes)
        for block in self.up_blocks:
            count = len(block.resnets)
            h = self._run(block, h, tuple(skips[-count:]), emb, context, *modes)
            del skips[-count:]
        h = self.conv_out(self.conv_act(self.conv_norm_out(h)))
        if patch > 1:
            h = F.pixel_shuffle(h, patch)
        return h.reshape(batch, frames, -1, height, width).transpose(1, 2)

    def _run(self, module: nn.Module, *args: object) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(module, *args)
        return module(*args)

    def _check_inputs(self, sample: torch.Tensor, context: torch.Tensor) -> None:
        if sample.ndim != 5 or sample.shape[1] != self.config.in_channels:
            raise ValueError(
                f"sample must be (B, {self.config.in_channels}, T, H, W), got {tuple(sample.shape)}"
            )
        multiple = 2 ** (len(self.config.block_out_channels) - 1) * self.config.patch_size
        if sample.shape[-1] % multiple or sample.shape[-2] % multiple:
            raise ValueError(f"latent height and width must be multiples of {multiple}")
        if (
            context.ndim != 3
            or context.shape[0] != sample.shape[0]
            or context.shape[2] != self.config.cross_attention_dim
            or context.shape[1] < self.config.text_length
        ):
            raise ValueError(
                f"encoder_hidden_states must be (B, {self.config.text_length} + N, "
                f"{self.config.cross_attention_dim}) with B = {sample.shape[0]}, "
                f"got {tuple(context.shape)}"
            )

    @staticmethod
    def _per_sample(value: torch.Tensor | float, batch: int, like: torch.Tensor) -> torch.Tensor:
        value = torch.as_tensor(value, device=like.device)
        if value.ndim == 0:
            value = value.expand(batch)
        if value.shape != (batch,):
            raise ValueError(f"expected a scalar or a ({batch},) tensor, got {tuple(value.shape)}")
        return value

    def _frame_context(self, context: torch.Tensor, frames: int) -> torch.Tensor:
        """Repeat the context per frame; split image tokens per frame when there is one set each."""
        text_length = self.config.text_length
        image_tokens = context.shape[1] - text_length
        if image_tokens != self.config.image_tokens_per_frame * frames:
            return context.repeat_interleave(frames, dim=0)
        text = context[:, :text_length].repeat_interleave(frames, dim=0)
        image = context[:, text_length:].reshape(
            context.shape[0] * frames, self.config.image_tokens_per_frame, context.shape[2]
        )
        return torch.cat([text, image], dim=1)


LORA_ROLES = ("manipulation", "prediction")
_ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v")
_FEED_FORWARD = ("ff.net.0.proj", "ff.net.2")


def lora_target_modules(unet: ShowMeUNet, role: str) -> list[str]:
    """Names of the UNet modules a LoRA adapter of ``role`` adapts (as in the ShowMe release).

    ``manipulation`` (stage 1): in every spatial transformer block, self-attention q, k, v;
    cross-attention q, k, v, k_ip, v_ip; feed-forward in and out. ``prediction`` (stage 2): the
    same plus, in every temporal transformer block (``transformer_in`` included), q, k, v of both
    self-attentions and feed-forward in and out. Output projections (``to_out``) are never adapted.
    """
    if role not in LORA_ROLES:
        raise ValueError(f"unknown LoRA role {role!r}; choose one of {', '.join(LORA_ROLES)}")
    spatial = [f"attn1.{p}" for p in _ATTENTION_PROJECTIONS]
    spatial += [f"attn2.{p}" for p in (*_ATTENTION_PROJECTIONS, "to_k_ip", "to_v_ip")]
    spatial += list(_FEED_FORWARD)
    temporal = [f"attn{i}.{p}" for i in (1, 2) for p in _ATTENTION_PROJECTIONS]
    temporal += list(_FEED_FORWARD)
    names = []
    for name, module in unet.named_modules():
        if isinstance(module, Transformer2DModel):
            leaves = spatial
        elif isinstance(module, TransformerTemporalModel) and role == "prediction":
            leaves = temporal
        else:
            continue
        for i in range(len(module.transformer_blocks)):
            names += [f"{name}.transformer_blocks.{i}.{leaf}" for leaf in leaves]
    return names

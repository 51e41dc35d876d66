"""Building blocks of the spatio-temporal UNet.

Everything here is assembled from diffusers modules (``ResnetBlock2D``, ``TemporalConvLayer``,
``Transformer2DModel``, ``TransformerTemporalModel``, ``Attention``, ``Downsample2D``,
``Upsample2D``). The additions are :class:`DualCrossAttention`, DynamiCrafter's cross-attention
that attends to text tokens and image tokens separately and adds the two results; two
subclasses that run diffusers' temporal layers with fewer copies and faster kernels, same
weights, same results: :class:`TemporalConv2dLayer` and :class:`TemporalTransformer`; and
:func:`set_attention_kernel`, which picks how every attention layer computes its softmax
attention.

Frames are folded into the batch, ``(B * T, C, H, W)``. Each block takes ``num_frames`` (how many
consecutive batch entries form one clip), ``temporal_attention`` (run the temporal transformers)
and ``temporal_convs`` (run the temporal convolutions after each ResNet block).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D, TemporalConvLayer
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.transformers.transformer_temporal import (
    TransformerTemporalModel,
    TransformerTemporalModelOutput,
)
from diffusers.models.upsampling import Upsample2D
from torch import nn

TEMPORAL_CONV_DROPOUT = 0.1
RESNET_EPS = 1e-5

AttentionKernel = Literal["sdpa", "math"]
"""How attention is computed: PyTorch's fused ``scaled_dot_product_attention``, or diffusers'
batched matmul, softmax, matmul (``Attention.get_attention_scores``)."""


class DualCrossAttnProcessor:
    """Attention over the text tokens plus a weighted attention over the image tokens."""

    def __init__(self, kernel: AttentionKernel = "sdpa") -> None:
        self.kernel = _checked_kernel(kernel)

    def __call__(
        self,
        attn: DualCrossAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend to ``encoder_hidden_states[:, :text_length]`` and to the tokens after them."""
        if encoder_hidden_states is None:
            raise ValueError("DualCrossAttention needs encoder_hidden_states (text + image tokens)")
        if attention_mask is not None:
            raise ValueError("DualCrossAttention does not support attention masks")
        text = encoder_hidden_states[:, : attn.text_length]
        image = encoder_hidden_states[:, attn.text_length :]
        query = _split_heads(attn.to_q(hidden_states), attn.heads)
        out = self._attend(
            attn,
            query,
            _split_heads(attn.to_k(text), attn.heads),
            _split_heads(attn.to_v(text), attn.heads),
        )
        if image.shape[1] > 0:
            out_ip = self._attend(
                attn,
                query,
                _split_heads(attn.to_k_ip(image), attn.heads),
                _split_heads(attn.to_v_ip(image), attn.heads),
            )
            out = out + attn.image_weight() * out_ip
        batch, heads, tokens, head_dim = out.shape
        out = out.transpose(1, 2).reshape(batch, tokens, heads * head_dim)
        return attn.to_out[1](attn.to_out[0](out))

    def _attend(
        self, attn: Attention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> torch.Tensor:
        """Softmax attention of ``(B, heads, tokens, head_dim)`` tensors, by the chosen kernel."""
        if self.kernel == "sdpa":
            return F.scaled_dot_product_attention(query, key, value)
        probs = attn.get_attention_scores(query.flatten(0, 1), key.flatten(0, 1))
        return torch.bmm(probs, value.flatten(0, 1)).unflatten(0, query.shape[:2])


def _checked_kernel(kernel: AttentionKernel) -> AttentionKernel:
    if kernel not in get_args(AttentionKernel):
        raise ValueError(f"attention kernel must be one of {get_args(AttentionKernel)}")
    return kernel


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, inner = x.shape
    return x.view(batch, tokens, heads, inner // heads).transpose(1, 2)


def set_attention_kernel(unet: nn.Module, kernel: AttentionKernel) -> None:
    """Compute every attention layer of ``unet`` with ``kernel``; the weights are unchanged.

    ``"sdpa"`` (the default) is PyTorch's fused kernel, the fast one on a GPU. ``"math"`` is
    diffusers' ``baddbmm``, softmax, ``bmm``: on a CPU in bfloat16 it is the faster one, where
    the fused CPU kernel's per-block overhead dominates the short sequences of a small UNet
    (8-frame temporal attention, 256 spatial tokens); ``torch.compile`` leaves it to oneDNN's
    batched matmuls instead of turning it back into the fused kernel.
    """
    _checked_kernel(kernel)
    for module in unet.modules():
        if isinstance(module, DualCrossAttention):
            module.set_processor(DualCrossAttnProcessor(kernel))
        elif isinstance(module, Attention):
            module.set_processor(AttnProcessor2_0() if kernel == "sdpa" else AttnProcessor())


class DualCrossAttention(Attention):
    """Cross-attention with separate key/value projections for the image tokens.

    The context is ``[text tokens ; image tokens]``; the first ``text_length`` tokens go through
    ``to_k``/``to_v``, the rest through ``to_k_ip``/``to_v_ip`` (no bias). The image result is
    added with weight ``tanh(alpha) + 1`` (``alpha`` learnable, initialised to 0) or 1.
    """

    def __init__(
        self,
        query_dim: int,
        cross_attention_dim: int,
        heads: int,
        dim_head: int,
        dropout: float = 0.0,
        text_length: int = 77,
        learnable_image_weight: bool = True,
    ) -> None:
        super().__init__(
            query_dim=query_dim,
            cross_attention_dim=cross_attention_dim,
            heads=heads,
            dim_head=dim_head,
            dropout=dropout,
            bias=False,
            out_bias=True,
            processor=DualCrossAttnProcessor(),
        )
        self.text_length = text_length
        inner_dim = heads * dim_head
        self.to_k_ip = nn.Linear(cross_attention_dim, inner_dim, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim, inner_dim, bias=False)
        self.alpha = nn.Parameter(torch.zeros(())) if learnable_image_weight else None

    def set_processor(self, processor: object) -> None:
        """Accept only :class:`DualCrossAttnProcessor`; others would drop the image tokens."""
        if not isinstance(processor, DualCrossAttnProcessor):
            raise TypeError(f"DualCrossAttention needs DualCrossAttnProcessor, got {processor!r}")
        super().set_processor(processor)

    def image_weight(self) -> torch.Tensor | float:
        """Return the factor applied to the image-token attention."""
        return 1.0 if self.alpha is None else torch.tanh(self.alpha) + 1.0


class TemporalConv2dLayer(TemporalConvLayer):
    """diffusers' ``TemporalConvLayer`` with its (3, 1, 1) convolutions run as 2-D convolutions.

    A (3, 1, 1) kernel over ``(T, H, W)`` is a (3, 1) kernel over ``(T, H * W)``: the same
    weights (still stored as ``Conv3d`` parameters, so state-dict keys and checkpoints are
    unchanged) and the same result, computed by PyTorch's 2-D convolution (oneDNN on the CPU)
    instead of its slow 3-D path, which batch-1 3-D convolutions take on the CPU.
    """

    def forward(self, hidden_states: torch.Tensor, num_frames: int = 1) -> torch.Tensor:
        """Convolve ``(B * T, C, H, W)`` features over their ``num_frames`` frames."""
        batch_frames, channels, height, width = hidden_states.shape
        identity = hidden_states.reshape(
            batch_frames // num_frames, num_frames, channels, height * width
        )
        # (B, C, T, H * W): the layout the group norms and the convolutions work in.
        update = identity.transpose(1, 2).contiguous()
        for stage in (self.conv1, self.conv2, self.conv3, self.conv4):
            *pre, conv = stage
            for layer in pre:  # GroupNorm, SiLU, Dropout
                update = layer(update)
            update = F.conv2d(update, conv.weight.squeeze(-1), conv.bias, padding=(1, 0))
        # The residual sum is written in the input's layout: no copy back.
        return (identity + update.transpose(1, 2)).reshape(batch_frames, channels, height, width)


def spatial_transformer(
    channels: int,
    head_dim: int,
    cross_attention_dim: int,
    text_length: int,
    learnable_image_weight: bool,
) -> Transformer2DModel:
    """Build a ``Transformer2DModel`` whose cross-attention is a :class:`DualCrossAttention`."""
    heads = channels // head_dim
    model = Transformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=channels,
        cross_attention_dim=cross_attention_dim,
        use_linear_projection=True,
        activation_fn="geglu",
    )
    for block in model.transformer_blocks:
        block.attn2 = DualCrossAttention(
            channels,
            cross_attention_dim,
            heads,
            head_dim,
            text_length=text_length,
            learnable_image_weight=learnable_image_weight,
        )
    return model


class TemporalTransformer(TransformerTemporalModel):
    """diffusers' ``TransformerTemporalModel`` adding its residual without a copy back.

    diffusers copies the blocks' output from the token layout ``(B * H * W, T, C)`` back to
    ``(B * T, C, H, W)`` and then adds the residual; here the residual is added to a permuted
    view of the output, so the sum is written in the frame layout in one pass. Same modules
    and weights. The copies into the token layout stay: the group norm needs the clip layout
    ``(B, C, T, H, W)``, and the linear layers need tokens.
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        timestep: torch.LongTensor | None = None,
        class_labels: torch.LongTensor | None = None,
        num_frames: int = 1,
        cross_attention_kwargs: dict | None = None,
        return_dict: bool = True,
    ) -> TransformerTemporalModelOutput | tuple[torch.Tensor]:
        """Attend over the ``num_frames`` frames of each clip in ``(B * T, C, H, W)`` features."""
        batch_frames, channels, height, width = hidden_states.shape
        batch = batch_frames // num_frames
        residual = hidden_states.reshape(batch, num_frames, channels, height, width)
        tokens = self.norm(residual.transpose(1, 2))
        tokens = tokens.permute(0, 3, 4, 2, 1).reshape(batch * height * width, num_frames, channels)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(
                tokens,
                encoder_hidden_states=encoder_hidden_states,
                timestep=timestep,
                cross_attention_kwargs=cross_attention_kwargs,
                class_labels=class_labels,
            )
        tokens = self.proj_out(tokens).view(batch, height, width, num_frames, channels)
        output = residual + tokens.permute(0, 3, 4, 1, 2)  # laid out as the residual
        output = output.reshape(batch_frames, channels, height, width)
        return TransformerTemporalModelOutput(sample=output) if return_dict else (output,)


def temporal_transformer(channels: int, heads: int, head_dim: int) -> TemporalTransformer:
    """Build a transformer attending over frames at each pixel (self-attention only)."""
    return TemporalTransformer(
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=channels,
        activation_fn="geglu",
        double_self_attention=True,
    )


def _resnet(in_channels: int, out_channels: int, temb_channels: int, dropout: float) -> nn.Module:
    return ResnetBlock2D(
        in_channels=in_channels,
        out_channels=out_channels,
        temb_channels=temb_channels,
        eps=RESNET_EPS,
        dropout=dropout,
    )


class UNetStage(nn.Module):
    """One resolution level of the UNet: a stack of layers and an optional resampler.

    Layer ``i`` is: ``resnets[i]`` -> ``temp_convs[i]`` -> ``attentions[i]`` ->
    ``temp_attentions[i]`` (the last two only on levels with attention). Down stages return the
    output of every layer (and of the downsampler) as skip connections; up stages consume them.
    """

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int,
        temb_channels: int,
        with_attention: bool,
        head_dim: int,
        cross_attention_dim: int,
        text_length: int,
        learnable_image_weight: bool,
        dropout: float,
        resample: str | None,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            _resnet(c, out_channels, temb_channels, dropout) for c in in_channels
        )
        self.temp_convs = nn.ModuleList(
            TemporalConv2dLayer(out_channels, out_channels, dropout=TEMPORAL_CONV_DROPOUT)
            for _ in in_channels
        )
        if with_attention:
            self.attentions = nn.ModuleList(
                spatial_transformer(
                    out_channels, head_dim, cross_attention_dim, text_length, learnable_image_weight
                )
                for _ in in_channels
            )
            self.temp_attentions = nn.ModuleList(
                temporal_transformer(out_channels, out_channels // head_dim, head_dim)
                for _ in in_channels
            )
        else:
            self.attentions = None
            self.temp_attentions = None
        if resample == "down":
            self.downsamplers = nn.ModuleList(
                [Downsample2D(out_channels, use_conv=True, padding=1, name="op")]
            )
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Upsample2D(out_channels, use_conv=True)])
        elif resample is not None:
            raise ValueError(f"resample must be 'down', 'up' or None, got {resample!r}")
        self.resample = resample

    def layer(
        self,
        i: int,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        context: torch.Tensor,
        num_frames: int,
        temporal_attention: bool,
        temporal_convs: bool,
    ) -> torch.Tensor:
        """Run layer ``i`` on ``(B * T, C, H, W)`` features."""
        hidden_states = self.resnets[i](hidden_states, temb)
        if temporal_convs:
            hidden_states = self.temp_convs[i](hidden_states, num_frames=num_frames)
        if self.attentions is not None:
            hidden_states = self.attentions[i](
                hidden_states, encoder_hidden_states=context, return_dict=False
            )[0]
            if temporal_attention:
                hidden_states = self.temp_attentions[i](
                    hidden_states, num_frames=num_frames, return_dict=False
                )[0]
        return hidden_states


class DownStage(UNetStage):
    """A down level; returns its output and the skip connections it produced."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        context: torch.Tensor,
        num_frames: int,
        temporal_attention: bool,
        temporal_convs: bool,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Run all layers, then the downsampler if any."""
        skips = []
        for i in range(len(self.resnets)):
            hidden_states = self.layer(
                i, hidden_states, temb, context, num_frames, temporal_attention, temporal_convs
            )
            skips.append(hidden_states)
        if self.resample == "down":
            hidden_states = self.downsamplers[0](hidden_states)
            skips.append(hidden_states)
        return hidden_states, tuple(skips)


class UpStage(UNetStage):
    """An up level; each layer first concatenates one skip connection (last produced first)."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        skips: tuple[torch.Tensor, ...],
        temb: torch.Tensor,
        context: torch.Tensor,
        num_frames: int,
        temporal_attention: bool,
        temporal_convs: bool,
    ) -> torch.Tensor:
        """Run all layers on ``hidden_states`` and ``skips``, then the upsampler if any."""
        if len(skips) != len(self.resnets):
            raise ValueError(f"expected {len(self.resnets)} skip tensors, got {len(skips)}")
        for i, skip in enumerate(reversed(skips)):
            hidden_states = torch.cat([hidden_states, skip], dim=1)
            hidden_states = self.layer(
                i, hidden_states, temb, context, num_frames, temporal_attention, temporal_convs
            )
        if self.resample == "up":
            hidden_states = self.upsamplers[0](hidden_states)
        return hidden_states


class MidStage(nn.Module):
    """ResNet + temporal conv, spatial and temporal transformers, ResNet + temporal conv."""

    def __init__(
        self,
        channels: int,
        temb_channels: int,
        head_dim: int,
        cross_attention_dim: int,
        text_length: int,
        learnable_image_weight: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            _resnet(channels, channels, temb_channels, dropout) for _ in range(2)
        )
        self.temp_convs = nn.ModuleList(
            TemporalConv2dLayer(channels, channels, dropout=TEMPORAL_CONV_DROPOUT) for _ in range(2)
        )
        self.attentions = nn.ModuleList(
            [
                spatial_transformer(
                    channels, head_dim, cross_attention_dim, text_length, learnable_image_weight
                )
            ]
        )
        self.temp_attentions = nn.ModuleList(
            [temporal_transformer(channels, channels // head_dim, head_dim)]
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        context: torch.Tensor,
        num_frames: int,
        temporal_attention: bool,
        temporal_convs: bool,
    ) -> torch.Tensor:
        """Run the middle of the UNet on ``(B * T, C, H, W)`` features."""
        hidden_states = self.resnets[0](hidden_states, temb)
        if temporal_convs:
            hidden_states = self.temp_convs[0](hidden_states, num_frames=num_frames)
        hidden_states = self.attentions[0](
            hidden_states, encoder_hidden_states=context, return_dict=False
        )[0]
        if temporal_attention:
            hidden_states = self.temp_attentions[0](
                hidden_states, num_frames=num_frames, return_dict=False
            )[0]
        hidden_states = self.resnets[1](hidden_states, temb)
        if temporal_convs:
            hidden_states = self.temp_convs[1](hidden_states, num_frames=num_frames)
        return hidden_states

"""ShowMe's reward losses on the one-step estimate of the clean latent.

- Structure reward (stage 1): the one-step estimate ``x0`` of a lightly noised target latent is
  decoded with the VAE and passed through frozen, differentiable depth and edge models; the loss
  is the weighted MSE against the maps of the true target frame. Unlike the released code (which
  ran its critics under ``no_grad``), the gradient flows through the critics and the decoder into
  the model that predicted the noise.
- Motion reward (stage 2): the per-pixel temporal distribution of latent motion
  ``||x0[f+1] - x0[f]||`` (over channels) is pulled towards the temporal distribution of the
  optical-flow magnitude, average-pooled to latent size, by ``KL(flow || latent)``; it never
  leaves latent space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PREDICTION_TYPES = ("epsilon", "v_prediction")


def predict_x0(
    noisy: torch.Tensor,
    model_output: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str = "epsilon",
) -> torch.Tensor:
    """One-step estimate of the clean latent from a noisy latent and the model's prediction.

    Args:
        noisy: ``x_t``, shape ``(B, ...)``.
        model_output: The predicted noise (``"epsilon"``) or velocity (``"v_prediction"``).
        timesteps: ``(B,)`` integer diffusion steps.
        alphas_cumprod: The schedule's cumulative products of alphas, indexed by step.
        prediction_type: ``"epsilon"`` or ``"v_prediction"``.

    Returns:
        ``x0`` with the shape of ``noisy``; differentiable with respect to ``model_output``.

    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}"
        )
    shape = (-1,) + (1,) * (noisy.dim() - 1)
    alpha_bar = alphas_cumprod.to(noisy.device, torch.float32)[timesteps].view(shape)
    sqrt_a, sqrt_1ma = alpha_bar.sqrt().to(noisy.dtype), (1 - alpha_bar).sqrt().to(noisy.dtype)
    if prediction_type == "epsilon":
        return (noisy - sqrt_1ma * model_output) / sqrt_a
    return sqrt_a * noisy - sqrt_1ma * model_output


class StructureReward(nn.Module):
    """Weighted MSE between depth and edge maps of generated and true images.

    Args:
        depth_model: Frozen differentiable depth critic (``(B,3,H,W)`` in ``[-1,1]`` to
            ``(B,1,H,W)``), or ``None`` to skip the depth term.
        edge_model: Frozen differentiable edge critic with the same interface, or ``None``.
        depth_weight: Weight of the depth term (the paper uses 1).
        edge_weight: Weight of the edge term (the paper uses 1).

    """

    def __init__(
        self,
        depth_model: nn.Module | None = None,
        edge_model: nn.Module | None = None,
        depth_weight: float = 1.0,
        edge_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if depth_model is None and edge_model is None:
            raise ValueError("a structure reward needs a depth model, an edge model or both")
        self.critics = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        for name, model, weight in (
            ("depth", depth_model, depth_weight),
            ("edge", edge_model, edge_weight),
        ):
            if model is not None:
                self.critics[name] = model.eval().requires_grad_(False)
                self.weights[name] = float(weight)

    def train(self, mode: bool = True) -> StructureReward:
        """Keep the critics in eval mode whatever the trainer asks."""
        super().train(mode)
        self.critics.eval()
        return self

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the reward losses.

        Args:
            images: Decoded one-step estimates ``(B, 3, H, W)`` in ``[-1, 1]``, with gradient.
            targets: The true target frames ``(B, 3, H, W)`` in ``[-1, 1]``.

        Returns:
            Per-sample losses ``(B,)``: ``{"depth": ..., "edge": ..., "total": weighted sum}``
            (the terms that are enabled); each term is the MSE over one sample's map.

        """
        if images.shape != targets.shape:
            raise ValueError(f"images {tuple(images.shape)} and targets {tuple(targets.shape)}")
        losses: dict[str, torch.Tensor] = {}
        for name, critic in self.critics.items():
            # Critics run in float32: their outputs are compared at small differences.
            prediction = critic(images.float())
            with torch.no_grad():
                reference = critic(targets.float())
            losses[name] = F.mse_loss(prediction, reference, reduction="none").flatten(1).mean(1)
        losses["total"] = sum(self.weights[name] * losses[name] for name in self.critics)
        return losses


def pool_flow_magnitude(flow_magnitude: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Average-pool flow magnitudes ``(B, T-1, H, W)`` to the latent size ``(h, w)``."""
    if flow_magnitude.dim() != 4:
        raise ValueError(
            f"flow magnitude must be (B, T-1, H, W), got {tuple(flow_magnitude.shape)}"
        )
    if tuple(flow_magnitude.shape[-2:]) == tuple(size):
        return flow_magnitude
    return F.adaptive_avg_pool2d(flow_magnitude.float(), size)


def motion_reward(
    x0: torch.Tensor, flow_magnitude: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Per-sample KL divergence between flow and latent-motion temporal distributions.

    Args:
        x0: One-step clean-latent estimates ``(B, C, T, h, w)``, with gradient.
        flow_magnitude: Optical-flow magnitudes between consecutive frames, ``(B, T-1, H, W)`` at
            any resolution (average-pooled to ``(h, w)``).
        eps: Added to both magnitudes before normalising over time.

    Returns:
        ``(B,)``: ``KL(P_flow || Q_latent)`` summed over time, averaged over pixels.

    """
    if x0.dim() != 5 or x0.shape[2] < 2:
        raise ValueError(f"x0 must be (B, C, T>=2, h, w), got {tuple(x0.shape)}")
    batch, _, frames, height, width = x0.shape
    if flow_magnitude.shape[:2] != (batch, frames - 1):
        raise ValueError(
            f"flow magnitude {tuple(flow_magnitude.shape)} does not fit {frames} frames of batch "
            f"{batch}: expected (B, T-1, H, W)"
        )
    latent_motion = (x0[:, :, 1:] - x0[:, :, :-1]).float().norm(dim=1)  # (B, T-1, h, w)
    flow = pool_flow_magnitude(flow_magnitude.to(x0.device), (height, width)).float()
    p = flow + eps
    p = p / p.sum(dim=1, keepdim=True)
    q = latent_motion + eps
    q = q / q.sum(dim=1, keepdim=True)
    kl = (p * (p.log() - q.log())).sum(dim=1)  # (B, h, w)
    return kl.flatten(1).mean(dim=1)

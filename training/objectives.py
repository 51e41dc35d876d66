"""The training objective of each mode, as one module (the unit that DDP wraps).

Per sample: encode the frames (frozen VAE), draw noise and a timestep from the sample's own
generator, apply classifier-free-guidance dropout, predict the noise, and add the mode's reward:

- ``base``: all frames noised; the first frame's latent repeated as the concat condition
  (DynamiCrafter), or for a share ``video_concat`` of the samples video mode's condition
  (the model's ``concat_layout``: by default first-frame latent at index 0, zeros elsewhere);
  temporal modules on.
- ``stage1``: the target frame noised, the source frame's latent as concat; temporal modules off;
  structure reward on the samples with ``t < threshold``: only their x0 estimates are decoded.
- ``stage2``: the clip noised; video mode's concat condition (the model's ``concat_layout``);
  temporal modules on; motion reward on the samples with ``t > threshold`` (latent space only).

Every loss is a mean over the batch of per-sample terms (a reward term counts as zero for a
sample outside its timestep range), so one process with batch ``2B`` and two processes with
batch ``B`` optimise the same function.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from showme_model.pipeline import concat_condition
from training.config import CfgDropoutConfig, MotionRewardConfig, StructureRewardConfig
from training.data_order import sample_generator
from training.rewards.losses import StructureReward, motion_reward, predict_x0

FROZEN_ENCODERS = ("vae", "text_encoder", "image_encoder")
TEXT_CACHE_SIZE = 512  # prompts whose text tokens are kept
CHANGE_THRESHOLD = 16 / 255  # a pixel change of 8 grey levels, in [-1, 1] units


class DiffusionObjective(nn.Module):
    """Noise-prediction loss plus the mode's reward for a batch from the training loader.

    Args:
        model: A :class:`~showme_model.model.ShowMeModel` with its adapters set up for ``mode``.
        mode: ``base``, ``stage1`` or ``stage2``.
        seed: Run seed; with each item's ``draw_id`` it seeds the item's noise and timestep.
        cfg_dropout: Guidance-dropout probabilities.
        structure: Stage-1 reward settings; ``structure_reward`` is its critic (or ``None``).
        motion: Stage-2 reward settings.
        structure_reward: The structure critic, used when ``mode == "stage1"``.
        video_concat: ``base`` only: the share of samples conditioned as video mode at
            inference (the layout of the model's ``sampler_config.concat_layout``, by default
            first-frame latent at index 0, zeros elsewhere) rather than on the repeated
            first-frame latent; drawn per sample from its own generator.
        change_weight: The noise-prediction loss of a latent cell whose pixels change between
            the conditioning image and the frame (:func:`changed_cells`) weighs
            ``1 + change_weight``; 0 gives the plain mean.

    """

    def __init__(
        self,
        model: nn.Module,
        mode: str,
        seed: int,
        cfg_dropout: CfgDropoutConfig,
        structure: StructureRewardConfig,
        motion: MotionRewardConfig,
        structure_reward: StructureReward | None = None,
        video_concat: float = 0.0,
        change_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= video_concat <= 1.0:
            raise ValueError(f"video_concat must lie in [0, 1], got {video_concat}")
        if change_weight < 0.0:
            raise ValueError(f"change_weight must be >= 0, got {change_weight}")
        self.change_weight = change_weight
        self.model = model
        self.mode = mode
        self.seed = seed
        self.cfg_dropout = cfg_dropout
        self.structure = structure
        self.motion = motion
        self.structure_reward = structure_reward
        self.video_concat = video_concat if mode == "base" else 0.0
        settings = getattr(model, "sampler_config", None)
        self.concat_layout = settings.concat_layout if settings is not None else "first_frame"
        self.structure_active = mode == "stage1" and structure.enabled
        self.motion_active = mode == "stage2" and motion.enabled
        if self.structure_active and structure_reward is None:
            raise ValueError("stage1 with the structure reward enabled needs a StructureReward")
        # The forward (noising) process of the model's schedule: add_noise and get_velocity.
        self.noise_scheduler = DDPMScheduler.from_config(model.scheduler_config)
        self.num_train_timesteps = self.noise_scheduler.config.num_train_timesteps
        self.prediction_type = self.noise_scheduler.config.prediction_type
        self.register_buffer(
            "alphas_cumprod", self.noise_scheduler.alphas_cumprod.clone(), persistent=False
        )
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.train()

    def train(self, mode: bool = True) -> DiffusionObjective:
        """Set train mode, keeping the frozen encoders (and their dropout) in eval mode."""
        super().train(mode)
        for name in FROZEN_ENCODERS:
            getattr(self.model, name).eval()
        return self

    def forward(self, batch: dict[str, Any], use_rewards: bool = True) -> dict[str, torch.Tensor]:
        """Return ``{"loss", "mse", ...}``; ``loss`` (and ``reward``) keep their graph."""
        model = self.model
        frames, source = self._frames(batch)
        batch_size = frames.shape[0]
        draws = [int(d) for d in batch["draw_id"]]
        generators = [sample_generator(self.seed, d) for d in draws]

        with torch.no_grad():
            latents = model.encode_latents(frames).to(model.dtype)  # (B, 4, T, h, w)
            if self.mode == "stage1":
                cond_latent = model.encode_latents(source).to(model.dtype)  # (B, 4, h, w)
            else:  # the source is the clip's first frame, already encoded
                cond_latent = latents[:, :, 0]
        timesteps = torch.cat(
            [torch.randint(self.num_train_timesteps, (1,), generator=g) for g in generators]
        ).to(latents.device)
        noise = torch.stack(
            [torch.randn(latents.shape[1:], generator=g, dtype=torch.float32) for g in generators]
        ).to(latents.device, latents.dtype)
        keep_text, keep_image = self._guidance_dropout(generators, latents.device)

        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        concat = self._concat(cond_latent, latents.shape[2], self._video_concat_mask(generators))
        context = self._context(batch["instruction"], source, keep_text, keep_image)
        frame_stride = torch.as_tensor(batch.get("frame_stride", 1), device=latents.device)
        prediction = model.unet(
            torch.cat([noisy, concat], dim=1),
            timesteps,
            context,
            frame_stride=frame_stride,
            temporal=self.mode != "stage1",
        )
        target = (
            noise
            if self.prediction_type == "epsilon"
            else self.noise_scheduler.get_velocity(latents, noise, timesteps)
        )
        error = F.mse_loss(prediction.float(), target.float(), reduction="none")
        if self.change_weight:
            changed = changed_cells(frames, source, latents.shape[-2:])
            error = error * (1.0 + self.change_weight * changed.unsqueeze(1))
        mse = error.flatten(1).mean(1)
        losses = {"mse": mse.mean()}
        loss = mse.mean()
        if use_rewards and (self.structure_active or self.motion_active):
            x0 = predict_x0(noisy, prediction, timesteps, self.alphas_cumprod, self.prediction_type)
            if self.structure_active:
                selected = timesteps < self.structure.threshold
                term = self._structure_terms(x0, _as_image(batch["target"]), selected, losses)
            else:
                selected = timesteps > self.motion.threshold
                term = self._motion_terms(x0, batch, selected, losses)
            losses["reward_fraction"] = selected.float().mean()
            losses["reward"] = term.sum() / batch_size
            loss = loss + losses["reward"]
        losses["loss"] = loss
        return losses

    def _frames(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames to noise ``(B, 3, T, H, W)`` and the conditioning image ``(B, 3, H, W)``."""
        device = self.model.device
        if self.mode == "stage1":
            if "target" not in batch or "source" not in batch:
                raise KeyError("stage1 batches need 'source' and 'target' images")
            target, source = (_as_image(batch[k]).to(device) for k in ("target", "source"))
            return target.unsqueeze(2), source
        if "video" not in batch:
            raise KeyError(f"{self.mode} batches need a 'video' clip (B, 3, T, H, W)")
        video = batch["video"].to(device)
        return video, video[:, :, 0]

    def _guidance_dropout(
        self, generators: list[torch.Generator], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample keep masks: both dropped, else text only, else image only (DynamiCrafter)."""
        p = self.cfg_dropout
        draws = torch.cat([torch.rand(1, generator=g) for g in generators])
        both = draws < p.both
        text_only = (draws >= p.both) & (draws < p.text)
        image_only = (draws >= p.text) & (draws < p.text + p.image - p.both)
        return (~(both | text_only)).to(device), (~(both | image_only)).to(device)

    def _video_concat_mask(self, generators: list[torch.Generator]) -> torch.Tensor:
        """Per sample: whether its concat condition is video mode's (always in stage 2)."""
        if self.mode == "stage2" or self.video_concat == 1.0:
            return torch.ones(len(generators), dtype=torch.bool)
        if self.video_concat == 0.0:  # no draw: the generators' streams stay as before
            return torch.zeros(len(generators), dtype=torch.bool)
        return torch.cat([torch.rand(1, generator=g) for g in generators]) < self.video_concat

    def _concat(self, cond_latent: torch.Tensor, frames: int, video: torch.Tensor) -> torch.Tensor:
        """Video mode's condition (the model's layout) where ``video``, else repeated."""
        cond = cond_latent.unsqueeze(2)
        repeated = concat_condition(cond, frames, "repeated")
        video_mode = concat_condition(cond, frames, self.concat_layout)
        return torch.where(video.to(cond.device).view(-1, 1, 1, 1, 1), video_mode, repeated)

    def _context(
        self,
        instructions: list[str],
        images: torch.Tensor,
        keep_text: torch.Tensor,
        keep_image: torch.Tensor,
    ) -> torch.Tensor:
        """Return ``[text tokens ; image tokens]`` with guidance dropout applied.

        Dropped text is the empty prompt and a dropped image an all-zero image, as in
        DynamiCrafter's unconditional branch.
        """
        model = self.model
        text = self._encode_text(list(instructions))
        if not keep_text.all():
            empty = self._encode_text([""])
            text = torch.where(keep_text.view(-1, 1, 1), text, empty.to(text.dtype))
        images = images * keep_image.view(-1, 1, 1, 1).to(images.dtype)
        image_tokens = model.encode_image_context(images)
        return torch.cat([text, image_tokens.to(text.dtype)], dim=1)

    def _encode_text(self, instructions: list[str]) -> torch.Tensor:
        """Text tokens ``(B, L, D)``; the most recent prompts are cached (the encoder is frozen).

        The cache is bounded: a data set of mostly distinct captions (Something-Something's
        object names) would otherwise keep every caption's tokens for the whole run.
        """
        cache = self._text_cache
        missing = sorted(set(instructions) - set(cache))
        if missing:
            cache.update(zip(missing, self.model.encode_text(missing), strict=True))
        tokens = torch.stack([cache[text] for text in instructions])
        for text in instructions:
            cache.move_to_end(text)
        while len(cache) > TEXT_CACHE_SIZE:
            cache.popitem(last=False)
        return tokens

    def _structure_terms(
        self,
        x0: torch.Tensor,
        targets: torch.Tensor,
        selected: torch.Tensor,
        losses: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """Per-sample structure rewards of the selected samples (only those are decoded)."""
        index = selected.nonzero().flatten()
        if index.numel() == 0:
            return x0.new_zeros(1)
        images = self.model.decode_latents(x0[index, :, 0])  # (n, 3, H, W), with gradient
        terms = self.structure_reward(images, targets.to(images.device)[index])
        for name, value in terms.items():
            losses[f"structure_{name}"] = value.detach().mean()
        return terms["total"]

    def _motion_terms(
        self,
        x0: torch.Tensor,
        batch: dict[str, Any],
        selected: torch.Tensor,
        losses: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """Weighted per-sample motion rewards of the selected samples (no decoding)."""
        if "flow" not in batch:
            raise KeyError(
                "the motion reward needs flow magnitudes under 'flow' (B, T-1, H, W) for every "
                "clip of the batch: cache them with `showme-data flow`"
            )
        index = selected.nonzero().flatten()
        if index.numel() == 0:
            return x0.new_zeros(1)
        kl = motion_reward(x0[index], batch["flow"].to(x0.device)[index])
        losses["motion_kl"] = kl.detach().mean()
        return self.motion.weight * kl


def changed_cells(
    frames: torch.Tensor, source: torch.Tensor, latent_size: torch.Size | tuple[int, int]
) -> torch.Tensor:
    """Latent cells ``(B, T, h, w)`` (0 or 1) where a pixel of the frame differs from the source.

    A pixel has changed when a channel differs by more than :data:`CHANGE_THRESHOLD`; a cell has
    changed when one of its pixels has.

    Args:
        frames: ``(B, 3, T, H, W)`` in ``[-1, 1]``.
        source: The conditioning image ``(B, 3, H, W)``.
        latent_size: ``(h, w)``; ``H`` and ``W`` are multiples of it.

    """
    changed = (frames - source.unsqueeze(2)).abs().amax(1) > CHANGE_THRESHOLD  # (B, T, H, W)
    height, width = frames.shape[-2:]
    kernel = (height // latent_size[0], width // latent_size[1])
    return F.max_pool2d(changed.flatten(0, 1).unsqueeze(1).float(), kernel).view(
        *changed.shape[:2], *latent_size
    )


def _as_image(frames: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` from images or one-frame clips ``(B, 3, 1, H, W)``."""
    if frames.dim() == 5 and frames.shape[2] == 1:
        return frames[:, :, 0]
    if frames.dim() != 4:
        raise ValueError(
            f"expected images (B, 3, H, W) or (B, 3, 1, H, W), got {tuple(frames.shape)}"
        )
    return frames

"""The training loop: one code path from a CPU to many GPUs through accelerate.

DDP, FSDP or DeepSpeed, mixed precision and the number of processes come from ``accelerate
launch`` (or ``accelerate config``); the loop adds gradient accumulation, grad-norm clipping,
AdamW with a diffusers LR schedule, TensorBoard logs, a progress bar and atomic checkpoints that
resume exactly (see :mod:`training.checkpointing` and :mod:`training.data_order`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm.auto import tqdm

from showme_model import adapters
from showme_model.model import ShowMeModel
from showme_model.pipeline import ShowMePipeline
from showme_model.writers import make_strip, write_png
from training import checkpointing
from training.config import StructureRewardConfig, TrainConfig
from training.data.dataset import ClipDataset
from training.data_order import StreamBatchSampler, StreamDataset
from training.objectives import DiffusionObjective
from training.rewards.depth import load_depth_model
from training.rewards.edges import load_edge_model
from training.rewards.losses import StructureReward
from training.synthetic import MovingSquares

TRAINED_ROLE = {"stage1": "manipulation", "stage2": "prediction"}


def build_model(config: TrainConfig) -> ShowMeModel:
    """Load or create the model and make exactly the mode's parameters trainable.

    ``base`` trains the UNet and the image projector; ``stage1`` a fresh ``manipulation``
    adapter with temporal modules off; ``stage2`` a fresh ``prediction`` adapter next to the
    loaded, frozen ``manipulation`` adapter (when one is given or in the model folder).
    """
    spec = config.model
    model = (
        ShowMeModel.from_pretrained(spec.folder)
        if spec.folder
        else ShowMeModel.from_config_name(spec.preset)
    )
    if config.sampler is not None:
        model.sampler_config = config.sampler
    if spec.manipulation_adapter and "manipulation" not in adapters.adapter_roles(model):
        adapters.load_adapter(model, spec.manipulation_adapter, "manipulation")
    if config.mode == "base":
        model.requires_grad_(False)
        model.unet.requires_grad_(True)
        model.image_projector.requires_grad_(True)
    else:
        role = TRAINED_ROLE[config.mode]
        if role in adapters.adapter_roles(model):
            raise ValueError(
                f"the model already has a trained {role!r} adapter; start from one without"
            )
        adapters.add_adapter(model, role)
        adapters.set_trainable_adapter(model, role)
        roles = (
            adapters.IMAGE_MODE_ROLES if config.mode == "stage1" else adapters.adapter_roles(model)
        )
        adapters.set_active_adapters(model, roles)
    if not config.dropout:
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
    if config.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
        model.vae.enable_gradient_checkpointing()
    return model


def build_structure_reward(config: StructureRewardConfig) -> StructureReward:
    """Build the frozen depth and edge critics the config names."""
    depth = None
    if config.depth_kind is not None:
        if config.depth_path is None:
            raise ValueError("structure.depth_kind is set but structure.depth_path is not")
        depth = load_depth_model(config.depth_kind, config.depth_path)
    edges = load_edge_model(config.edge_model, config.edge_path) if config.edge_model else None
    return StructureReward(depth, edges, config.depth_weight, config.edge_weight)


def build_dataset(config: TrainConfig, latent_factor: int = 8) -> Dataset:
    """Synthetic moving squares (``data.synthetic > 0``) or the clips of ``data.manifest``.

    ``latent_factor`` is the VAE's downsampling, which names the cached flow magnitudes.
    """
    data = config.data
    if data.synthetic > 0:
        return MovingSquares(
            data.synthetic, data.resolution, data.num_frames, pairs=config.mode == "stage1"
        )
    return ClipDataset(
        data.manifest,
        split=data.split,
        mode="pair" if config.mode == "stage1" else "clip",
        frames=data.num_frames,
        size=data.resolution,
        seed=config.seed,
        latent_factor=latent_factor,
    )


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch the keys every item has (an optional key, e.g. cached ``flow``, needs all)."""
    keys = set.intersection(*(set(item) for item in items))
    return default_collate([{key: item[key] for key in keys} for item in items])


class Trainer:
    """Runs one training configuration.

    Args:
        config: The run configuration.
        dataset: Training items; by default :func:`build_dataset`.

    """

    def __init__(self, config: TrainConfig, dataset: Dataset | None = None) -> None:
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.accelerator = Accelerator(
            # Without this, processes launched on a machine without GPUs would not form a
            # (gloo) process group and would each train alone.
            cpu=not torch.cuda.is_available(),
            mixed_precision=config.mixed_precision,
            log_with=config.report_to,
            project_dir=str(self.output_dir),
        )
        set_seed(config.seed)
        self.model = build_model(config)
        structure = (
            build_structure_reward(config.structure)
            if config.mode == "stage1" and config.structure.enabled
            else None
        )
        objective = DiffusionObjective(
            self.model,
            config.mode,
            config.seed,
            config.cfg_dropout,
            config.structure,
            config.motion,
            structure,
            config.video_concat,
            config.change_weight,
        )
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        optim = config.optim
        optimizer = torch.optim.AdamW(
            self.parameters,
            lr=optim.lr,
            betas=optim.betas,
            eps=optim.eps,
            weight_decay=optim.weight_decay,
        )
        self.lr_scheduler = get_scheduler(
            optim.lr_schedule,
            optimizer,
            num_warmup_steps=optim.warmup_steps,
            num_training_steps=config.max_steps,
        )
        self.objective, self.optimizer = self.accelerator.prepare(objective, optimizer)
        vae_factor = 2 ** (len(self.model.vae.config.block_out_channels) - 1)
        self.dataset = StreamDataset(dataset or build_dataset(config, vae_factor), config.seed)
        self.state = checkpointing.TrainingState()

    @property
    def checkpoint_root(self) -> Path:
        """Folder of this run's checkpoints."""
        return self.output_dir / "checkpoints"

    def resume(self, checkpoint: str | Path | None = None) -> None:
        """Continue from ``checkpoint`` (default: the newest complete one, if any)."""
        folder = (
            Path(checkpoint)
            if checkpoint
            else checkpointing.latest_checkpoint(self.checkpoint_root)
        )
        if folder is None:
            return
        self.state = checkpointing.load_checkpoint(
            folder,
            self.model,
            self.optimizer,
            self.lr_scheduler,
            rank=self.accelerator.process_index,
        )

    def _loader(self) -> DataLoader:
        acc, config = self.accelerator, self.config
        sampler = StreamBatchSampler(
            self.state.data_position, config.batch_size, acc.num_processes, acc.process_index
        )
        # An explicit generator keeps the loader from drawing on the global RNG (resume exactness).
        return DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=config.data.num_workers,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(config.seed),
        )

    def step(self, batches: Sequence[dict[str, Any]]) -> dict[str, float]:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches.

        Returns:
            The losses averaged over the micro-batches, the gradient norm before clipping and
            the learning rate used.

        """
        acc, config = self.accelerator, self.config
        if len(batches) != config.gradient_accumulation_steps:
            raise ValueError(f"need {config.gradient_accumulation_steps} micro-batches per step")
        use_rewards = self.state.step >= config.structure.start_step
        logs: dict[str, float] = {"lr": self.lr_scheduler.get_last_lr()[0]}
        for micro, batch in enumerate(batches):
            last = micro == len(batches) - 1
            with contextlib.nullcontext() if last else acc.no_sync(self.objective):
                losses = self.objective(batch, use_rewards=use_rewards)
                acc.backward(losses["loss"] / len(batches))
            for name, value in losses.items():
                logs[name] = logs.get(name, 0.0) + float(value.detach()) / len(batches)
        grad_norm = acc.clip_grad_norm_(self.parameters, config.optim.max_grad_norm)
        logs["grad_norm"] = float(grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.state.data_position += config.batch_size * acc.num_processes * len(batches)
        return logs

    def train(self) -> checkpointing.TrainingState:
        """Train until ``max_steps``, logging and checkpointing on the way."""
        acc, config = self.accelerator, self.config
        acc.init_trackers("showme", config={"mode": config.mode, "seed": config.seed})
        batches = iter(self._loader())
        progress = tqdm(
            total=config.max_steps,
            initial=self.state.step,
            desc=f"showme-train {config.mode}",
            disable=not acc.is_main_process,
        )
        self.objective.train()
        while self.state.step < config.max_steps:
            logs = self.step([next(batches) for _ in range(config.gradient_accumulation_steps)])
            progress.update(1)
            progress.set_postfix(loss=f"{logs['loss']:.4f}")
            if self.state.step % config.log_every == 0:
                acc.log(logs, step=self.state.step)
            if self.state.step % config.save_every == 0 or self.state.step == config.max_steps:
                self.save_checkpoint()
            if config.sample_every and self.state.step % config.sample_every == 0:
                self.write_sample(self.dataset[0])
        progress.close()
        self.export()
        acc.end_training()
        return self.state

    def write_sample(self, item: dict[str, Any]) -> Path:
        """Write ``samples/step-N.png``: input | prediction | truth, for one training item.

        Stage 1 predicts the goal image; the other modes a rollout as long as the item's clip.
        The main process samples (with its own generator) while the others wait.
        """
        path = self.output_dir / "samples" / f"{checkpointing.checkpoint_name(self.state.step)}.png"
        if self.accelerator.is_main_process:
            image_mode = self.config.mode == "stage1"
            truth = item["target"] if image_mode else item["video"]
            truth = _to_uint8(truth.reshape(3, -1, *truth.shape[-2:]))  # (T, H, W, 3)
            first = item["source"] if image_mode else item["video"][:, 0]
            source = _to_uint8(first.reshape(3, 1, *truth.shape[1:3]))[0]
            with torch.random.fork_rng(devices=[]):
                prediction = (
                    ShowMePipeline(self.model)
                    .predict(
                        source,
                        item["instruction"],
                        mode="image" if image_mode else "video",
                        num_frames=truth.shape[0],
                        num_steps=self.config.sample_steps,
                        seed=self.config.seed,
                        restore_size=True,
                    )
                    .frames[0]
                )
            self.objective.train()  # the pipeline put the model in eval mode
            strip = make_strip(
                source[None],
                goal=prediction[:1] if image_mode else None,
                rollout=truth if image_mode else np.concatenate([prediction, truth]),
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png(path, strip)
        self.accelerator.wait_for_everyone()
        return path

    def save_checkpoint(self) -> Path:
        """Write a checkpoint of the current step atomically (all processes take part)."""
        acc, root, step = self.accelerator, self.checkpoint_root, self.state.step
        if acc.is_main_process:
            checkpointing.start_checkpoint(root, step)
        acc.wait_for_everyone()
        folder = checkpointing.temporary_folder(root, step)
        checkpointing.write_rng(folder, acc.process_index)
        if acc.is_main_process:
            checkpointing.write_main(
                folder,
                checkpointing.trainable_state(self.model),
                self.optimizer,
                self.lr_scheduler,
                self.state,
                self.config.to_dict(),
            )
        acc.wait_for_everyone()
        final = root / checkpointing.checkpoint_name(step)
        if acc.is_main_process:
            checkpointing.publish(folder, self.config.keep_last)
        acc.wait_for_everyone()
        return final

    def export(self) -> Path:
        """Write what the run trained: the adapter folder, or the whole model for ``base``."""
        target = self.output_dir / "final"
        if self.accelerator.is_main_process:
            if self.config.mode == "base":
                self.model.save_pretrained(target / "model")
            else:
                role = TRAINED_ROLE[self.config.mode]
                adapters.save_adapter(self.model, role, target / "adapters" / role)
        self.accelerator.wait_for_everyone()
        return target


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(3, T, H, W)`` in ``[-1, 1]`` to ``(T, H, W, 3)`` uint8."""
    pixels = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).numpy()

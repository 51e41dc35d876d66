"""``showme-convert``: DynamiCrafter checkpoints into model folders, ShowMe LoRA into adapters.

``showme-convert model CKPT OUT --clip-tokenizer DIR [--lora FILE ...]`` converts a DynamiCrafter
Lightning checkpoint (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.model.*``, ``embedder.model.visual.*``, ``image_proj_model.*``) into a model
folder; with ``--lora`` (the ShowMe release) the stage files become adapters of the folder and
the UNet records ``image_mode_temporal_convs=True``, the way that release was trained.

``showme-convert lora FILE OUT`` converts one ShowMe release LoRA file (stage 1 ->
``manipulation``, stage 2 -> ``prediction``) into an adapter folder.

Files are read as data only (:mod:`showme_model.checkpoint_io`). Missing and unexpected keys are
reported; a model folder is written only when nothing is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
)

from showme_model import adapters, presets
from showme_model.checkpoint_io import CheckpointError, load_checkpoint
from showme_model.encoders import (
    OpenCLIPImageEncoder,
    OpenCLIPTextEncoder,
    convert_openclip_text_state_dict,
    convert_openclip_vision_state_dict,
)
from showme_model.model import ShowMeModel
from showme_model.resampler import (
    ImageProjector,
    convert_resampler_state_dict,
    convert_showme_lora_state_dict,
)
from showme_model.unet import ShowMeUNet
from showme_model.unet_conversion import convert_dynamicrafter_unet, convert_showme_lora_unet

PREFIXES = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text": "cond_stage_model.model.",
    "vision": "embedder.model.visual.",
    "projector": "image_proj_model.",
}
STAGE_ROLES = {1: "manipulation", 2: "prediction"}


class ConversionError(ValueError):
    """A checkpoint that does not convert into a complete component."""


def _part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], name: str) -> list[str]:
    """Load ``state``; raise on missing keys, return the unexpected ones."""
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ConversionError(f"{name}: {error}") from error
    if result.missing_keys:
        raise ConversionError(
            f"{name}: missing {len(result.missing_keys)} keys, e.g. {result.missing_keys[:5]}"
        )
    return list(result.unexpected_keys)


def _vae(state: dict[str, torch.Tensor], scale_factor: float) -> tuple[AutoencoderKL, list[str]]:
    """Build the VAE its LDM weights describe (widths, depth, latent channels); load them."""
    ldm = _part(state, PREFIXES["vae"])
    if "encoder.conv_in.weight" not in ldm:
        raise ConversionError(f"VAE: no {PREFIXES['vae']}encoder.* weights in the checkpoint")
    levels = 1 + max(int(k.split(".")[2]) for k in ldm if k.startswith("encoder.down."))
    blocks = {k.split(".")[4] for k in ldm if k.startswith("encoder.down.0.block.")}
    vae = AutoencoderKL(
        in_channels=ldm["encoder.conv_in.weight"].shape[1],
        out_channels=ldm["decoder.conv_out.weight"].shape[0],
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(
            ldm[f"encoder.down.{level}.block.0.conv2.weight"].shape[0] for level in range(levels)
        ),
        layers_per_block=len(blocks),
        latent_channels=ldm["post_quant_conv.weight"].shape[0],
        norm_num_groups=32,  # LDM's autoencoder always uses GroupNorm(32)
        scaling_factor=scale_factor,
    )
    vae_only = {k: v for k, v in state.items() if k.startswith(PREFIXES["vae"])}
    return vae, _load_strict(vae, convert_ldm_vae_checkpoint(vae_only, dict(vae.config)), "VAE")


def _text_encoder(
    state: dict[str, torch.Tensor], tokenizer: Path, heads: int
) -> OpenCLIPTextEncoder:
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("transformer.resblocks."))
    vocab, width = state["token_embedding.weight"].shape
    clip_tokenizer = CLIPTokenizer.from_pretrained(tokenizer, local_files_only=True)
    config = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=layers - 1,  # the penultimate block's output is the context
        num_attention_heads=heads,
        max_position_embeddings=state["positional_embedding"].shape[0],
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        bos_token_id=clip_tokenizer.bos_token_id,
        eos_token_id=clip_tokenizer.eos_token_id,
    )
    model = CLIPTextModel(config)
    converted = convert_openclip_text_state_dict(state, num_layers=layers - 1)
    _load_strict(model, converted, "text encoder")
    return OpenCLIPTextEncoder(model, clip_tokenizer)


def _image_encoder(state: dict[str, torch.Tensor], heads: int) -> OpenCLIPImageEncoder:
    width = state["class_embedding"].shape[0]
    patch = state["conv1.weight"].shape[-1]
    grid = round((state["positional_embedding"].shape[0] - 1) ** 0.5)
    config = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=1
        + max(int(k.split(".")[2]) for k in state if k.startswith("transformer.")),
        num_attention_heads=heads,
        image_size=grid * patch,
        patch_size=patch,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    model = CLIPVisionModel(config)
    _load_strict(model, convert_openclip_vision_state_dict(state), "image encoder")
    return OpenCLIPImageEncoder(model)


def _projector(state: dict[str, torch.Tensor], heads: int, tokens_per_frame: int) -> ImageProjector:
    converted = convert_resampler_state_dict(state)
    dim, input_dim = converted["proj_in.weight"].shape
    queries = converted["latents"].shape[1]
    frames = queries // tokens_per_frame if queries % tokens_per_frame == 0 else None
    projector = ImageProjector(
        input_dim=input_dim,
        dim=dim,
        output_dim=converted["proj_out.weight"].shape[0],
        depth=1 + max(int(k.split(".")[1]) for k in converted if k.startswith("layers.")),
        heads=heads,
        dim_head=converted["layers.0.attn.to_q.weight"].shape[0] // heads,
        num_queries=tokens_per_frame if frames else queries,
        video_length=frames,
        ff_mult=converted["layers.0.ff.1.net.0.proj.weight"].shape[0] // dim,
    )
    _load_strict(projector, converted, "image projector")
    return projector


def convert_lora(state: dict[str, torch.Tensor], unet_config: dict) -> tuple[str, dict, list[str]]:
    """Convert a ShowMe release LoRA state dict to an adapter's weights.

    Returns:
        The role, the weights keyed ``<component>.<module>.lora_*.weight``, and report lines.

    """
    stages = {stage for stage in STAGE_ROLES if any(f"stage{stage}_lora_" in k for k in state)}
    if len(stages) != 1:
        raise ConversionError(
            f"expected the LoRA of exactly one stage, found stages {sorted(stages)}"
        )
    stage = stages.pop()
    unet = convert_showme_lora_unet(state, stage, unet_config)
    weights = {f"unet.{k}": v for k, v in unet.state_dict.items()}
    projector = _part(state, PREFIXES["projector"])
    weights.update(
        {f"image_projector.{k}": v for k, v in convert_showme_lora_state_dict(projector).items()}
    )
    report = [f"stage {stage} -> {STAGE_ROLES[stage]}: {len(weights)} tensors"]
    report += [f"missing: {key}" for key in unet.missing]
    report += [f"unexpected: {key}" for key in unet.unexpected]
    report += [f"ignored: {key}" for key in unet.ignored]
    return STAGE_ROLES[stage], weights, report


def convert_model(args: argparse.Namespace) -> list[str]:
    """Convert a DynamiCrafter checkpoint into a model folder; return report lines."""
    state = load_checkpoint(args.checkpoint)
    unet_config = _unet_config(args)
    unet_config["image_mode_temporal_convs"] = bool(args.lora)
    unet_result = convert_dynamicrafter_unet(state, unet_config)
    if unet_result.missing:
        raise ConversionError(
            f"UNet: missing {len(unet_result.missing)} keys, e.g. {unet_result.missing[:5]}"
        )
    unet = ShowMeUNet(**unet_config)
    report = [f"unexpected (unet): {key}" for key in unet_result.unexpected]
    report += [
        f"unexpected (unet): {key}" for key in _load_strict(unet, unet_result.state_dict, "UNet")
    ]

    vae, unexpected = _vae(state, args.scale_factor)
    report += [f"unexpected (vae): {key}" for key in unexpected]

    model = ShowMeModel(
        unet,
        vae,
        _text_encoder(_part(state, PREFIXES["text"]), args.clip_tokenizer, args.text_heads),
        _image_encoder(_part(state, PREFIXES["vision"]), args.vision_heads),
        _projector(
            _part(state, PREFIXES["projector"]),
            args.projector_heads,
            unet_config["image_tokens_per_frame"],
        ),
        presets.scheduler_config(args.preset),
    )
    known = tuple(PREFIXES.values())
    others = sorted(k for k in state if not k.startswith(known))
    if others:
        report.append(
            f"ignored {len(others)} keys outside the components (schedule buffers, EMA): "
            f"{others[:5]}"
        )
    model.save_pretrained(args.output)
    for path in args.lora:
        role, weights, lines = convert_lora(load_checkpoint(path), unet_config)
        adapters.write_adapter(Path(args.output) / "adapters" / role, role, weights)
        report += lines
    return report


def _unet_config(args: argparse.Namespace) -> dict:
    if args.unet_config is None:
        return presets.unet_config(args.preset)
    return json.loads(args.unet_config.read_text())


def _lora_command(args: argparse.Namespace) -> list[str]:
    role, weights, report = convert_lora(load_checkpoint(args.file), _unet_config(args))
    adapters.write_adapter(args.output, role, weights)
    return report


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="dynamicrafter-256", choices=presets.PRESETS)
    parser.add_argument("--unet-config", type=Path, help="UNet config JSON (instead of --preset)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="showme-convert", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    model = commands.add_parser("model", help="DynamiCrafter checkpoint -> model folder")
    model.add_argument("checkpoint", type=Path)
    model.add_argument("output", type=Path)
    model.add_argument(
        "--clip-tokenizer",
        type=Path,
        required=True,
        help="folder with the CLIP BPE vocab.json + merges.txt",
    )
    _add_config_arguments(model)
    model.add_argument(
        "--lora",
        type=Path,
        action="append",
        default=[],
        help="ShowMe release LoRA file (repeatable)",
    )
    model.add_argument("--scale-factor", type=float, default=0.18215, help="VAE latent scale")
    model.add_argument("--text-heads", type=int, default=16)
    model.add_argument("--vision-heads", type=int, default=16)
    model.add_argument("--projector-heads", type=int, default=12)
    model.set_defaults(run=convert_model)
    lora = commands.add_parser("lora", help="ShowMe release LoRA file -> adapter folder")
    lora.add_argument("file", type=Path)
    lora.add_argument("output", type=Path)
    _add_config_arguments(lora)
    lora.set_defaults(run=_lora_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``showme-convert``; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        report = args.run(args)
    except (CheckpointError, ConversionError, KeyError, ValueError, OSError) as error:
        print(f"showme-convert: error: {error}", file=sys.stderr)
        return 1
    print("\n".join(report) if report else "converted; no missing or unexpected keys")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

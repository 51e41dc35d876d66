"""``showme-convert``: DynamiCrafter checkpoints into model folders, ShowMe LoRA into adapters.

``showme-convert model CKPT OUT [--lora FILE ...]`` converts a DynamiCrafter Lightning checkpoint
(``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.model.*``,
``embedder.model.visual.*``, ``image_proj_model.*``) into a model folder; with ``--lora`` (the
ShowMe release) the stage files become adapters of the folder and the UNet records
``image_mode_temporal_convs=True``, the way that release was trained. The text tokenizer is
OpenCLIP's, read from the ``open-clip-torch`` package, unless ``--clip-tokenizer DIR`` is given.

``showme-convert lora FILE OUT`` converts one ShowMe release LoRA file (stage 1 ->
``manipulation``, stage 2 -> ``prediction``) into an adapter folder that records the release's
UNet settings; its shapes are checked against ``--model DIR``, ``--preset`` or ``--unet-config``.

Files are read as data only (:mod:`showme_model.checkpoint_io`). A UNet or LoRA key that finds no
place, or a weight that the checkpoint lacks, fails the conversion with every such key listed
under the checkpoint's name and ours (``--allow-unmatched-keys`` drops the unexpected ones and
keeps the initial values of the missing ones). The output is written to a temporary folder beside
it and renamed into place only when everything succeeded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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
    openclip_tokenizer,
)
from showme_model.model import ShowMeModel
from showme_model.resampler import (
    ImageProjector,
    convert_resampler_state_dict,
    convert_showme_lora_state_dict,
)
from showme_model.unet import ShowMeUNet
from showme_model.unet_conversion import (
    check_lora_ranks,
    check_lora_shape,
    convert_dynamicrafter_unet,
    convert_showme_lora_unet,
)

PREFIXES = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text": "cond_stage_model.model.",
    "vision": "embedder.model.visual.",
    "projector": "image_proj_model.",
}
STAGE_ROLES = {1: "manipulation", 2: "prediction"}
# The ShowMe release trained its LoRA with the temporal convolutions active in image mode.
RELEASE_UNET_SETTINGS = {"image_mode_temporal_convs": True}


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


def _tokenizer(folder: Path | None) -> CLIPTokenizer:
    """Load the CLIP tokenizer in ``folder``; OpenCLIP's packaged one when ``None``."""
    if folder is None:
        return openclip_tokenizer()
    return CLIPTokenizer.from_pretrained(folder, local_files_only=True)


def _text_encoder(
    state: dict[str, torch.Tensor], tokenizer: CLIPTokenizer, heads: int
) -> OpenCLIPTextEncoder:
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("transformer.resblocks."))
    vocab, width = state["token_embedding.weight"].shape
    if len(tokenizer) != vocab:
        raise ConversionError(
            f"text encoder: {PREFIXES['text']}token_embedding.weight has {vocab} tokens but the "
            f"tokenizer has {len(tokenizer)}; give --clip-tokenizer the checkpoint's vocabulary"
        )
    config = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        num_hidden_layers=layers - 1,  # the penultimate block's output is the context
        num_attention_heads=heads,
        max_position_embeddings=state["positional_embedding"].shape[0],
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = CLIPTextModel(config)
    converted = convert_openclip_text_state_dict(state, num_layers=layers - 1)
    _load_strict(model, converted, "text encoder")
    return OpenCLIPTextEncoder(model, tokenizer)


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


@dataclass
class LoraConversion:
    """One release LoRA file as an adapter.

    Attributes:
        role: ``manipulation`` (stage 1) or ``prediction`` (stage 2).
        weights: keyed ``<component>.<module>.lora_<A|B>.weight``.
        report: what was converted and what was deliberately dropped.
        unmatched: keys that found no place and weights that the file lacks.

    """

    role: str
    weights: dict[str, torch.Tensor]
    report: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)


def _release_projector_key(key: str, stage: int) -> str:
    """Name one of our Resampler LoRA weights as the release file does.

    ``layers.0.attn.to_q.lora_A.weight`` -> ``image_proj_model.layers.0.0.stage1_lora_cross_attn_q
    .lora_A``.
    """
    pattern = r"layers\.(\d+)\.attn\.to_(\w)\.lora_(\w)\.weight"
    layer, projection, matrix = re.fullmatch(pattern, key).groups()
    name = f"layers.{layer}.0.stage{stage}_lora_cross_attn_{projection}.lora_{matrix}"
    return f"{PREFIXES['projector']}{name}"


def _projector_lora(
    state: dict[str, torch.Tensor], projector: ImageProjector | None, stage: int
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Convert the Resampler LoRA; check it against ``projector`` when one is given."""
    weights: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    unmatched: list[str] = []
    for key, value in state.items():
        source = f"{PREFIXES['projector']}{key}"
        try:
            ((new_key, weight),) = convert_showme_lora_state_dict({key: value}).items()
        except KeyError:
            unmatched.append(f"unexpected {source} -> (no counterpart)")
            continue
        weights[new_key], names[new_key] = weight, source
    check_lora_ranks(weights, names)
    on_projector = adapters.ROLES[STAGE_ROLES[stage]].on_projector
    if on_projector and projector is None:
        return weights, unmatched  # no model to check them against
    modules = adapters.projector_target_modules(projector) if on_projector else []
    expected = {f"{module}.lora_{matrix}.weight" for module in modules for matrix in "AB"}
    for key in sorted(set(weights) - expected):
        unmatched.append(f"unexpected {names[key]} -> image_projector.{key} (not in this config)")
        del weights[key]
    for key, weight in weights.items():
        check_lora_shape(names[key], key, weight, projector.get_submodule(key.split(".lora_")[0]))
    unmatched += [
        f"missing {_release_projector_key(key, stage)} -> image_projector.{key}"
        for key in sorted(expected - set(weights))
    ]
    return weights, unmatched


def convert_lora(
    state: dict[str, torch.Tensor], unet_config: dict, projector: ImageProjector | None = None
) -> LoraConversion:
    """Convert a ShowMe release LoRA state dict to an adapter's weights.

    Args:
        state: the release file's tensors.
        unet_config: the ShowMeUNet config the shapes are checked against.
        projector: the image projector the Resampler LoRA is checked against (shapes and
            targets); when ``None`` only the A/B ranks of that part are checked.

    Raises:
        ConversionError: the file holds no stage or several.
        ValueError: a matrix does not fit its module.

    """
    stages = {stage for stage in STAGE_ROLES if any(f"stage{stage}_lora_" in k for k in state)}
    if len(stages) != 1:
        raise ConversionError(
            f"expected the LoRA of exactly one stage, found stages {sorted(stages)}"
        )
    stage = stages.pop()
    role = STAGE_ROLES[stage]
    unet = convert_showme_lora_unet(state, stage, unet_config)
    projector_weights, projector_unmatched = _projector_lora(
        _part(state, PREFIXES["projector"]), projector, stage
    )
    weights = {f"unet.{k}": v for k, v in unet.state_dict.items()}
    weights.update({f"image_projector.{k}": v for k, v in projector_weights.items()})
    report = [f"stage {stage} -> {role}: {len(weights)} tensors"]
    report += [f"ignored: {key}" for key in unet.ignored]
    if projector is None and projector_weights:
        report.append("image projector LoRA: shapes not checked (no model folder given)")
    unmatched = [f"{role} LoRA: {line}" for line in unet.unmatched() + projector_unmatched]
    return LoraConversion(role, weights, report, unmatched)


def _accept(unmatched: list[str], allowed: bool) -> list[str]:
    """Raise unless ``unmatched`` is empty or allowed; return its report lines."""
    if unmatched and not allowed:
        raise ConversionError(
            f"{len(unmatched)} keys do not match the model config (checkpoint name -> ours); "
            "nothing was written. Check --preset/--unet-config/--model, or pass "
            "--allow-unmatched-keys to drop unexpected keys and keep the initial values of "
            "missing ones:\n  " + "\n  ".join(unmatched)
        )
    return [f"allowed: {line}" for line in unmatched]


def _check_output(output: Path, overwrite: bool) -> None:
    if not output.exists():
        return
    if not output.is_dir():
        raise ConversionError(f"{output} exists and is not a folder")
    if not overwrite and any(output.iterdir()):
        raise ConversionError(f"{output} exists; remove it or pass --overwrite")


@contextlib.contextmanager
def staged_folder(output: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside ``output`` that becomes ``output`` when the block succeeds.

    When the block raises, the folder is removed and ``output`` is left as it was.

    Raises:
        ConversionError: ``output`` exists (and is not an empty folder) without ``overwrite``.

    """
    output = Path(output)
    _check_output(output, overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.{uuid.uuid4().hex[:12]}.partial"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if output.is_dir() and not any(output.iterdir()):
        output.rmdir()
    if output.exists():  # --overwrite: swap, then remove the old one
        old = staging.with_suffix(".replaced")
        output.rename(old)
        staging.rename(output)
        shutil.rmtree(old)
    else:
        staging.rename(output)


def convert_model(args: argparse.Namespace) -> list[str]:
    """Convert a DynamiCrafter checkpoint into a model folder; return report lines."""
    _check_output(args.output, args.overwrite)
    tokenizer = _tokenizer(args.clip_tokenizer)
    state = load_checkpoint(args.checkpoint)
    unet_config = _unet_config(args)
    unet_config["image_mode_temporal_convs"] = bool(args.lora)
    unet_result = convert_dynamicrafter_unet(state, unet_config)
    unmatched = [f"UNet: {line}" for line in unet_result.unmatched()]
    unet = ShowMeUNet(**unet_config)
    unet.load_state_dict(unet_result.state_dict, strict=False)  # every key has its place

    vae, vae_unexpected = _vae(state, args.scale_factor)
    unmatched += [f"VAE: unexpected {key}" for key in vae_unexpected]
    projector = _projector(
        _part(state, PREFIXES["projector"]),
        args.projector_heads,
        unet_config["image_tokens_per_frame"],
    )
    loras = [convert_lora(load_checkpoint(path), unet_config, projector) for path in args.lora]
    roles = [lora.role for lora in loras]
    if len(set(roles)) != len(roles):
        raise ConversionError(f"--lora files of the same stage: roles {roles}")
    unmatched += [line for lora in loras for line in lora.unmatched]
    report = _accept(unmatched, args.allow_unmatched_keys)

    model = ShowMeModel(
        unet,
        vae,
        _text_encoder(_part(state, PREFIXES["text"]), tokenizer, args.text_heads),
        _image_encoder(_part(state, PREFIXES["vision"]), args.vision_heads),
        projector,
        presets.scheduler_config(args.preset),
    )
    known = tuple(PREFIXES.values())
    others = sorted(k for k in state if not k.startswith(known))
    if others:
        report.append(
            f"ignored {len(others)} keys outside the components (schedule buffers, EMA): "
            f"{others[:5]}"
        )
    report += [line for lora in loras for line in lora.report]
    with staged_folder(args.output, args.overwrite) as folder:
        model.save_pretrained(folder)
        for lora in loras:
            adapters.write_adapter(
                folder / "adapters" / lora.role, lora.role, lora.weights, RELEASE_UNET_SETTINGS
            )
    return report


def _unet_config(args: argparse.Namespace) -> dict:
    if args.unet_config is None:
        return presets.unet_config(args.preset)
    config = json.loads(args.unet_config.read_text())
    return {key: value for key, value in config.items() if not key.startswith("_")}


def _model_folder_configs(folder: Path) -> tuple[dict, ImageProjector]:
    """Read a model folder's UNet config and build its image projector on the meta device."""
    paths = [folder / "unet" / ShowMeUNet.config_name, folder / "image_projector"]
    if not paths[0].is_file() or not (paths[1] / ImageProjector.config_name).is_file():
        raise ConversionError(
            f"{folder} is not a model folder (no unet/ or image_projector/ config)"
        )
    unet_config = json.loads(paths[0].read_text())
    with torch.device("meta"):
        projector = ImageProjector.from_config(ImageProjector.load_config(paths[1]))
    return {k: v for k, v in unet_config.items() if not k.startswith("_")}, projector


def _lora_command(args: argparse.Namespace) -> list[str]:
    _check_output(args.output, args.overwrite)
    if args.model is not None:
        unet_config, projector = _model_folder_configs(args.model)
    else:
        unet_config, projector = _unet_config(args), None
    lora = convert_lora(load_checkpoint(args.file), unet_config, projector)
    report = _accept(lora.unmatched, args.allow_unmatched_keys) + lora.report
    differing = {k: v for k, v in RELEASE_UNET_SETTINGS.items() if unet_config.get(k) != v}
    if differing:
        report.append(
            f"the adapter records the release's UNet settings {differing}; loading it sets them"
        )
    with staged_folder(args.output, args.overwrite) as folder:
        adapters.write_adapter(folder, lora.role, lora.weights, RELEASE_UNET_SETTINGS)
    return report


def _add_common_arguments(parser: argparse.ArgumentParser, with_model: bool) -> None:
    config = parser.add_mutually_exclusive_group()
    if with_model:
        config.add_argument(
            "--model", type=Path, help="model folder whose UNet and projector the LoRA must fit"
        )
    config.add_argument("--preset", default="dynamicrafter-256", choices=presets.PRESETS)
    config.add_argument("--unet-config", type=Path, help="UNet config JSON (instead of --preset)")
    parser.add_argument(
        "--allow-unmatched-keys",
        action="store_true",
        help="convert despite unexpected keys (dropped) or missing ones (left at initial values)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="showme-convert", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    model = commands.add_parser("model", help="DynamiCrafter checkpoint -> model folder")
    model.add_argument("checkpoint", type=Path)
    model.add_argument("output", type=Path)
    model.add_argument(
        "--clip-tokenizer",
        type=Path,
        help="folder with a CLIP BPE vocab.json + merges.txt (default: OpenCLIP's vocabulary "
        "from the open-clip-torch package)",
    )
    _add_common_arguments(model, with_model=False)
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
    _add_common_arguments(lora, with_model=True)
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

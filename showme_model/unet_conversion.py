"""Map DynamiCrafter UNet weights and ShowMe LoRA weights onto :class:`ShowMeUNet`.

DynamiCrafter stores its UNet as ``model.diffusion_model.*`` in the original LDM layout
(``input_blocks.N.M``, ``middle_block``, ``output_blocks``); ShowMeUNet uses diffusers' layout
(``down_blocks.i.resnets.j`` ...). The mapping between the two is derived from the UNet config,
module by module, so every source key either lands on exactly one target key or is reported.

ShowMe's released LoRA files hold ``<module>.stage{1,2}_lora_<kind>.lora_A`` of shape
``(in, r)`` and ``lora_B`` of shape ``(r, out)`` with scaling 1; they become peft's
``<module>.lora_A[.<adapter>].weight`` ``(r, in)`` and ``lora_B`` ``(out, r)``. Load them with
``lora_alpha == r``.

Every key that does not convert is reported under both spellings: the checkpoint's and ours
(:meth:`ConvertedStateDict.unmatched`). Tensor shapes are checked against the config; a
mismatch raises :class:`ValueError` naming both keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from showme_model.presets import unet_config
from showme_model.unet import ShowMeUNet, lora_target_modules

UNET_PREFIX = "model.diffusion_model."
STAGE_ROLES = {1: "manipulation", 2: "prediction"}

_RESNET_PARTS = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
_LORA_KINDS = {
    "self_attn_q": "to_q",
    "self_attn_k": "to_k",
    "self_attn_v": "to_v",
    "cross_attn_q": "to_q",
    "cross_attn_k": "to_k",
    "cross_attn_v": "to_v",
    "cross_attn_ip_k": "to_k_ip",
    "cross_attn_ip_v": "to_v_ip",
    "ff_in": "net.0.proj",
    "ff_out": "net.2",
}


@dataclass
class ConvertedStateDict:
    """A converted state dict and what did not convert.

    Attributes:
        state_dict: tensors under ShowMeUNet (or peft LoRA) names.
        missing: target keys that the source did not provide.
        unexpected: source keys (spelled as in the source) without a place in the target.
        ignored: source keys deliberately dropped, each with the reason after ``": "``.
        counterparts: for a missing key, the name the checkpoint would give it; for an unexpected
            key, the name it maps to in our layout (absent when it maps to nothing).

    """

    state_dict: dict[str, torch.Tensor]
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    counterparts: dict[str, str] = field(default_factory=dict)

    def unmatched(self) -> list[str]:
        """One line per missing or unexpected key: ``checkpoint name -> our name``."""
        lines = [
            f"missing {self.counterparts.get(key, '(no checkpoint name)')} -> {key}"
            for key in self.missing
        ]
        lines += [
            f"unexpected {key} -> "
            + (
                f"{self.counterparts[key]} (not in this config)"
                if key in self.counterparts
                else "(no counterpart)"
            )
            for key in self.unexpected
        ]
        return lines


def dynamicrafter_module_map(config: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Map DynamiCrafter module paths to ``(ShowMeUNet module path, kind)`` for a UNet config.

    ``kind`` is ``resnet`` (sub-layers renamed), ``conv1d_transformer`` (the temporal transformer
    after ``conv_in``, whose 1x1 Conv1d projections become Linear) or ``same`` (names kept).
    """
    levels = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    attention = config["attention_levels"]
    table: dict[str, tuple[str, str]] = {
        "time_embed.0": ("time_embedding.linear_1", "same"),
        "time_embed.2": ("time_embedding.linear_2", "same"),
        "framestride_embed.0": ("fs_embedding.linear_1", "same"),
        "framestride_embed.2": ("fs_embedding.linear_2", "same"),
        "fps_embedding.0": ("fs_embedding.linear_1", "same"),
        "fps_embedding.2": ("fs_embedding.linear_2", "same"),
        "input_blocks.0.0": ("conv_in", "same"),
        "init_attn.0": ("transformer_in", "conv1d_transformer"),
        "out.0": ("conv_norm_out", "same"),
        "out.2": ("conv_out", "same"),
    }

    def layer(source: str, target: str, j: int, with_attention: bool) -> None:
        table[f"{source}.0"] = (f"{target}.resnets.{j}", "resnet")
        table[f"{source}.0.temopral_conv"] = (f"{target}.temp_convs.{j}", "same")
        if with_attention:
            table[f"{source}.1"] = (f"{target}.attentions.{j}", "same")
            table[f"{source}.2"] = (f"{target}.temp_attentions.{j}", "same")

    n = 1
    for level in range(levels):
        for j in range(layers):
            layer(f"input_blocks.{n}", f"down_blocks.{level}", j, attention[level])
            n += 1
        if level != levels - 1:
            table[f"input_blocks.{n}.0.op"] = (f"down_blocks.{level}.downsamplers.0.conv", "same")
            n += 1

    for index, source in enumerate(("middle_block.0", "middle_block.3")):
        table[source] = (f"mid_block.resnets.{index}", "resnet")
        table[f"{source}.temopral_conv"] = (f"mid_block.temp_convs.{index}", "same")
    table["middle_block.1"] = ("mid_block.attentions.0", "same")
    table["middle_block.2"] = ("mid_block.temp_attentions.0", "same")

    n = 0
    for up, level in enumerate(reversed(range(levels))):
        for j in range(layers + 1):
            layer(f"output_blocks.{n}", f"up_blocks.{up}", j, attention[level])
            if level and j == layers:
                position = 3 if attention[level] else 1
                table[f"output_blocks.{n}.{position}.conv"] = (
                    f"up_blocks.{up}.upsamplers.0.conv",
                    "same",
                )
            n += 1
    return table


def _resolve(table: Mapping[str, tuple[str, str]], path: str) -> tuple[str, str, str] | None:
    """Return ``(target module, kind, rest)`` for the longest mapped prefix of ``path``."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in table:
            target, kind = table[prefix]
            return target, kind, ".".join(parts[end:])
    return None


def _source_module(table: Mapping[str, tuple[str, str]], module: str) -> str | None:
    """Return the checkpoint's path of one of our module paths (inverse of :func:`_resolve`)."""
    inverse: dict[str, tuple[str, str]] = {}
    for source, (target, kind) in table.items():
        inverse.setdefault(target, (source, kind))
    resolved = _resolve(inverse, module)
    if resolved is None:
        return None
    source, kind, rest = resolved
    if kind == "resnet":
        by_target = {ours: theirs for theirs, ours in _RESNET_PARTS.items()}
        if rest not in by_target:
            return None
        rest = by_target[rest]
    return ".".join(p for p in (source, rest) if p)


def _source_key(table: Mapping[str, tuple[str, str]], key: str, prefix: str) -> str | None:
    module, _, parameter = key.rpartition(".")
    source = _source_module(table, module)
    return None if source is None else f"{prefix}{source}.{parameter}"


def _unet_keys(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, str], str]:
    """Map the UNet's keys (prefix stripped) to their spelling in ``state_dict``.

    A full checkpoint's ``model.diffusion_model.*`` keys are kept; a bare UNet dict as is.
    Returns the map and the prefix the checkpoint uses.
    """
    if any(key.startswith(UNET_PREFIX) for key in state_dict):
        keys = {
            key.removeprefix(UNET_PREFIX): key for key in state_dict if key.startswith(UNET_PREFIX)
        }
        return keys, UNET_PREFIX
    return {key: key for key in state_dict}, ""


def _expected_state(config: Mapping[str, Any]) -> dict[str, torch.Size]:
    with torch.device("meta"):
        model = ShowMeUNet(**config)
    return {key: value.shape for key, value in model.state_dict().items()}


def convert_dynamicrafter_unet(
    state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any] | None = None
) -> ConvertedStateDict:
    """Convert a DynamiCrafter UNet state dict to ShowMeUNet names.

    Args:
        state_dict: a Lightning checkpoint's ``state_dict`` (only ``model.diffusion_model.*``
            keys are used) or the UNet's own state dict without that prefix.
        config: the ShowMeUNet config the weights are for; ``dynamicrafter-256`` when ``None``.

    Returns:
        The converted weights with missing and unexpected keys (unexpected ones spelled as in
        ``state_dict``).

    Raises:
        ValueError: a tensor's shape does not match the config.

    """
    config = dict(unet_config("dynamicrafter-256") if config is None else config)
    table = dynamicrafter_module_map(config)
    expected = _expected_state(config)
    converted: dict[str, torch.Tensor] = {}
    result = ConvertedStateDict(converted)
    keys, prefix = _unet_keys(state_dict)
    for bare, key in keys.items():
        value = state_dict[key]
        module, _, parameter = bare.rpartition(".")
        resolved = _resolve(table, module)
        if resolved is None:
            result.unexpected.append(key)
            continue
        target, kind, rest = resolved
        if kind == "resnet" and rest not in _RESNET_PARTS:
            result.unexpected.append(key)
            continue
        if kind == "resnet":
            rest = _RESNET_PARTS[rest]
        if kind == "conv1d_transformer" and rest in ("proj_in", "proj_out") and value.ndim == 3:
            value = value.squeeze(-1)
        new_key = ".".join(p for p in (target, rest, parameter) if p)
        if new_key not in expected or new_key in converted:
            result.unexpected.append(key)
            result.counterparts[key] = new_key
            continue
        if value.shape != expected[new_key]:
            raise ValueError(
                f"{key}: shape {tuple(value.shape)} does not fit {new_key} "
                f"{tuple(expected[new_key])}; is the UNet config right?"
            )
        converted[new_key] = value
    result.missing = sorted(set(expected) - set(converted))
    for key in result.missing:
        source = _source_key(table, key, prefix)
        if source is not None:
            result.counterparts[key] = source
    return result


def _release_lora_kind(module: str) -> tuple[str, str] | None:
    """Split one of our LoRA target modules into its owner (``...attn2``) and release kind."""
    temporal = module.startswith("transformer_in.") or ".temp_attentions." in module
    for kind, leaf in _LORA_KINDS.items():
        owner = module.removesuffix(f".{leaf}")
        block = owner.rpartition(".")[2]
        if owner == module:
            continue
        if kind.startswith("ff_"):
            fits = block == "ff"
        elif kind.startswith("self_attn_"):
            fits = block == "attn1" or (temporal and block == "attn2")
        else:
            fits = block == "attn2" and not temporal
        if fits:
            return owner, kind
    return None


def check_lora_shape(key: str, new_key: str, value: torch.Tensor, layer: torch.nn.Module) -> None:
    """Raise :class:`ValueError` unless ``value`` fits ``layer`` as peft's ``new_key``.

    ``new_key`` names a ``lora_A`` ``(r, in)`` or ``lora_B`` ``(out, r)`` matrix; ``key`` is its
    name in the source file.
    """
    position, size = (1, layer.in_features) if ".lora_A" in new_key else (0, layer.out_features)
    if value.ndim != 2 or value.shape[position] != size:
        raise ValueError(
            f"{key}: shape {tuple(value.shape)} does not fit {new_key}, a LoRA matrix of "
            f"{type(layer).__name__}({layer.in_features}, {layer.out_features}); "
            "is the model config right?"
        )


def check_lora_ranks(weights: Mapping[str, torch.Tensor], names: Mapping[str, str]) -> None:
    """Raise :class:`ValueError` when a module's ``lora_A`` and ``lora_B`` ranks differ.

    ``names`` gives each key's spelling in the source file, for the message.
    """
    for key, value in weights.items():
        if ".lora_A" not in key:
            continue
        partner = key.replace(".lora_A", ".lora_B")
        if partner in weights and weights[partner].shape[1] != value.shape[0]:
            raise ValueError(
                f"{names.get(key, key)} has rank {value.shape[0]} but "
                f"{names.get(partner, partner)} has rank {weights[partner].shape[1]}"
            )


def convert_showme_lora_unet(
    state_dict: Mapping[str, torch.Tensor],
    stage: int,
    config: Mapping[str, Any] | None = None,
    adapter_name: str | None = None,
) -> ConvertedStateDict:
    """Convert the UNet part of a ShowMe release LoRA file to peft's LoRA layout.

    Stage 1 becomes the ``manipulation`` role, stage 2 the ``prediction`` role (see
    :func:`~showme_model.unet.lora_target_modules`). The stage-1 release also carries
    feed-forward LoRA in the temporal transformers; those never run in image mode and are
    reported in ``ignored``. Keys outside the UNet (``image_proj_model.*``) are left alone.

    Args:
        state_dict: the release file's tensors (keys with or without ``model.diffusion_model.``).
        stage: 1 or 2.
        config: the ShowMeUNet config; ``dynamicrafter-256`` when ``None``.
        adapter_name: when given, keys are ``<module>.lora_A.<adapter_name>.weight`` (the names
            inside an injected model); when ``None`` they are ``<module>.lora_A.weight`` (peft's
            saved-adapter names, for ``set_peft_model_state_dict``).

    Returns:
        The converted LoRA weights; ``missing`` lists target modules without LoRA weights.

    Raises:
        ValueError: a matrix does not fit its module in ``config``, or A and B ranks differ.

    """
    if stage not in STAGE_ROLES:
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    config = dict(unet_config("dynamicrafter-256") if config is None else config)
    table = dynamicrafter_module_map(config)
    with torch.device("meta"):
        unet = ShowMeUNet(**config)
    targets = set(lora_target_modules(unet, STAGE_ROLES[stage]))
    temporal = set(lora_target_modules(unet, "prediction")) - targets
    marker = f".stage{stage}_lora_"
    infix = "" if adapter_name is None else f".{adapter_name}"
    prefix = UNET_PREFIX if any(key.startswith(UNET_PREFIX) for key in state_dict) else ""

    converted: dict[str, torch.Tensor] = {}
    names: dict[str, str] = {}
    result = ConvertedStateDict(converted)
    for key, value in state_dict.items():
        if key.startswith("image_proj_model."):
            continue
        bare = key.removeprefix(UNET_PREFIX)
        owner, found, tail = bare.partition(marker)
        kind, _, matrix = tail.rpartition(".")
        resolved = _resolve(table, owner) if found else None
        if resolved is None or kind not in _LORA_KINDS or matrix not in ("lora_A", "lora_B"):
            result.unexpected.append(key)
            continue
        target, _, rest = resolved
        module = ".".join(p for p in (target, rest, _LORA_KINDS[kind]) if p)
        new_key = f"{module}.{matrix}{infix}.weight"
        if module not in targets:
            if module in temporal and kind.startswith("ff_"):
                result.ignored.append(f"{key}: temporal feed-forward LoRA never runs in image mode")
            else:
                result.unexpected.append(key)
                result.counterparts[key] = new_key
            continue
        value = value.t().contiguous()
        check_lora_shape(key, new_key, value, unet.get_submodule(module))
        converted[new_key] = value
        names[new_key] = key
    check_lora_ranks(converted, names)

    expected = {f"{m}.{matrix}{infix}.weight" for m in targets for matrix in ("lora_A", "lora_B")}
    result.missing = sorted(expected - set(converted))
    for key in result.missing:
        module, _, matrix = key.removesuffix(f"{infix}.weight").rpartition(".")
        split = _release_lora_kind(module)
        source = None if split is None else _source_module(table, split[0])
        if source is not None:
            result.counterparts[key] = f"{prefix}{source}.stage{stage}_lora_{split[1]}.{matrix}"
    return result

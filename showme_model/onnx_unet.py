"""``OnnxUNet``: the exported UNet graphs run by onnxruntime, called like ``ShowMeUNet``.

It takes the arguments :class:`~showme_model.unet.ShowMeUNet` takes and picks the graph by
``temporal`` (``False``: the image graph, ``True``: the video graph), so it stands in for the
UNet of a model whose adapters were merged into the graphs by ``showme-export onnx``.
:func:`onnx_pipeline` makes a :class:`~showme_model.pipeline.ShowMePipeline` that runs it::

    pipeline = onnx_pipeline("model_folder", "onnx_folder", threads=1)
    frames = pipeline(image, "open the drawer", mode="video", num_frames=8).frames

A graph has fixed shapes except for the batch: the video graph makes the number of frames it
was exported with. Other inputs (another rollout length, a mode without a graph) raise an error,
or, with ``eager_fallback=True``, run on the model's PyTorch UNet, kept loaded for them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from diffusers.configuration_utils import FrozenDict
from torch import nn

from showme_model.adapters import roles_for_mode
from showme_model.onnx_export import EXPORT_CONFIG, MODES
from showme_model.pipeline import DEFAULT_IMAGE_CACHE_SIZE, ShowMePipeline
from showme_model.unet import ShowMeUNet


class OnnxUNet(nn.Module):
    """onnxruntime sessions of the graphs in a ``showme-export onnx`` folder.

    Args:
        folder: The export folder (with ``onnx_export.json``).
        providers: onnxruntime execution providers (default: CPU).
        threads: Intra-op threads of each session; onnxruntime's default when ``None``.
        fallback: The PyTorch UNet that runs the inputs no graph takes (see :meth:`takes`);
            without it they raise an error. A submodule, so adapter switching reaches it.

    Attributes:
        config: The exported UNet's configuration (as ``ShowMeUNet.config``).
        graphs: The export description of each graph, by mode.

    """

    def __init__(
        self,
        folder: str | Path,
        providers: list[str] | None = None,
        threads: int | None = None,
        fallback: ShowMeUNet | None = None,
    ) -> None:
        super().__init__()
        self.fallback = fallback
        folder = Path(folder)
        config_path = folder / EXPORT_CONFIG
        if not config_path.is_file():
            raise FileNotFoundError(f"{folder} is not an ONNX export folder: no {EXPORT_CONFIG}")
        description = json.loads(config_path.read_text())
        self.config = FrozenDict(description["unet_config"])
        self.graphs: dict[str, dict] = description["graphs"]
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self._sessions = {
            mode: ort.InferenceSession(
                str(folder / graph["file"]),
                options,
                providers=providers or ["CPUExecutionProvider"],
            )
            for mode, graph in self.graphs.items()
            if mode in MODES
        }

    @property
    def device(self) -> torch.device:
        """Where outputs are returned (the CPU)."""
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the graph inputs and outputs."""
        return torch.float32

    def graph_frames(self, mode: str) -> int | None:
        """Frames the graph of ``mode`` makes, or ``None`` without a graph for ``mode``."""
        return self.graphs[mode]["num_frames"] if mode in self._sessions else None

    def takes(
        self, sample: torch.Tensor, encoder_hidden_states: torch.Tensor, temporal: bool
    ) -> bool:
        """Whether a graph takes these inputs: one for their mode, of their shapes but the batch."""
        mode = "video" if temporal else "image"
        if mode not in self._sessions:
            return False
        shapes = {
            graph_input.name: graph_input.shape for graph_input in self._sessions[mode].get_inputs()
        }
        return (
            list(sample.shape[1:]) == shapes["sample"][1:]
            and list(encoder_hidden_states.shape[1:]) == shapes["encoder_hidden_states"][1:]
        )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        frame_stride: torch.Tensor | int | None = None,
        temporal: bool = True,
    ) -> torch.Tensor:
        """Predict the model output as :meth:`ShowMeUNet.forward` does.

        Inputs no graph takes go to the ``fallback`` UNet when there is one.

        Raises:
            ValueError: No graph takes the inputs and there is no fallback: the folder has no
                graph for this mode, or an input's shape differs from the exported one in
                anything but the batch size.

        """
        if self.fallback is not None and not self.takes(sample, encoder_hidden_states, temporal):
            return self.fallback(sample, timestep, encoder_hidden_states, frame_stride, temporal)
        mode = "video" if temporal else "image"
        if mode not in self._sessions:
            raise ValueError(f"the ONNX export has no {mode} graph (it has {list(self.graphs)})")
        session = self._sessions[mode]
        batch = sample.shape[0]
        feeds = {
            "sample": _array(sample),
            "timestep": _per_sample(timestep, batch),
            "encoder_hidden_states": _array(encoder_hidden_states),
        }
        if temporal:
            stride = self.config["default_frame_stride"] if frame_stride is None else frame_stride
            feeds["frame_stride"] = _per_sample(stride, batch)
        for graph_input in session.get_inputs():
            expected = graph_input.shape[1:]
            if list(feeds[graph_input.name].shape[1:]) != expected:
                raise ValueError(
                    f"{graph_input.name} must be (B, {', '.join(map(str, expected))}) for the "
                    f"exported {mode} graph, got {tuple(feeds[graph_input.name].shape)}"
                )
        (output,) = session.run(None, feeds)
        return torch.from_numpy(output)


def onnx_pipeline(
    model_folder: str | Path,
    onnx_folder: str | Path,
    threads: int | None = None,
    providers: list[str] | None = None,
    adapters: Sequence[str] | None = None,
    image_cache_size: int = DEFAULT_IMAGE_CACHE_SIZE,
    eager_fallback: bool = False,
) -> ShowMePipeline:
    """Load the model in ``model_folder`` as a pipeline whose UNet runs ``onnx_folder``'s graphs.

    The encoders, the image projector (with its adapter) and the VAE stay in PyTorch, on the
    CPU in float32; the UNet's adapters act through the graphs they were merged into, so the
    ``adapters`` a call reports are those acting in PyTorch (the image projector's, and with
    ``eager_fallback`` the fallback UNet's); the graphs' are listed in ``onnx_export.json``.

    Args:
        model_folder: The model folder the graphs were exported from.
        onnx_folder: The ``showme-export onnx`` folder.
        threads: Intra-op threads of each onnxruntime session (its default when ``None``).
        providers: onnxruntime execution providers (default: CPU).
        adapters: Roles to load, as in :meth:`ShowMePipeline.from_pretrained`.
        image_cache_size: Image embeddings kept between calls (0 disables the cache).
        eager_fallback: Keep the PyTorch UNet (with its adapters, not merged) for the calls no
            graph takes, such as rollouts of another length than the video graph's; otherwise
            those calls raise an error.

    Raises:
        ValueError: The graphs were exported from a UNet with another configuration, or with
            other adapters merged than the model folder runs in that mode.

    """
    pipeline = ShowMePipeline.from_pretrained(
        model_folder, adapters=adapters, image_cache_size=image_cache_size
    )
    model = pipeline.model
    unet = OnnxUNet(onnx_folder, providers, threads, model.unet if eager_fallback else None)
    expected = {k: v for k, v in model.unet.config.items() if not k.startswith("_")}
    if json.loads(json.dumps(expected)) != dict(unet.config):
        raise ValueError(f"{onnx_folder} holds the graphs of another UNet than {model_folder}'s")
    for mode, graph in unet.graphs.items():
        roles = roles_for_mode(model, mode)
        if graph.get("adapters") != roles:
            raise ValueError(
                f"{onnx_folder}'s {mode} graph has the adapters {graph.get('adapters')} merged, "
                f"but {model_folder} runs {roles} in {mode} mode; export the graphs again"
            )
    model.unet = unet
    return ShowMePipeline(model, pipeline.sampler_config, image_cache_size)


def _array(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())


def _per_sample(value: torch.Tensor | float, batch: int) -> np.ndarray:
    array = np.asarray(torch.as_tensor(value).detach().cpu(), dtype=np.float32)
    if array.ndim == 0:
        array = np.full((batch,), array, dtype=np.float32)
    if array.shape != (batch,):
        raise ValueError(f"expected a scalar or a ({batch},) tensor, got {array.shape}")
    return array

"""``showme-export onnx``: the UNet as ONNX graphs, one per pipeline mode, adapters merged.

``showme-export onnx MODEL_DIR OUT_DIR [--mode image|video|both] [--num-frames N] [--opset N]``
writes ``unet_image.onnx`` (temporal modules off, the ``manipulation`` adapter merged) and/or
``unet_video.onnx`` (temporal modules on, ``N`` frames, ``manipulation`` and ``prediction``
merged), the adapters each mode runs in :class:`~showme_model.pipeline.ShowMePipeline`, plus
``onnx_export.json`` describing them (read by :class:`~showme_model.onnx_unet.OnnxUNet`).

Graph inputs (float32; the batch axis is dynamic, the other axes are fixed at export):

- ``sample``: ``(B, 8, T, h, w)`` noisy latents stacked with the concat condition (``T = 1`` in
  image mode);
- ``timestep``: ``(B,)`` diffusion step;
- ``encoder_hidden_states``: ``(B, L, D)`` text tokens then image tokens;
- ``frame_stride``: ``(B,)`` frame-stride condition (video graph only).

Output ``model_output``: ``(B, 4, T, h, w)``, the UNet's prediction (noise or v).
Graphs larger than 2 GB keep their weights in a ``.data`` file beside the ``.onnx`` file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from showme_model import adapters as adapter_lib
from showme_model.model import ModelFolderError, ShowMeModel
from showme_model.unet import ShowMeUNet

Mode = Literal["image", "video"]
MODES: tuple[Mode, ...] = ("image", "video")
EXPORT_CONFIG = "onnx_export.json"
OUTPUT_NAME = "model_output"
DEFAULT_OPSET = 18
DEFAULT_NUM_FRAMES = 16
_EXAMPLE_BATCH = 2  # not 0 or 1, which torch.export would specialise on


def graph_file(mode: Mode) -> str:
    """File name of the graph of ``mode``."""
    return f"unet_{mode}.onnx"


def input_names(mode: Mode) -> list[str]:
    """Names of the graph inputs of ``mode``, in order."""
    names = ["sample", "timestep", "encoder_hidden_states"]
    return [*names, "frame_stride"] if mode == "video" else names


def merged_unet(unet: ShowMeUNet, roles: Sequence[str]) -> ShowMeUNet:
    """Return a plain UNet: ``unet``'s weights with the given adapters folded in.

    ``unet`` is left unchanged; weights no adapter touches are shared with it, not copied.
    """
    state = adapter_lib.base_state_dict(unet)
    for name, layer in unet.named_modules():
        if isinstance(layer, LoraLayer):
            for role in roles:
                if role in layer.lora_A:
                    key = f"{name}.weight"
                    state[key] = state[key] + layer.get_delta_weight(role)
    with torch.device("meta"):
        merged = ShowMeUNet.from_config(unet.config)
    merged.load_state_dict(state, strict=True, assign=True)
    return merged.eval()


class ModeUNet(nn.Module):
    """The UNet of one mode with positional tensor inputs only, as the graph takes them."""

    def __init__(self, unet: ShowMeUNet, mode: Mode) -> None:
        super().__init__()
        self.unet = unet
        self.temporal = mode == "video"

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        frame_stride: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the UNet of this mode (``frame_stride`` is used in video mode only)."""
        return self.unet(
            sample, timestep, encoder_hidden_states, frame_stride, temporal=self.temporal
        )


def frame_size(model: ShowMeModel) -> tuple[int, int]:
    """``(H, W)`` of the frames the model makes."""
    size = model.vae.config.sample_size
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def latent_size(model: ShowMeModel) -> tuple[int, int]:
    """``(h, w)`` of the latents of the frames the model makes."""
    factor = 2 ** (len(model.vae.config.block_out_channels) - 1)
    height, width = frame_size(model)
    return height // factor, width // factor


@torch.no_grad()
def context_length(model: ShowMeModel) -> int:
    """Tokens in the UNet context: the text encoder's plus the image projector's."""
    image = torch.zeros(1, 3, *frame_size(model), device=model.device, dtype=model.dtype)
    return model.encode_text([""]).shape[1] + model.encode_image_context(image).shape[1]


def example_inputs(
    model: ShowMeModel, mode: Mode, num_frames: int, batch: int = _EXAMPLE_BATCH
) -> tuple[torch.Tensor, ...]:
    """Random inputs of the graph of ``mode``, in :func:`input_names` order."""
    config = model.unet.config
    frames = num_frames if mode == "video" else 1
    shape = (batch, config.in_channels, frames, *latent_size(model))
    dtype = model.dtype
    inputs = [
        torch.randn(shape, dtype=dtype),
        torch.linspace(1, 999, batch),
        torch.randn(batch, context_length(model), config.cross_attention_dim, dtype=dtype),
    ]
    if mode == "video":
        inputs.append(torch.full((batch,), float(config.default_frame_stride)))
    return tuple(inputs)


def export_unet(
    model: ShowMeModel,
    mode: Mode,
    path: str | Path,
    num_frames: int = DEFAULT_NUM_FRAMES,
    opset: int = DEFAULT_OPSET,
    optimize: bool = False,
) -> Path:
    """Write the UNet of ``mode`` with that mode's adapters merged to the ONNX file ``path``.

    Args:
        model: A model on the CPU, with its adapters injected (``model`` is not changed).
        mode: ``"image"`` (temporal modules off) or ``"video"`` (on, ``num_frames`` frames).
        path: The ``.onnx`` file to write.
        num_frames: Frames of the video graph (ignored in image mode).
        opset: ONNX opset version.
        optimize: Run onnxscript's graph optimizer (constant folding, fusions). It makes the
            export about twice as slow; onnxruntime and TensorRT optimise the graph when they
            load it anyway.

    Returns:
        ``path``.

    """
    if mode not in MODES:
        raise ValueError(f"mode must be 'image' or 'video', got {mode!r}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
    roles = adapter_lib.roles_for_mode(model, mode)
    module = ModeUNet(merged_unet(model.unet, roles), mode).eval()
    inputs = example_inputs(model, mode, num_frames)
    names = input_names(mode)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    program = torch.onnx.export(
        module,
        inputs,
        dynamo=True,
        input_names=names,
        output_names=[OUTPUT_NAME],
        dynamic_axes={name: {0: "batch"} for name in [*names, OUTPUT_NAME]},
        opset_version=opset,
        optimize=optimize,
    )
    program.save(path)
    return path


def export_model(
    model: ShowMeModel,
    folder: str | Path,
    modes: Sequence[Mode] = MODES,
    num_frames: int = DEFAULT_NUM_FRAMES,
    opset: int = DEFAULT_OPSET,
    optimize: bool = False,
) -> dict:
    """Export the graphs of ``modes`` to ``folder`` and write :data:`EXPORT_CONFIG`.

    The arguments are those of :func:`export_unet`.

    Returns:
        The export description written to :data:`EXPORT_CONFIG`.

    """
    folder = Path(folder)
    description: dict = {
        "unet_config": {k: v for k, v in model.unet.config.items() if not k.startswith("_")},
        "opset": opset,
        "optimized": optimize,
        "latent_size": list(latent_size(model)),
        "context_length": context_length(model),
        "graphs": {},
    }
    for mode in modes:
        export_unet(model, mode, folder / graph_file(mode), num_frames, opset, optimize)
        description["graphs"][mode] = {
            "file": graph_file(mode),
            "num_frames": num_frames if mode == "video" else 1,
            "temporal": mode == "video",
            "adapters": adapter_lib.roles_for_mode(model, mode),
            "inputs": input_names(mode),
        }
    (folder / EXPORT_CONFIG).write_text(json.dumps(description, indent=2) + "\n")
    return description


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="showme-export", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    onnx = commands.add_parser("onnx", help="UNet graphs of a model folder -> ONNX files")
    onnx.add_argument("model", type=Path, help="model folder (with its adapters)")
    onnx.add_argument("output", type=Path, help="folder to write the graphs to")
    onnx.add_argument("--mode", choices=(*MODES, "both"), default="both")
    onnx.add_argument(
        "--num-frames",
        type=int,
        default=DEFAULT_NUM_FRAMES,
        help=f"frames of the video graph (default {DEFAULT_NUM_FRAMES})",
    )
    onnx.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version")
    onnx.add_argument(
        "--optimize", action="store_true", help="run onnxscript's graph optimizer (slow)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``showme-export``; return the exit status."""
    args = _parser().parse_args(argv)
    modes = MODES if args.mode == "both" else (args.mode,)
    start = time.perf_counter()
    try:
        model = ShowMeModel.from_pretrained(args.model)
        description = export_model(
            model, args.output, modes, args.num_frames, args.opset, args.optimize
        )
    except (ModelFolderError, adapter_lib.AdapterError, ValueError, OSError) as error:
        print(f"showme-export: error: {error}", file=sys.stderr)
        return 1
    for mode, graph in description["graphs"].items():
        adapters = ", ".join(graph["adapters"]) or "none"
        print(
            f"{mode}: {args.output / graph['file']} ({graph['num_frames']} frame(s), "
            f"adapters merged: {adapters})"
        )
    print(f"wrote {args.output / EXPORT_CONFIG} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The loaded model: finding its folder, loading it onto a device, running jobs, freeing it.

torch and the model library are imported when a model is loaded, not when the node starts.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from showme_ros.jobs import Job
from showme_ros.parameters import Settings

# Progress callback: (step just finished, total steps).
Progress = Callable[[int, int], None]
TINY_MODEL_WARNING = (
    "{reason}. Using a tiny RANDOM model from {path} instead: "
    "predictions are noise. Set model.path to a model folder for real predictions."
)


class ModelLoadError(RuntimeError):
    """The model folder is missing or broken, or the device / dtype cannot be used."""


class JobCancelledError(Exception):
    """A job stopped by its caller between two denoising steps."""


@dataclass(frozen=True)
class ModelChoice:
    """Which model folder to load, and a warning to log about it (or '')."""

    path: Path
    warning: str


def cache_dir() -> Path:
    """Folder for generated files: ``$XDG_CACHE_HOME/showme`` (default ``~/.cache/showme``)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "showme"


def choose_model(path: str) -> ModelChoice:
    """Resolve ``model.path``: an explicit folder, the shipped model, or a tiny random model.

    An explicit path is used as given (loading reports it if it is missing); only an empty
    path falls back, first to the shipped model, then to a tiny random model written once to
    the cache folder.
    """
    if path:
        return ModelChoice(Path(path).expanduser(), "")
    from showme_model.pipeline import default_model_path

    try:
        return ModelChoice(default_model_path(), "")
    except FileNotFoundError as missing:
        tiny = cache_dir() / "tiny-random-model"
        if not (tiny / "model_index.json").is_file():
            _write_tiny_model(tiny)
        return ModelChoice(tiny, TINY_MODEL_WARNING.format(reason=missing, path=tiny))


def _write_tiny_model(folder: Path) -> None:
    """Write a randomly initialised tiny model to ``folder`` atomically."""
    import torch

    from showme_model.model import ShowMeModel

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder.parent))
    torch.manual_seed(0)
    ShowMeModel.from_config_name("tiny").save_pretrained(staging)
    try:
        staging.rename(folder)
    except OSError:  # written by another process meanwhile
        shutil.rmtree(staging, ignore_errors=True)


class Engine:
    """A pipeline on its device, ready to run :class:`~showme_ros.jobs.Job` objects.

    Attributes:
        runtime: What runs the UNet, for the log: "PyTorch", or onnxruntime and its graphs.
        graph_frames: Frames of the ONNX video graph; ``None`` without one.

    """

    def __init__(
        self,
        pipeline: Any,
        model_id: str,
        device: str,
        dtype: str,
        runtime: str = "PyTorch",
        graph_frames: int | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.max_frames = int(pipeline.max_frames)
        self.sampler_config = pipeline.sampler_config
        self.model_id = model_id
        self.device = device
        self.dtype = dtype
        self.runtime = runtime
        self.graph_frames = graph_frames

    @classmethod
    def load(
        cls,
        path: Path,
        adapters: tuple[str, ...],
        device: str,
        dtype: str,
        onnx_path: str = "",
        compile_unet: bool = False,
    ) -> Engine:
        """Load the model folder ``path`` with ``adapters`` onto ``device`` in ``dtype``.

        With ``onnx_path`` (a ``showme-export onnx`` folder of this model), the UNet runs those
        graphs in onnxruntime on the CPU, in float32 (``device`` "auto" then means the CPU);
        calls no graph takes (a rollout of another length than the video graph's) run on the
        PyTorch UNet, kept loaded for them. With ``compile_unet`` the PyTorch UNet runs through
        ``torch.compile`` (compiled at :meth:`warm_up`).

        Raises:
            ModelLoadError: With a message naming the folder and what is wrong.

        """
        if not path.is_dir():
            raise ModelLoadError(f"model folder not found: {path} (parameter model.path)")
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(f"{path} is not a model folder: it has no model_index.json")
        if onnx_path and compile_unet:
            raise ModelLoadError(
                "model.compile and model.onnx_path are both set: the UNet runs either in "
                "onnxruntime or compiled in PyTorch; set model.compile to false or "
                "model.onnx_path to ''"
            )
        if onnx_path:
            return cls._load_onnx(path, adapters, device, dtype, Path(onnx_path).expanduser())
        import torch

        from showme_model.pipeline import ShowMePipeline

        device = _resolve_device(device, torch)
        torch_dtype = _resolve_dtype(dtype, device, torch)
        try:
            # Live camera frames never repeat: cached image embeddings would only use memory.
            pipeline = ShowMePipeline.from_pretrained(
                path,
                adapters=list(adapters) or None,
                device=device,
                dtype=torch_dtype,
                image_cache_size=0,
                # On the CPU, LoRA layers folded into a UNet copy make calls 1.6-1.7x faster; on
                # a GPU the copy's memory matters more than the layers' time.
                merge_adapters=device == "cpu",
                compile_unet=compile_unet,
            )
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise ModelLoadError(f"cannot load the model from {path}: {error}") from error
        return cls(
            pipeline,
            _model_id(path, adapters),
            device,
            str(torch_dtype).removeprefix("torch."),
            "PyTorch, torch.compile" if compile_unet else "PyTorch",
        )

    @classmethod
    def _load_onnx(
        cls, path: Path, adapters: tuple[str, ...], device: str, dtype: str, onnx_path: Path
    ) -> Engine:
        import torch

        from showme_model.onnx_unet import onnx_pipeline

        if device not in ("auto", "cpu"):
            raise ModelLoadError(
                f"model.onnx_path runs the UNet in onnxruntime on the CPU: set device to cpu or "
                f"auto, or model.onnx_path to '' to serve on {device}"
            )
        if dtype not in ("auto", "float32"):
            raise ModelLoadError(
                f"the ONNX graphs (model.onnx_path) are float32: set dtype to float32 or auto, "
                f"or model.onnx_path to '' to serve in {dtype}"
            )
        try:
            pipeline = onnx_pipeline(
                path,
                onnx_path,
                threads=torch.get_num_threads(),  # as many as PyTorch uses (OMP_NUM_THREADS)
                adapters=list(adapters) or None,
                image_cache_size=0,
                eager_fallback=True,
            )
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise ModelLoadError(
                f"cannot serve {path} from the ONNX graphs in {onnx_path} (parameter "
                f"model.onnx_path): {error}"
            ) from error
        unet = pipeline.model.unet
        frames = unet.graph_frames("video")
        graphs = ["image graph"] if unet.graph_frames("image") else []
        graphs += [f"{frames}-frame video graph"] if frames else []
        runtime = (
            f"onnxruntime ({', '.join(graphs) or 'no graph'} in {onnx_path}; other calls on the "
            "PyTorch UNet)"
        )
        return cls(pipeline, _model_id(path, adapters), "cpu", "float32", runtime, frames)

    def fallback_warning(self, settings: Settings) -> str:
        """Return a warning if default rollouts (``settings`` resolved) miss the ONNX graph."""
        if self.graph_frames is None or settings.num_frames == self.graph_frames:
            return ""
        return (
            f"default rollouts (inference.num_frames = {settings.num_frames}) run on the PyTorch "
            f"UNet: the ONNX video graph makes {self.graph_frames} frames; export one with "
            f"showme-export onnx --num-frames {settings.num_frames} for them"
        )

    def resolve(self, settings: Settings) -> Settings:
        """Replace every "model default" value of ``settings`` by the model's stored setting."""
        config = self.sampler_config
        return replace(
            settings,
            num_steps=settings.num_steps or config.num_inference_steps,
            num_frames=settings.num_frames or config.num_frames,
            guidance_scale=settings.guidance_scale or config.guidance_scale,
            eta=config.eta if settings.eta < 0 else settings.eta,
            scheduler=settings.scheduler or config.scheduler,
            frame_stride=settings.frame_stride or config.frame_stride or 0,
            max_num_frames=min(settings.max_num_frames, self.max_frames),
        )

    def run(
        self,
        job: Job,
        progress: Progress | None,
        cancelled: Callable[[], bool],
        region_size: bool = False,
    ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """Predict ``job``: one rollout per instruction, and the region of the image it covers.

        Returns:
            ``(B, T, h, w, 3)`` uint8 frames, at the model's resolution or, with
            ``region_size``, at the size of the region of ``job.image`` the model saw; and that
            region as ``(top, left, height, width)``.

        Raises:
            JobCancelledError: ``cancelled()`` became true; checked after every denoising step.
            ValueError: The pipeline refused the inputs.

        """
        from showme_model.pipeline import PredictionCancelledError
        from showme_model.preprocessing import centre_region

        def on_step(index: int, total: int, _timestep: int) -> bool:
            if progress is not None:
                progress(index + 1, total)
            return not cancelled()

        try:
            result = self.pipeline.predict(
                job.image,
                job.instructions,
                mode=job.mode,
                num_frames=job.num_frames,
                num_steps=job.num_steps,
                guidance_scale=job.guidance_scale,
                eta=job.eta,
                scheduler=job.scheduler,
                keep_scene=job.keep_scene,
                frame_stride=job.frame_stride,
                seed=job.seed,
                callback=on_step,
                restore_size=region_size,
            )
        except PredictionCancelledError as error:
            raise JobCancelledError(str(error)) from error
        height, width = job.image.shape[:2]
        region = centre_region(height, width, self.pipeline.resolution, "crop")
        return np.asarray(result.frames), region

    def warm_up(self, settings: Settings) -> None:
        """Run a one-step goal image and rollout with the served settings.

        The first request of each mode then does not pay for lazy initialisation (allocator
        growth, the guidance path in use, the temporal layers' first run).
        """
        height, width = self.pipeline.resolution
        image = np.zeros((height, width, 3), np.uint8)
        for mode, frames in (("image", 1), ("video", settings.num_frames)):
            self.pipeline.predict(
                image,
                ["warm up"],
                mode=mode,
                num_frames=frames,
                num_steps=1,
                guidance_scale=settings.guidance_scale,
                eta=settings.eta,
                scheduler=settings.scheduler,
                seed=0,
            )

    def gpu_memory_bytes(self) -> int:
        """Bytes allocated on the GPU by this process (0 on CPU)."""
        import torch

        if self.device.startswith("cuda") and torch.cuda.is_available():
            return int(torch.cuda.memory_allocated())
        return 0

    def close(self) -> None:
        """Free the model and, on a GPU, its cached memory."""
        self.pipeline = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _model_id(path: Path, adapters: tuple[str, ...]) -> str:
    return path.name + (f"+{'+'.join(adapters)}" if adapters else "")


def _resolve_device(device: str, torch: Any) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available here")
    try:
        torch.device(device)
    except RuntimeError as error:
        raise ModelLoadError(f"unknown device {device!r}: {error}") from error
    return device


def _resolve_dtype(dtype: str, device: str, torch: Any) -> Any:
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)

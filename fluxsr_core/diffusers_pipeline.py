"""``FluxSRPipeline``: a trained fluxsr model as a diffusers ``DiffusionPipeline``.

It is a thin face over the one inference path (``fluxsr_core.student.Student.upscale``, which
``fluxsr upscale``, the benchmark and ``fluxsr serve`` all run), so ``pipe(image)`` gives the
same pixels as ``fluxsr upscale`` for the same model, knobs and seed::

    pipe = FluxSRPipeline.from_pretrained("runs/demo/train/<key>/final")   # or an exported folder
    image = pipe(Image.open("photo.png"), tau=0.3, generator=torch.Generator().manual_seed(3)).images[0]

``from_pretrained`` reads a fluxsr model folder (a training run's ``final/``, a checkpoint or a
``fluxsr export`` folder): the base it names (the tiny preset built from its config and seed, or
FLUX.1-dev from ``model.path``/the hub cache) plus the trained LoRA and modules. ``save_pretrained``
writes that model folder back (weights, identity, card): the base is named, not copied, as a
LoRA on the hub is.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from PIL import Image

from fluxsr_core import model_folder
from fluxsr_core.config import FluxSRConfig, check_tiles, load_config
from fluxsr_core.imageio import quantize_8bit, to_uint8
from fluxsr_core.student import Student, load_student

OUTPUT_TYPES = ("pil", "np", "pt")


def _as_tensor(image: Any) -> torch.Tensor:
    """A PIL image, an (H, W, 3) uint8/float array or a (3, H, W)/(1, 3, H, W) tensor in [0, 1] -> (1, 3, H, W)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        arr = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"an image array must be (H, W, 3), got {arr.shape}")
        image = torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a PIL image, a numpy array or a torch tensor, not {type(image).__name__}")
    image = image.float()
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"an image tensor must be (3, H, W) or (1, 3, H, W), got {tuple(image.shape)}")
    return image.clamp(0.0, 1.0)


class FluxSRPipeline(DiffusionPipeline):
    """One-step real-world super-resolution by a fluxsr model (FTD, the SR teacher, OFTSR or MeanFlow)."""

    def __init__(self, transformer, vae, scheduler, student: Student | None = None,
                 config: FluxSRConfig | None = None):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler)
        self.student = student
        self.fluxsr_config = config

    @classmethod
    def from_pretrained(cls, model_path: str | Path | None, *, preset: str | None = None,
                        config: str | Path | None = None, overrides: list[str] | None = None,
                        device: str | None = None, **unused: Any) -> "FluxSRPipeline":
        """The model at ``model_path`` on the base it was trained on (``None``: the untrained base, a check only).

        ``preset`` defaults to the model's; ``config``/``overrides`` are fluxsr's YAML file and ``key=value``
        settings (``model.path=...`` for FLUX.1-dev weights in a folder); ``device`` 'cpu', 'cuda', 'auto'."""
        if unused:
            raise TypeError(f"FluxSRPipeline.from_pretrained: unsupported arguments {sorted(unused)} (a fluxsr model "
                            "folder is read with fluxsr's config: preset=, config=, overrides=, device=)")
        if model_path is not None and preset is None:
            preset = model_folder.read_info(model_path).base.get("preset")
        sets = [*(overrides or []), *([f"model.device={device}"] if device else [])]
        cfg = load_config(config, sets, preset=preset or "tiny")
        student = load_student(cfg, model_path)
        c = student.model.components
        return cls(transformer=c.transformer, vae=c.vae, scheduler=c.scheduler, student=student, config=cfg)

    def save_pretrained(self, save_directory: str | Path, **unused: Any) -> Path:
        """Write the model folder (LoRA in diffusers' format, modules, ``fluxsr_model.json``, card); the base is
        named in it, not copied. ``from_pretrained`` reads it back."""
        if self.student is None or self.student.path is None:
            raise ValueError("this pipeline runs the untrained base model: there is no trained model to save")
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        for name in model_folder.MODEL_FILES:
            src = self.student.path / name
            if src.is_file() and src.resolve() != (out / name).resolve():
                shutil.copyfile(src, out / name)
        return out

    def to(self, device: str | torch.device | None = None, *args: Any, **kwargs: Any) -> "FluxSRPipeline":
        """Move the transformer, the VAE and the fixed text condition (the student's device follows)."""
        if device is None:
            return self
        dev = torch.device(device)
        model = self.student.model
        model.components.transformer.to(dev)
        model.components.vae.to(dev)
        model.components.device = dev
        model.cond = type(model.cond)(model.cond.embeds.to(dev), model.cond.pooled.to(dev))
        return self

    @property
    def method(self) -> str:
        return self.student.method.name

    @property
    def knobs(self) -> tuple:
        """The inference knobs of the model's method (``Knob``: name, type, range, default, help): what ``__call__``
        takes as keyword arguments."""
        return self.student.method.knobs

    @torch.no_grad()
    def __call__(self, image: Any, *, scale: float | None = None, tile: int | None | str = "config",
                 overlap: int | None = None, color_fix: str | None = None, generator: torch.Generator | None = None,
                 output_type: str = "pil", return_dict: bool = True, **knobs: Any):
        """Upscale one image or a list of them (PIL, numpy (H, W, 3) or tensors in [0, 1]).

        ``knobs``: the inference knobs of the model's method by name (``pipe.knobs`` lists them, as `fluxsr
        methods` does; another name or a value out of range is refused by name), e.g. ``tau=0.3`` (OFTSR),
        ``steps=2`` (MeanFlow), ``step_fraction=0.5`` (FTD), ``seed=3``. ``generator``: its seed is the ``seed``
        knob of a method that starts from noise, as ``fluxsr upscale --knob seed=N``.
        ``tile``/``overlap`` in latent pixels (``tile=None`` = whole image; defaults the config's), ``color_fix``
        none | wavelet | adain. ``output_type``: "pil" (8-bit, as the CLI writes), "np"
        ((B, H, W, 3) float in [0, 1], rounded to 8 bits) or "pt" ((B, 3, H, W), likewise)."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, not {output_type!r}")
        if generator is not None and "seed" in knobs:
            raise ValueError("give generator or seed, not both")
        if generator is not None and any(k.name == "seed" for k in self.knobs):
            knobs["seed"] = generator.initial_seed()
        knobs = self.student.method.check_knobs(knobs)
        infer = self.fluxsr_config.infer.model_copy(update={
            k: v for k, v in (("scale", scale), ("color_fix", color_fix), ("overlap", overlap)) if v is not None})
        if tile != "config":
            infer = infer.model_copy(update={"tile": tile})
        if infer.tile is not None:
            check_tiles(infer.tile, infer.overlap)
        images = image if isinstance(image, (list, tuple)) else [image]
        outs = [quantize_8bit(self.student.upscale(_as_tensor(im), infer, **knobs)) for im in images]
        if output_type == "pil":
            result: Any = [Image.fromarray(to_uint8(o)) for o in outs]
        elif len({o.shape for o in outs}) == 1:
            result = torch.cat(outs) if output_type == "pt" else torch.cat(outs).permute(0, 2, 3, 1).numpy()
        else:  # sizes differ: one array per image
            result = outs if output_type == "pt" else [o[0].permute(1, 2, 0).numpy() for o in outs]
        return ImagePipelineOutput(images=result) if return_dict else (result,)

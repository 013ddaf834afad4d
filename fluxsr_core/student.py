"""A trained model, ready to upscale: the base preset, the saved weights, and the method it was trained with.

One place builds it for ``fluxsr upscale`` and for the benchmark's model rows, so both
run exactly the same inference (``fluxsr_core.infer.upscale``). The method and its
parameters come from the model folder's ``fluxsr_model.json``, not from the config in
force now: a model trained at T_L = 0.3 runs at 0.3. A config that sets a method
parameter to another value is an error naming both (``infer.method_params`` overrides
on purpose), and a model trained on another base architecture is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fluxsr_core import model_folder
from fluxsr_core.config import FluxSRConfig, InferConfig
from fluxsr_core.imageio import write_image
from fluxsr_core.infer import upscale
from fluxsr_core.methods import build_method, method_class, method_from_metadata
from fluxsr_core.methods.base import Method
from fluxsr_core.model_folder import ModelInfo, ModelMismatchError
from fluxsr_core.models import load_components, lora
from fluxsr_core.models.sr_model import SRModel
from fluxsr_core.streaming import can_stream, upscale_to_png

log = logging.getLogger(__name__)
DEFAULT_METHOD = "ftd"


@dataclass
class Student:
    model: SRModel
    method: Method
    info: ModelInfo | None = None  # None: the untrained base model
    path: Path | None = None
    knob_defaults: dict[str, Any] = field(default_factory=dict)  # from the config's infer section

    def upscale(self, image: torch.Tensor, cfg: InferConfig, **knobs: Any) -> torch.Tensor:
        """(1, 3, h, w) in [0, 1] -> the SR image in [0, 1] on the CPU; ``knobs`` override the config's.

        The input is made contiguous first: a channels-last view (an array permuted to (1, 3, h, w)) would pick
        other convolution kernels and move the output by float rounding, so every caller gets the same pixels."""
        image, settings = self._call(image, cfg, knobs)
        return upscale(self.model, self.method, image, **settings).cpu()

    def upscale_to_png(self, image: torch.Tensor, cfg: InferConfig, path: Path, **knobs: Any) -> None:
        """The same pixels as ``upscale``, written as a PNG at ``path``; with ``cfg.tile`` set, streamed through
        ``fluxsr_core.streaming``: full-resolution data a tile or block at a time (its spill file beside ``path``)."""
        if cfg.tile is None or not can_stream(self.model.components):
            write_image(path, self.upscale(image, cfg, **knobs))
            return
        image, settings = self._call(image, cfg, knobs)
        upscale_to_png(self.model, self.method, image, path, spill_dir=path.parent, **settings)

    def _call(self, image: torch.Tensor, cfg: InferConfig, knobs: dict[str, Any]) -> tuple[torch.Tensor, dict]:
        """The input on the model's device, contiguous, and the ``infer`` settings with the knobs merged."""
        return image.to(self.model.device).contiguous(), {
            "scale": cfg.scale, "tile": cfg.tile, "overlap": cfg.overlap, "color_fix": cfg.color_fix,
            "knobs": {**self.knob_defaults, **knobs}}

    def describe(self) -> str:
        if self.info is None:
            return f"untrained base model ({self.method.name} sampler)"
        return f"{self.info.method} model, {self.info.steps} steps, {self.path}"


def config_knobs(method: Method, cfg: InferConfig) -> dict[str, Any]:
    """Every inference knob of the method: its defaults with ``infer.knobs`` over them, checked against its knob
    list (a knob it lacks or a value out of range is an error naming them)."""
    return method.check_knobs(cfg.knobs)


def checked_params(info: ModelInfo, cfg: FluxSRConfig, where: Path) -> dict[str, Any]:
    """The method parameters to run with: the model's, unless ``infer.method_params`` overrides on purpose.

    A parameter that changes sampling (``inference_params``) and that the config sets away
    from its preset's default (``--set loss.T_L=0.3``) must agree with the model's value;
    otherwise it is an error naming both. Training-only parameters are the model's business.
    """
    cls = method_class(info.method)
    configured = build_method(info.method, cfg).metadata()
    preset_default = build_method(info.method, FluxSRConfig(preset=cfg.preset)).metadata()
    for name in cls.inference_params:
        value, trained = configured.get(name), info.method_params.get(name)
        set_here = value != preset_default.get(name)
        if set_here and value != trained and name not in cfg.infer.method_params:
            raise ModelMismatchError(
                f"{where} was trained with {info.method} {name}={trained!r} but the config sets "
                f"{cls.config_keys.get(name, name)}={value!r}. Drop that setting to run the model as trained, or override on "
                f"purpose with --set infer.method_params.{name}={value}")
    unknown = sorted(set(cfg.infer.method_params) - set(info.method_params))
    if unknown:
        raise ModelMismatchError(f"infer.method_params {unknown}: not parameters of method {info.method} "
                                 f"(it has {sorted(info.method_params)})")
    return {**info.method_params, **cfg.infer.method_params}


def load_student(cfg: FluxSRConfig, model_path: str | Path | None) -> Student:
    """The preset of ``cfg.model`` with the trained model at ``model_path`` (a training run's ``final/``, a
    checkpoint folder or the LoRA file in one); without one the base transformer runs (useful only as a check)."""
    if model_path is None:
        method = build_method(DEFAULT_METHOD, cfg)
        log.warning("no trained model given: the untrained base transformer runs with the %s sampler", method.name)
        info = folder = None
    else:
        folder = model_folder.model_dir(model_path)  # InputNotFoundError naming the expected file
        info = model_folder.read_info(folder)
        method = method_from_metadata(info.method, checked_params(info, cfg, folder))
    components = load_components(cfg.model, offload=cfg.infer.offload)
    guidance = cfg.infer.guidance if cfg.infer.guidance is not None else method.guidance
    model = SRModel(components, guidance=guidance)
    if info is not None:
        info.check_base(model_folder.base_model_of(model), str(folder))
        method.extend(model)
        if info.lora:  # {}: trained in full, every weight in the modules file
            lora.load_lora(model.transformer, folder)
        modules = {name: model.transformer.get_submodule(name) for name in info.modules}
        if modules:
            model_folder.load_module_state(modules, folder / model_folder.MODULES_FILE)
    components.transformer.requires_grad_(False)
    components.transformer.eval()
    if cfg.infer.offload:
        from fluxsr_core.models.low_vram import offload_blocks

        offload_blocks(components.transformer, components.device)
    return Student(model=model, method=method, info=info, path=folder, knob_defaults=config_knobs(method, cfg.infer))

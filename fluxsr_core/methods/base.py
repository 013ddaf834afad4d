"""The seam every training method plugs into: what a method says, and nothing the trainer must know.

A method (FTD, later the SR teacher, OFTSR, MeanFlow) is one object that says
- ``name`` and ``term_names``: the CLI's ``--method`` and the loss terms it logs ("total" first,
  the one back-propagated); logging, ``losses.jsonl``, plots and artifacts read them from here;
- ``extend(model)``: architecture changes besides the LoRA adapters (e.g. a widened input projection,
  a second time embedding), made before training and before a saved model is loaded;
- ``lora_targets(targets, backbone)``: the LoRA target modules (the config's, plus e.g. the backbone's widened
  input projection);
- ``trainable_modules(model)``: modules trained in full besides LoRA, by their name in the transformer
  (optimised, checkpointed, resumed and exported with the LoRA, which every method trains);
- ``setup_training(model)``: training-only helpers (e.g. a frozen LPIPS network);
- ``sample_times(n, generator)``: the step's random draws per sample, from the step's generator: one time
  (``{"t": (n,)}``), two (``{"r", "t"}``), or more (a condition-dropout mask, a noise seed); float draws
  are logged as ``<name>_mean``;
- ``loss(model, batch, times)``: the named terms of a batch as tensors;
- ``sample(model, z_L, **knobs)``: inference in latent space (one step, k steps, or a knob), with
  ``knobs`` (``knobs.Knob``: name, type, range, default, help) saying which knobs exist;
- ``config_keys``: each training parameter and the config key it is read from (``from_config``); with
  ``knobs`` the one list every front end reads (``training_knobs``, ``fluxsr methods``);
- ``needs``: what it asks of the runtime (e.g. ``{"forward_ad"}``), checked before a run starts;
- ``needs_teacher_pairs``: whether it needs the teacher's (ε, z_0) of each record (FTD), so no photo records;
- ``metadata()``: what is saved with a trained model and read back at inference (``from_metadata``).

The trainer (``fluxsr_core.train.loop``) takes a method and an ``SRModel`` and never names a method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import torch

from fluxsr_core.errors import UsageError
from fluxsr_core.methods.knobs import Knob, field_knob
from fluxsr_core.models.sr_model import SRModel

Batch = dict[str, torch.Tensor]  # z_L (B, 16, h, w), z0, noise (same), hr (B, 3, 8h, 8w) in [0, 1]
Times = dict[str, torch.Tensor]  # name -> (B,)
Terms = dict[str, torch.Tensor]  # term name -> scalar tensor; "total" is back-propagated

RUNTIME_NEEDS = frozenset({"forward_ad"})  # what a method may ask for


def per_sample(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A (B,) per-sample value (a time, a mask) shaped to broadcast against ``like`` (B, ...), in its dtype."""
    return t.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


class Method(ABC):
    """One distillation method: its loss, its times, what it trains, how it samples, what it saves."""

    name: ClassVar[str]
    term_names: ClassVar[tuple[str, ...]]  # "total" first
    needs: ClassVar[frozenset[str]] = frozenset()
    knobs: ClassVar[tuple[Knob, ...]] = ()  # inference knobs (``infer.knobs``, ``--knob``, the WebUI, the pipeline)
    config_keys: ClassVar[dict[str, str]] = {}  # training parameter -> the config key ``from_config`` reads
    inference_params: ClassVar[tuple[str, ...]] = ()  # parameters that change what ``sample`` computes
    init_methods: ClassVar[tuple[str, ...]] = ()  # methods whose models it may start from (besides its own)
    distils: ClassVar[str | None] = None  # the method of the frozen teacher it is distilled from (``set_teacher``)
    needs_teacher_pairs: ClassVar[bool] = False  # trains on the teacher's (ε, z_0) coupling: no photo records
    trains_in_full: ClassVar[bool] = False  # every weight trains, no LoRA (base pretraining); else lora.rank decides
    super_resolves: ClassVar[bool] = True  # False: not an SR model (the base), so no benchmark row

    guidance: float = 3.5  # the guidance-embedding value the network is run with

    @classmethod
    def from_config(cls, cfg, **extra: Any) -> "Method":
        """The method with each parameter read from its config key (``config_keys``) of a ``FluxSRConfig``."""
        return cls(**{param: config_value(cfg, key) for param, key in cls.config_keys.items()}, **extra)

    @classmethod
    def knob_defaults(cls) -> dict[str, Any]:
        """Inference knob -> default (what a saved model's ``fluxsr_model.json`` lists)."""
        return {k.name: k.default for k in cls.knobs}

    @classmethod
    def training_knobs(cls) -> tuple[Knob, ...]:
        """The training parameters as knobs (``trains``), typed and bounded by their config fields."""
        from fluxsr_core.config import FluxSRConfig

        return tuple(field_knob(param, key, FluxSRConfig) for param, key in cls.config_keys.items())

    @classmethod
    def config_sections(cls) -> frozenset[str]:
        """The config sections its parameters come from: what a training stage's key must hold for it."""
        return frozenset(key.split(".")[0] for key in cls.config_keys.values())

    def extend(self, model: SRModel) -> None:
        """Architecture changes besides LoRA, made to ``model.transformer`` in place (none by default)."""

    def setup_training(self, model: SRModel) -> None:
        """Build what only training needs (loss networks) on ``model.device``."""

    def set_teacher(self, teacher: SRModel) -> None:
        """The frozen teacher a distilled method (``distils``) calls in its loss."""
        raise TypeError(f"method {self.name!r} distils no teacher")

    def lora_targets(self, targets: list[str] | None, backbone) -> list[str]:
        """The module names LoRA adapts: the config's ``lora.target_modules`` (None: the backbone's), plus any the
        method needs."""
        return list(targets or backbone.lora_targets)

    def trainable_modules(self, model: SRModel) -> dict[str, torch.nn.Module]:
        """Modules trained in full besides LoRA, keyed by their name in the transformer (none by default)."""
        return {}

    @abstractmethod
    def sample_times(self, n: int, generator: torch.Generator) -> Times:
        """Training times of ``n`` samples, drawn on the CPU from ``generator`` (pure in its seed)."""

    @abstractmethod
    def loss(self, model: SRModel, batch: Batch, times: Times) -> Terms:
        """The loss terms of ``batch`` at ``times``, keyed by ``term_names``."""

    @abstractmethod
    def sample(self, model: SRModel, z_L: torch.Tensor, **knobs: Any) -> torch.Tensor:
        """The HR latent for the LR latent ``z_L`` (B, 16, h, w); ``knobs`` as in ``self.knobs``."""

    def pointwise_one_step(self, **knobs: Any) -> tuple[float, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] | None:
        """(t, combine) when ``sample`` is one velocity evaluation of z_L itself at time t, then
        ``combine(z_L, v)`` pixel by pixel: the streamed upscale then runs it band by band
        (``streaming``). None (the default): ``sample`` needs the whole latent."""
        return None

    @abstractmethod
    def metadata(self) -> dict[str, Any]:
        """The method's parameters, JSON-able, saved with the model; ``from_metadata`` reads them back."""

    @classmethod
    @abstractmethod
    def from_metadata(cls, params: dict[str, Any]) -> "Method":
        """The method a saved model was trained with."""

    @classmethod
    def check_knobs(cls, knobs: dict[str, Any]) -> dict[str, Any]:
        """``knobs`` typed, range-checked and completed with defaults; an unknown or out-of-range knob is an error
        naming the method's knobs."""
        by_name = {k.name: k for k in cls.knobs}
        unknown = sorted(set(knobs) - set(by_name))
        if unknown:
            raise UsageError(f"method {cls.name!r} has no inference knob {unknown}; its knobs: "
                             f"{', '.join(k.describe() for k in cls.knobs) or 'none'} (fluxsr methods lists them)")
        return {**cls.knob_defaults(), **{name: by_name[name].check(v, cls.name) for name, v in knobs.items()}}


def config_value(cfg, key: str) -> Any:
    """The value of the config key ``section.field`` in a ``FluxSRConfig``."""
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)

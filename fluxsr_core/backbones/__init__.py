"""The backbone seam: what differs between base models, as one small record of functions per base.

In the spirit of torchtitan's ``ModelSpec``: a ``Backbone`` names the base's latent space (channels, VAE factor, token
patch), how to build it tiny from a seed or load it full-size, its prompt encoders, its velocity call in fluxsr's
time convention, how to widen its input for an LR condition, its blocks (FSDP, checkpointing, NF4/fp8, FTD's ADL
tokens), its time embedding (MeanFlow's extra scalar inputs) and its default LoRA targets. Everything outside
``fluxsr_core/backbones/`` speaks to this record; nothing there names a base's tensors (``tests/test_layering.py``).
The record is defined in ``backbones.spec``; this module is the registry of the bases (``BASES``, ``get``).

fluxsr's convention, for every backbone: a latent z is normalised (the space the transformer works in), t ∈ [0, 1]
with t = 0 data and t = 1 noise, x_t = (1 - t)·x_0 + t·ε, and the velocity is v = dx_t/dt = ε - x_0. A backbone
whose model runs another convention (Z-Image: 1 - t, and -v) converts inside its call, and only there.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from fluxsr_core.errors import UsageError

if TYPE_CHECKING:
    from fluxsr_core.backbones.spec import Backbone

# The registry: model.backbone -> "module:attribute" of its Backbone record. Adding a base is its package and one
# line here; importing this module loads no base (and no torch), so the CLI checks a name before any work starts.
BASES = {
    "flux1-dev": "fluxsr_core.backbones.flux1:FLUX1_DEV",
    "flux1-schnell": "fluxsr_core.backbones.flux1:FLUX1_SCHNELL",
    "z-image": "fluxsr_core.backbones.zimage:Z_IMAGE",
    "flux2-klein": "fluxsr_core.backbones.flux2:FLUX2_KLEIN",
}
NAMES = tuple(BASES)  # model.backbone's values


def check_name(name: str) -> str:
    """``name`` when it is a registered backbone; a UsageError listing the known ones otherwise."""
    if name not in BASES:
        raise UsageError(f"unknown backbone {name!r}: model.backbone is one of {', '.join(sorted(BASES))}")
    return name


def get(name: str) -> Backbone:
    """The backbone ``name``; an unknown name is a UsageError listing the known ones."""
    module, attribute = BASES[check_name(name)].split(":")
    return getattr(importlib.import_module(module), attribute)

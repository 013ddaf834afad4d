"""The backbone seam: what differs between base models, as one small record of functions per base.

In the spirit of torchtitan's ``ModelSpec``: a ``Backbone`` names the base's latent space (channels, VAE factor, token
patch), how to build it tiny from a seed or load it full-size, its prompt encoders, its velocity call in fluxsr's
time convention, how to widen its input for an LR condition, its blocks (FSDP, checkpointing, NF4/fp8, FTD's ADL
tokens), its time embedding (MeanFlow's extra scalar inputs) and its default LoRA targets. Everything outside
``fluxsr_core/backbones/`` speaks to this record; nothing there names a base's tensors (``tests/test_layering.py``).
The record is defined in ``backbones.spec``; this module is the registry of the bases (``get``, ``NAMES``).

fluxsr's convention, for every backbone: a latent z is normalised (the space the transformer works in), t ∈ [0, 1]
with t = 0 data and t = 1 noise, x_t = (1 - t)·x_0 + t·ε, and the velocity is v = dx_t/dt = ε - x_0. A backbone
whose model runs another convention (Z-Image: 1 - t, and -v) converts inside its call, and only there.
"""

from __future__ import annotations

from fluxsr_core.backbones.spec import Backbone
from fluxsr_core.errors import UsageError


def _registry() -> dict[str, Backbone]:
    from fluxsr_core.backbones import flux1, flux2, zimage

    return {b.name: b for b in (*flux1.BACKBONES, *zimage.BACKBONES, *flux2.BACKBONES)}


NAMES = ("flux1-dev", "flux1-schnell", "z-image", "flux2-klein")  # model.backbone's values (config.model's Literal)


def get(name: str) -> Backbone:
    """The backbone ``name``; an unknown name is a UsageError listing the known ones."""
    known = _registry()
    if name not in known:
        raise UsageError(f"unknown backbone {name!r}: model.backbone is one of {', '.join(sorted(known))}")
    return known[name]

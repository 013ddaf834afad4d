"""Model presets: one way to get FLUX components (transformer, VAE, prompt encoder, scheduler).

``load_components(ModelConfig)`` returns the same ``FluxComponents`` for the tiny
preset (built locally from a seed) and for FLUX.1-dev (loaded through diffusers);
every stage after loading runs the same code on either.
"""

from fluxsr_core.models.presets import FluxComponents, ModelNotFoundError, load_components

__all__ = ["FluxComponents", "ModelNotFoundError", "load_components"]

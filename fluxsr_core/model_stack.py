"""The model stack (torch, diffusers' FLUX transformer and VAE, peft) imported with Python's cyclic GC paused.

Importing it allocates millions of objects (classes, functions, their dicts) that live as long as the process,
and the collector scans young objects every 700 allocations: a fifth of the import time. So the
collector is off while importing, and what the import made is then frozen (``gc.freeze``: moved to a
generation no collection scans, the interpreter's teardown included), before collection resumes.
``python bench/startup.py`` (2 cores): import 15.5 → 12.6 s, the whole process 19.5 → 13.3 s.
Every process that loads a model pays this import: the trainer (``tasks.train_worker`` calls this
first), ``fluxsr`` commands and Prefect's flow-run processes (``models.presets.load_components``).
"""

from __future__ import annotations

import gc


_imported = False


def import_model_stack() -> None:
    """Import torch, diffusers' ``FluxTransformer2DModel``/``AutoencoderKL`` and peft, once a process.

    Only the first call freezes: a later one could freeze a released model's reference cycles for good."""
    global _imported
    if _imported:
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        import diffusers.models.autoencoders.autoencoder_kl  # noqa: F401  (the package imports every VAE)
        import diffusers.models.transformers.transformer_flux  # noqa: F401
        import peft  # noqa: F401
        import torch  # noqa: F401
    finally:
        gc.freeze()
        _imported = True
        if was_enabled:
            gc.enable()

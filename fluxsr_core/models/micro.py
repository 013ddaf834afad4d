"""The micro preset: a transformer of the backbone's architecture small enough to train from scratch on 2 CPU cores,
in the real FLUX.1 latent space (TAEF1: 16 channels, 8x).

The backbone builds it (``Backbone.build_micro``: FLUX.1-dev's class and code path, 4 heads of 32, 2 double- and 4
single-stream blocks). Its weights start from a seed; the train-base stage (``--method base``) pretrains them on
HR photo latents, and ``model.path`` names the resulting model folder, whose weights then replace the seeded
ones: the base every later stage runs.
"""

from __future__ import annotations


def load_base(transformer, path) -> str:
    """Set ``transformer`` to the weights of the train-base model folder ``path``; returns its digest (the base's
    identity). A folder of another method or architecture is an error naming it."""
    from fluxsr_core import model_folder
    from fluxsr_core.models.lora import full_modules

    info = model_folder.read_info(path)
    folder = model_folder.model_dir(path)
    if info.method != "base":
        raise model_folder.ModelMismatchError(f"model.path {folder} is a {info.method} model; the micro preset's "
                                              "model.path is a base pretrained by `fluxsr train --method base`")
    if info.base.get("architecture_digest") != model_folder.architecture_digest(transformer):
        raise model_folder.ModelMismatchError(f"model.path {folder} was pretrained on another architecture "
                                              f"({info.base.get('architecture_digest')}) than the micro preset's")
    model_folder.load_module_state(full_modules(transformer), folder / model_folder.MODULES_FILE)
    return model_folder.model_digest(folder)

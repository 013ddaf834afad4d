"""The micro preset: a FLUX.1-architecture transformer small enough to train from scratch on 2 CPU cores, in the
real FLUX.1 latent space (TAEF1: 16 channels, 8x).

Same class and code path as FLUX.1-dev (``FluxTransformer2DModel`` with guidance embedding, 2x2 packed tokens,
FLUX's rotary ids and scheduler); only the width and depth are small: 4 heads of 32 (hidden 128), 2 double-stream
and 4 single-stream blocks, a 64-wide text condition (the empty prompt, a constant). Its weights start from a
seed; the train-base stage (``--method base``) pretrains them on HR photo latents, and ``model.path`` names the
resulting model folder, whose weights then replace the seeded ones: the base every later stage runs.
"""

from __future__ import annotations

import torch

TRANSFORMER_CONFIG = dict(
    patch_size=1, in_channels=64, out_channels=None, num_layers=2, num_single_layers=4,
    attention_head_dim=32, num_attention_heads=4, joint_attention_dim=64,
    pooled_projection_dim=64, guidance_embeds=True, axes_dims_rope=(8, 12, 12),
)

# FLUX.1-dev's scheduler settings (the tiny preset's too): the shift follows the token count
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
    base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
)

PROMPT_TOKENS = 4


def build(seed: int):
    """(transformer, scheduler) in float32 on CPU, weights drawn from ``seed`` (the VAE is TAEF1's)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    with torch.random.fork_rng(devices=[]):  # building never disturbs the caller's stream
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(**TRANSFORMER_CONFIG)
    return transformer.eval(), FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)


def load_base(transformer, path) -> str:
    """Set ``transformer`` to the weights of the train-base model folder ``path``; returns its digest (the base's
    identity). A folder of another method or architecture is an error naming it."""
    from fluxsr_core import model_folder
    from fluxsr_core.train.lora import full_modules

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

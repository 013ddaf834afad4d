"""The tiny preset: FLUX-architecture models built locally from small configs and a seed.

Same classes as FLUX.1-dev (``FluxTransformer2DModel`` with guidance embedding,
``AutoencoderKL`` with 16 latent channels and factor 8), small enough to train
and sample on 2 CPU cores. Built deterministically: the same seed gives the same
weights on any machine with the same torch version.
"""

from __future__ import annotations

import torch

TRANSFORMER_CONFIG = dict(
    patch_size=1, in_channels=64, out_channels=None, num_layers=2, num_single_layers=2,
    attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
    pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 4, 8),
)

VAE_CONFIG = dict(
    in_channels=3, out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 8, 16, 16), layers_per_block=1, act_fn="silu",
    latent_channels=16, norm_num_groups=4, sample_size=128,
    scaling_factor=0.3611, shift_factor=0.1159,
    use_quant_conv=False, use_post_quant_conv=False,
)

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
    base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
)

PROMPT_TOKENS = 16


def build(seed: int):
    """(transformer, vae, scheduler) in float32 on CPU, weights drawn from ``seed``."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    devices = []  # fork the global RNG so building never disturbs the caller's stream
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(**TRANSFORMER_CONFIG)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**VAE_CONFIG)
    return transformer.eval(), vae.eval(), FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)

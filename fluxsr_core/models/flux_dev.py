"""FLUX.1-dev: the real configuration values and the diffusers loading code.

The configs are those of black-forest-labs/FLUX.1-dev (transformer, VAE,
scheduler), so the full architecture can also be built with random weights for
benchmarks where the weights cannot be downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

FLUX_DEV_HUB_ID = "black-forest-labs/FLUX.1-dev"

TRANSFORMER_CONFIG = dict(
    patch_size=1, in_channels=64, out_channels=None, num_layers=19, num_single_layers=38,
    attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
    pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
)

VAE_CONFIG = dict(
    in_channels=3, out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, act_fn="silu",
    latent_channels=16, norm_num_groups=32, sample_size=1024,
    scaling_factor=0.3611, shift_factor=0.1159,
    use_quant_conv=False, use_post_quant_conv=False, force_upcast=True,
)

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
    base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
)

DEFAULT_GUIDANCE = 3.5
DEFAULT_STEPS = 28
MAX_SEQUENCE_LENGTH = 512


def random_transformer(dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu"):
    """The full FLUX.1-dev transformer architecture with random weights (benchmarks only)."""
    from diffusers import FluxTransformer2DModel

    with torch.device(device):
        return FluxTransformer2DModel(**TRANSFORMER_CONFIG).to(dtype)


def load_pretrained(path: str, *, dtype: torch.dtype, device: torch.device, local_files_only: bool,
                    transformer_device: torch.device | None = None):
    """Load transformer, VAE, scheduler and text encoders of FLUX.1-dev from a hub id or directory (the
    transformer to ``transformer_device``, default ``device``: the CPU when it is quantised or offloaded next)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    kw = dict(local_files_only=local_files_only)
    transformer = FluxTransformer2DModel.from_pretrained(path, subfolder="transformer", torch_dtype=dtype, **kw)
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype, **kw)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(path, subfolder="scheduler", **kw)
    return transformer.to(transformer_device or device), vae.to(device), scheduler


def looks_like_local(path: str) -> bool:
    """A path (not a hub id): absolute, relative with ./ or ../, or an existing directory."""
    return path.startswith(("/", "./", "../", "~")) or Path(path).exists()

"""FLUX.1's configurations: the real ones of black-forest-labs/FLUX.1-dev and -schnell, and the small ones fluxsr
builds from a seed (tiny: every test; micro: trained from scratch on 2 CPU cores in TAEF1's latent space).

The full-size values let the architecture be built with random weights (``fluxsr plan``, benchmarks) where the
weights cannot be downloaded.
"""

from __future__ import annotations

FLUX_DEV_HUB_ID = "black-forest-labs/FLUX.1-dev"
FLUX_SCHNELL_HUB_ID = "black-forest-labs/FLUX.1-schnell"

TRANSFORMER_CONFIG = dict(  # FLUX.1-dev
    patch_size=1, in_channels=64, out_channels=None, num_layers=19, num_single_layers=38,
    attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
    pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
)
SCHNELL_TRANSFORMER_CONFIG = dict(TRANSFORMER_CONFIG, guidance_embeds=False)  # guidance-distilled away

VAE_CONFIG = dict(
    in_channels=3, out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, act_fn="silu",
    latent_channels=16, norm_num_groups=32, sample_size=1024,
    scaling_factor=0.3611, shift_factor=0.1159,
    use_quant_conv=False, use_post_quant_conv=False, force_upcast=True,
)

SCHEDULER_CONFIG = dict(  # dev: the shift follows the token count
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
    base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
)
SCHNELL_SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)

DEFAULT_GUIDANCE = 3.5
DEFAULT_STEPS = 28
MAX_SEQUENCE_LENGTH = 512

TINY_TRANSFORMER_CONFIG = dict(
    patch_size=1, in_channels=64, out_channels=None, num_layers=2, num_single_layers=2,
    attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
    pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 4, 8),
)
TINY_VAE_CONFIG = dict(
    in_channels=3, out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 8, 16, 16), layers_per_block=1, act_fn="silu",
    latent_channels=16, norm_num_groups=4, sample_size=128,
    scaling_factor=0.3611, shift_factor=0.1159,
    use_quant_conv=False, use_post_quant_conv=False,
)
TINY_PROMPT_TOKENS = 16

# micro: 4 heads of 32 (hidden 128), 2 double-stream and 4 single-stream blocks, a 64-wide text condition (the
# empty prompt, a constant); FLUX.1-dev's scheduler
MICRO_TRANSFORMER_CONFIG = dict(
    patch_size=1, in_channels=64, out_channels=None, num_layers=2, num_single_layers=4,
    attention_head_dim=32, num_attention_heads=4, joint_attention_dim=64,
    pooled_projection_dim=64, guidance_embeds=True, axes_dims_rope=(8, 12, 12),
)
MICRO_PROMPT_TOKENS = 4

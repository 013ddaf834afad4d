"""FLUX.1 (dev and schnell): ``FluxTransformer2DModel``, the 16-channel ``AutoencoderKL``, 2x2 packed tokens with
3-column ids, CLIP-L + T5 prompts; dev has a guidance embedding and a resolution-shifted schedule, schnell neither.
(Conventions as read from diffusers' ``FluxPipeline``: ``docs/backbones.md`` section 1.)"""

from __future__ import annotations

import torch

from fluxsr_core.backbones.spec import Backbone
from fluxsr_core.backbones.common import TextPipeline, append_zero_columns, load_folder, unloaded
from fluxsr_core.backbones.flux1 import configs
from fluxsr_core.backbones.flux1.tokens import PATCH, PackedVelocity

INPUT_PROJECTION = "x_embedder"
LORA_TARGETS = ("attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0", "attn.add_k_proj", "attn.add_q_proj",
                "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                "ff_context.net.2")


def _seeded(build, seed: int):
    with torch.random.fork_rng(devices=[]):  # building never disturbs the caller's stream
        torch.manual_seed(seed)
        return build()


def build_tiny(seed: int, guidance_embeds: bool = True):
    """(transformer, vae, scheduler) in float32 on CPU, weights drawn from ``seed``: FLUX.1's classes, tiny sizes."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    config = dict(configs.TINY_TRANSFORMER_CONFIG, guidance_embeds=guidance_embeds)
    transformer = _seeded(lambda: FluxTransformer2DModel(**config), seed)
    vae = _seeded(lambda: AutoencoderKL(**configs.TINY_VAE_CONFIG), seed + 1)
    scheduler = configs.SCHEDULER_CONFIG if guidance_embeds else configs.SCHNELL_SCHEDULER_CONFIG
    return transformer.eval(), vae.eval(), FlowMatchEulerDiscreteScheduler(**scheduler)


def build_micro(seed: int):
    """(transformer, scheduler) of the micro preset in float32 on CPU, from ``seed`` (its VAE is TAEF1)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    transformer = _seeded(lambda: FluxTransformer2DModel(**configs.MICRO_TRANSFORMER_CONFIG), seed)
    return transformer.eval(), FlowMatchEulerDiscreteScheduler(**configs.SCHEDULER_CONFIG)


def build_unloaded(size: str, overrides: dict | None = None, guidance_embeds: bool = True):
    """(transformer, vae, scheduler, empty text condition) of the tiny or full size from the configs, on the
    current default device and dtype (``fluxsr plan`` on meta: nothing read or allocated)."""
    tiny = size == "tiny"
    tc = {**(configs.TINY_TRANSFORMER_CONFIG if tiny else configs.TRANSFORMER_CONFIG),
          "guidance_embeds": guidance_embeds, **(overrides or {})}
    tokens = configs.TINY_PROMPT_TOKENS if tiny else configs.MAX_SEQUENCE_LENGTH
    return unloaded("FluxTransformer2DModel", tc, "AutoencoderKL",
                    configs.TINY_VAE_CONFIG if tiny else configs.VAE_CONFIG,
                    configs.SCHEDULER_CONFIG if guidance_embeds else configs.SCHNELL_SCHEDULER_CONFIG,
                    (tokens, tc["joint_attention_dim"], tc["pooled_projection_dim"]))


def random_transformer(config: dict = configs.TRANSFORMER_CONFIG, dtype: torch.dtype = torch.bfloat16,
                       device: str | torch.device = "cpu"):
    """A full-size FLUX.1 transformer with random weights (benchmarks and plans: no download)."""
    from diffusers import FluxTransformer2DModel

    with torch.device(device):
        return FluxTransformer2DModel(**config).to(dtype)


def load(path: str, **kw):
    """Transformer, VAE and scheduler of a FLUX.1 diffusers folder or hub id."""
    return load_folder(path, "FluxTransformer2DModel", "AutoencoderKL", **kw)


class FluxTextEncoders(TextPipeline):
    """CLIP + T5 of a FLUX.1 folder, encoding via ``FluxPipeline.encode_prompt``."""

    pipeline = "FluxPipeline"

    @torch.no_grad()
    def encode(self, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, pooled, _ = self._pipeline(device).encode_prompt(
            prompt=prompts, prompt_2=None, device=device, max_sequence_length=configs.MAX_SEQUENCE_LENGTH)
        return embeds, pooled


def widen_input(transformer, extra_channels: int) -> None:
    """Widen ``x_embedder`` by ``extra_channels`` latent channels (4 packed columns each) with zero weights: exactly
    what diffusers' LoRA loader does for FLUX Control LoRAs."""
    append_zero_columns(transformer, INPUT_PROJECTION, extra_channels * PATCH * PATCH)


def has_guidance(transformer) -> bool:
    return bool(transformer.config.guidance_embeds)


def time_embedding(transformer) -> tuple[torch.nn.Module, int]:
    """``time_text_embed`` (timestep, guidance and pooled text, summed): its output conditions every block."""
    return transformer.time_text_embed, transformer.config.num_attention_heads * transformer.config.attention_head_dim


def blocks(transformer) -> list[torch.nn.Module]:
    """The double- and single-stream blocks, in order."""
    return list(transformer.transformer_blocks) + list(transformer.single_transformer_blocks)


def block_image_tokens(output) -> torch.Tensor:
    """Both FLUX.1 block types return ``(encoder_hidden_states, hidden_states)``: the image tokens are the second."""
    return output[1] if isinstance(output, tuple) else output


def sampling_sigmas(scheduler, tokens: int, steps: int) -> tuple[list[float], dict]:
    """FluxPipeline's schedule: sigmas linspace(1, 1/n, n), and with dynamic shifting the resolution's mu."""
    import numpy as np

    sigmas = np.linspace(1.0, 1.0 / steps, steps).tolist()
    cfg = scheduler.config
    if not cfg.get("use_dynamic_shifting", False):
        return sigmas, {}
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    return sigmas, {"mu": calculate_shift(tokens, cfg.get("base_image_seq_len", 256),
                                          cfg.get("max_image_seq_len", 4096), cfg.get("base_shift", 0.5),
                                          cfg.get("max_shift", 1.15))}


def _velocity_call(transformer, height, width, cond, batch, guidance=None, device=None) -> PackedVelocity:
    return PackedVelocity(transformer, height, width, cond, batch, guidance, device=device)


_COMMON = dict(
    transformer_class="FluxTransformer2DModel", pipeline="FluxPipeline", latent_channels=16, vae_factor=8,
    token_patch=PATCH,
    lora_targets=LORA_TARGETS, condition_module=INPUT_PROJECTION, load=load,
    text_encoders=FluxTextEncoders,
    velocity_call=_velocity_call, widen_input=widen_input, has_guidance=has_guidance, time_embedding=time_embedding,
    blocks=blocks, block_image_tokens=block_image_tokens, sampling_sigmas=sampling_sigmas,
    tiny_prompt=(configs.TINY_TRANSFORMER_CONFIG["joint_attention_dim"],
                 configs.TINY_TRANSFORMER_CONFIG["pooled_projection_dim"], configs.TINY_PROMPT_TOKENS),
)

FLUX1_DEV = Backbone(
    name="flux1-dev", description="FLUX.1-dev (12 B, guidance-distilled: guidance embedding; non-commercial licence)",
    hub_id=configs.FLUX_DEV_HUB_ID, licence="flux-1-dev-non-commercial-license", build_tiny=build_tiny,
    build_unloaded=build_unloaded,
    build_micro=build_micro,
    micro_prompt=(configs.MICRO_TRANSFORMER_CONFIG["joint_attention_dim"],
                  configs.MICRO_TRANSFORMER_CONFIG["pooled_projection_dim"], configs.MICRO_PROMPT_TOKENS),
    **_COMMON)
FLUX1_SCHNELL = Backbone(
    name="flux1-schnell", description="FLUX.1-schnell (12 B, timestep-distilled: no guidance embedding, unshifted "
                                      "schedule; Apache-2.0)",
    hub_id=configs.FLUX_SCHNELL_HUB_ID, licence="apache-2.0",
    build_tiny=lambda seed: build_tiny(seed, guidance_embeds=False),
    build_unloaded=lambda size, overrides=None: build_unloaded(size, overrides, guidance_embeds=False), **_COMMON)

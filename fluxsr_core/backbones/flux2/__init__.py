"""FLUX.2 [klein] (Black Forest Labs, 4 B, Apache-2.0): ``Flux2Transformer2DModel`` on the 32-channel
``AutoencoderKLFlux2``.

Its latent, as ``Flux2KleinPipeline`` prepares it (``docs/backbones.md`` section 2), is the VAE's raw latent
patchified 2x2 to 128 channels at 1/16 of the image and normalised by the VAE's BatchNorm running statistics
(never by a scale and shift: the VAE has none): that tensor is fluxsr's latent for this backbone (128 channels,
VAE factor 16, one token per latent pixel). Tokens are its row-major flattening with 4-column ids (t, h, w, l);
time and velocity are fluxsr's (σ, ε - x_0); the pipeline passes no guidance (the distilled klein has no
embedding). Text features are Qwen3 layers 9/18/27 side by side, no pooled vector.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from fluxsr_core.backbones.spec import Backbone
from fluxsr_core.backbones.common import TextPipeline, append_zero_columns, load_folder, unloaded

HUB_ID = "black-forest-labs/FLUX.2-klein-4B"
INPUT_PROJECTION = "x_embedder"
# double blocks: attention and both MLPs; single blocks: their fused qkv + MLP input (their output projection is
# also called ``attn.to_out``, a name the double blocks give a ModuleList, so a suffix cannot single it out)
LORA_TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                "attn.add_v_proj", "attn.to_add_out", "ff.linear_in", "ff.linear_out", "ff_context.linear_in",
                "ff_context.linear_out", "attn.to_qkv_mlp_proj")

TRANSFORMER_CONFIG = dict(  # klein 4B (third-party figures: 5 double, 20 single blocks; Qwen3-4B: 3 x 2560)
    patch_size=1, in_channels=128, out_channels=None, num_layers=5, num_single_layers=20, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=7680, timestep_guidance_channels=256, mlp_ratio=3.0,
    axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, eps=1e-6, guidance_embeds=False)
VAE_CONFIG = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    latent_channels=32, norm_num_groups=32, sample_size=1024, batch_norm_eps=1e-4, patch_size=(2, 2))
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential")

TINY_TRANSFORMER_CONFIG = dict(
    patch_size=1, in_channels=128, out_channels=None, num_layers=1, num_single_layers=2, attention_head_dim=16,
    num_attention_heads=2, joint_attention_dim=48, timestep_guidance_channels=32, mlp_ratio=3.0,
    axes_dims_rope=(4, 4, 4, 4), rope_theta=2000, eps=1e-6, guidance_embeds=False)
TINY_VAE_CONFIG = dict(VAE_CONFIG, block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4,
                       sample_size=128)
TINY_PROMPT_TOKENS = 8
MAX_SEQUENCE_LENGTH = 512


def _tiny_vae(seed: int):
    from diffusers import AutoencoderKLFlux2

    vae = AutoencoderKLFlux2(**TINY_VAE_CONFIG)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # statistics of its own, so that normalising is not the identity
        vae.bn.running_mean.copy_(0.1 * torch.randn(vae.bn.running_mean.shape, generator=g))
        vae.bn.running_var.copy_(0.5 + torch.rand(vae.bn.running_var.shape, generator=g))
    return vae


def build_tiny(seed: int):
    """(transformer, vae, scheduler) in float32 on CPU from ``seed``: FLUX.2's classes at a tiny size."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2Transformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = Flux2Transformer2DModel(**TINY_TRANSFORMER_CONFIG)
        torch.manual_seed(seed + 1)
        vae = _tiny_vae(seed + 1)
    return transformer.eval(), vae.eval(), FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)


def build_unloaded(size: str, overrides: dict | None = None):
    """(transformer, vae, scheduler, empty text condition) from the configs on the current default device and
    dtype (``fluxsr plan`` on meta)."""
    tiny = size == "tiny"
    tc = {**(TINY_TRANSFORMER_CONFIG if tiny else TRANSFORMER_CONFIG), **(overrides or {})}
    tokens = TINY_PROMPT_TOKENS if tiny else MAX_SEQUENCE_LENGTH
    return unloaded("Flux2Transformer2DModel", tc, "AutoencoderKLFlux2", TINY_VAE_CONFIG if tiny else VAE_CONFIG,
                    SCHEDULER_CONFIG, (tokens, tc["joint_attention_dim"], 1))


def load(path: str, **kw):
    """Transformer, VAE and scheduler of a FLUX.2 [klein] diffusers folder or hub id."""
    return load_folder(path, "Flux2Transformer2DModel", "AutoencoderKLFlux2", **kw)


class KleinTextEncoder(TextPipeline):
    """Qwen3 of a klein folder through ``Flux2KleinPipeline.encode_prompt``; a placeholder pooled vector (FLUX.2
    has none)."""

    pipeline = "Flux2KleinPipeline"

    @torch.no_grad()
    def encode(self, prompts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, _ = self._pipeline(device).encode_prompt(prompt=prompts, device=device)
        return embeds, torch.zeros(len(prompts), 1, device=device, dtype=embeds.dtype)


def patchify(raw: torch.Tensor) -> torch.Tensor:
    """(B, 32, H, W) -> (B, 128, H/2, W/2), channel c·4 + ph·2 + pw (``Flux2KleinPipeline._patchify_latents``)."""
    b, c, h, w = raw.shape
    return raw.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h // 2, w // 2)


def unpatchify(p: torch.Tensor) -> torch.Tensor:
    """The inverse of ``patchify``."""
    b, c4, h, w = p.shape
    return p.view(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, h * 2, w * 2)


def _bn(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = vae.bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(like.device, like.dtype)
    return mean, std


def to_latent(vae, raw: torch.Tensor) -> torch.Tensor:
    """The VAE's raw latent -> fluxsr's: patchified, then (p - running_mean) / sqrt(running_var + eps)."""
    p = patchify(raw)
    mean, std = _bn(vae, p)
    return (p - mean) / std


def from_latent(vae, z: torch.Tensor) -> torch.Tensor:
    """fluxsr's latent -> the VAE's raw latent (what ``vae.decode`` takes)."""
    mean, std = _bn(vae, z)
    return unpatchify(z * std + mean)


def pack(z: torch.Tensor) -> torch.Tensor:
    """(B, 128, h, w) -> (B, h·w, 128), row-major (``Flux2KleinPipeline._pack_latents``)."""
    return z.flatten(2).transpose(1, 2)


def image_ids(height: int, width: int, device=None) -> torch.Tensor:
    """(h·w, 4) int64 rows (t = 0, row, col, l = 0), row-major (``Flux2KleinPipeline._prepare_latent_ids``)."""
    rows, cols = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device),
                                indexing="ij")
    zeros = torch.zeros_like(rows)
    return torch.stack([zeros, rows, cols, zeros], dim=-1).reshape(height * width, 4)


def text_ids(tokens: int, device=None) -> torch.Tensor:
    """(L, 4) int64 rows (0, 0, 0, l): the text position on the fourth axis (``_prepare_text_ids``)."""
    ids = torch.zeros(tokens, 4, dtype=torch.int64, device=device)
    ids[:, 3] = torch.arange(tokens, device=device)
    return ids


class PackedVelocity:
    """The FLUX.2 transformer on packed tokens, ids and text prepared once (no guidance input, as the pipeline)."""

    def __init__(self, transformer, height: int, width: int, cond, batch: int, guidance=None, device=None):
        self.transformer, self.dtype, self.height, self.width = transformer, transformer.dtype, height, width
        self.embeds = cond.expand(batch).embeds.to(device=device, dtype=self.dtype)
        self.img_ids = image_ids(height, width, device=device).expand(batch, -1, -1)
        self.txt_ids = text_ids(self.embeds.shape[1], device=device).expand(batch, -1, -1)

    def pack(self, z: torch.Tensor) -> torch.Tensor:
        return pack(z)

    def unpack(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, c = tokens.shape
        return tokens.transpose(1, 2).reshape(b, c, self.height, self.width)

    def rope_once(self):
        return nullcontext()

    def __call__(self, tokens: torch.Tensor, t: torch.Tensor, control: torch.Tensor | None = None) -> torch.Tensor:
        if control is not None:
            tokens = torch.cat([tokens, control.to(tokens.dtype)], dim=2)
        return self.transformer(hidden_states=tokens.to(self.dtype), encoder_hidden_states=self.embeds,
                                timestep=t.to(device=tokens.device, dtype=self.dtype), img_ids=self.img_ids,
                                txt_ids=self.txt_ids, guidance=None, return_dict=False)[0]


def widen_input(transformer, extra_channels: int) -> None:
    """Widen ``x_embedder`` (no bias) by ``extra_channels`` token features with zero weights, the LR condition's
    tokens concatenated after the state's."""
    append_zero_columns(transformer, INPUT_PROJECTION, extra_channels)


def time_embedding(transformer) -> tuple[torch.nn.Module, int]:
    """``time_guidance_embed``: its output is the modulations' input for every block."""
    return transformer.time_guidance_embed, transformer.inner_dim


def blocks(transformer) -> list[torch.nn.Module]:
    return [*transformer.transformer_blocks, *transformer.single_transformer_blocks]


def block_image_tokens(output) -> torch.Tensor:
    """Double blocks return (text, image); a single block returns the joint stream (text, then image tokens)."""
    return output[1] if isinstance(output, tuple) else output


def sampling_sigmas(scheduler, tokens: int, steps: int) -> tuple[list[float], dict]:
    """Flux2KleinPipeline's schedule: sigmas linspace(1, 1/n, n) and mu from the token and step counts."""
    import numpy as np
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    sigmas = np.linspace(1.0, 1.0 / steps, steps).tolist()
    if not scheduler.config.get("use_dynamic_shifting", False):
        return sigmas, {}
    return sigmas, {"mu": compute_empirical_mu(tokens, steps)}


FLUX2_KLEIN = Backbone(
    name="flux2-klein", description="FLUX.2 [klein] 4B (no guidance embedding; Apache-2.0)",
    transformer_class="Flux2Transformer2DModel", pipeline="Flux2KleinPipeline", hub_id=HUB_ID, licence="apache-2.0",
    latent_channels=128, vae_factor=16, token_patch=1, lora_targets=LORA_TARGETS,
    condition_module=INPUT_PROJECTION, build_tiny=build_tiny, tiny_prompt=(48, 1, TINY_PROMPT_TOKENS), load=load,
    text_encoders=KleinTextEncoder, velocity_call=PackedVelocity,
    widen_input=widen_input, has_guidance=lambda transformer: False, time_embedding=time_embedding, blocks=blocks,
    block_image_tokens=block_image_tokens, sampling_sigmas=sampling_sigmas, build_unloaded=build_unloaded,
    to_latent=to_latent, from_latent=from_latent)

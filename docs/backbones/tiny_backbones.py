"""Tiny random configs for the four bases: build, one forward, JVP under SDPA math, timing.
Run: OMP_NUM_THREADS=1 .venv/bin/python docs/backbones/tiny_backbones.py"""
import time, json
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
torch.set_num_threads(1)
from diffusers import FluxTransformer2DModel, Flux2Transformer2DModel, ZImageTransformer2DModel

FLUX1_DEV = dict(patch_size=1, in_channels=64, out_channels=None, num_layers=1, num_single_layers=1,
                 attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                 pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 4, 8))
FLUX1_SCHNELL = dict(FLUX1_DEV, guidance_embeds=False)
FLUX2_KLEIN = dict(patch_size=1, in_channels=128, out_channels=None, num_layers=1, num_single_layers=1,
                   attention_head_dim=16, num_attention_heads=2, joint_attention_dim=48,
                   timestep_guidance_channels=32, mlp_ratio=3.0, axes_dims_rope=(4, 4, 4, 4),
                   rope_theta=2000, eps=1e-6, guidance_embeds=False)
ZIMAGE = dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=1,
              n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=16,
              rope_theta=256.0, t_scale=1000.0, axes_dims=[8, 4, 4], axes_lens=[128, 32, 32])

B, H, W, T = 2, 8, 8, 7  # unpacked latent H, W (latent pixels), text tokens


def flux1_inputs(m, guidance):
    g = torch.Generator().manual_seed(0)
    from diffusers import FluxPipeline
    z = torch.randn(B, 16, H, W, generator=g)
    tokens = FluxPipeline._pack_latents(z, B, 16, H, W)  # (B, H/2*W/2, 64)
    kw = dict(encoder_hidden_states=torch.randn(B, T, 32, generator=g),
              pooled_projections=torch.randn(B, 32, generator=g),
              img_ids=FluxPipeline._prepare_latent_image_ids(B, H // 2, W // 2, "cpu", torch.float32),  # (N, 3)
              txt_ids=torch.zeros(T, 3),
              guidance=torch.full((B,), 3.5) if guidance else None, return_dict=False)
    return tokens, torch.full((B,), 0.7), kw


def flux2_inputs(m):
    g = torch.Generator().manual_seed(0)
    from diffusers import Flux2KleinPipeline as P
    z = torch.randn(B, 32, H, W, generator=g)  # raw VAE latent, 32 ch
    zp = P._patchify_latents(z)  # (B, 128, H/2, W/2)
    tokens = P._pack_latents(zp)  # (B, N, 128)
    emb = torch.randn(B, T, 48, generator=g)
    kw = dict(encoder_hidden_states=emb, img_ids=P._prepare_latent_ids(zp),  # (B, N, 4) int64
              txt_ids=P._prepare_text_ids(emb),  # (B, T, 4) int64
              guidance=None, return_dict=False)
    return tokens, torch.full((B,), 0.7), kw


def zimage_inputs(m):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(B, 16, H, W, generator=g)
    x = list(z.unsqueeze(2).unbind(0))  # list of (C, F=1, H, W)
    caps = [torch.randn(T, 16, generator=g), torch.randn(T + 3, 16, generator=g)]  # variable length
    return x, torch.full((B,), 0.3), dict(cap_feats=caps, return_dict=False)


def run(name, cls, cfg, make):
    torch.manual_seed(0)
    t0 = time.perf_counter(); m = cls(**cfg).eval(); t_build = time.perf_counter() - t0
    x, t, kw = make(m)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = m(x, t, **kw)[0] if name == "z-image" else m(hidden_states=x, timestep=t, **kw)[0]
    t_fwd = time.perf_counter() - t0
    shape = [tuple(o.shape) for o in out] if isinstance(out, list) else tuple(out.shape)
    # JVP in (x, t) under SDPA math
    try:
        if name == "z-image":
            xs = torch.stack(x)
            f = lambda xx, tt: torch.stack(m(list(xx.unbind(0)), tt, **kw)[0])
            prim, tang = (xs, t), (torch.randn_like(xs), torch.ones_like(t))
        else:
            f = lambda xx, tt: m(hidden_states=xx, timestep=tt, **kw)[0]
            prim, tang = (x, t), (torch.randn_like(x), torch.ones_like(t))
        with sdpa_kernel(SDPBackend.MATH):
            y, dy = torch.func.jvp(f, prim, tang)
        # finite-difference check of the JVP
        eps = 1e-3
        with torch.no_grad():
            fd = (f(prim[0] + eps * tang[0], prim[1] + eps * tang[1]) - f(prim[0] - eps * tang[0], prim[1] - eps * tang[1])) / (2 * eps)
        jvp = f"yes (max|jvp-fd|={float((dy - fd).abs().max()):.2e}, max|jvp|={float(dy.abs().max()):.2e})"
    except Exception as e:  # noqa
        jvp = f"no: {type(e).__name__}: {str(e)[:300]}"
    try:  # JVP without forcing math backend
        with torch.no_grad():
            torch.func.jvp(f, prim, tang)
        jvp_default = "yes"
    except Exception as e:
        jvp_default = f"no: {type(e).__name__}: {str(e)[:160]}"
    nparams = sum(p.numel() for p in m.parameters())
    print(json.dumps(dict(base=name, params=nparams, build_s=round(t_build, 3), fwd_s=round(t_fwd, 3),
                          out_shape=str(shape), jvp_math=jvp, jvp_default_sdpa_cpu=jvp_default)))
    return m


if __name__ == "__main__":
    print(torch.__version__)
    run("flux1-dev", FluxTransformer2DModel, FLUX1_DEV, lambda m: flux1_inputs(m, True))
    run("flux1-schnell", FluxTransformer2DModel, FLUX1_SCHNELL, lambda m: flux1_inputs(m, False))
    run("flux2-klein", Flux2Transformer2DModel, FLUX2_KLEIN, flux2_inputs)
    run("z-image", ZImageTransformer2DModel, ZIMAGE, zimage_inputs)

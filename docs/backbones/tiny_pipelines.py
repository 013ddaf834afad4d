"""Run each diffusers pipeline offline with tiny random components and no text encoder; check one Euler
step of the pipeline against plain formulas. OMP_NUM_THREADS=1 python tiny_pipelines.py"""
import math, json
import numpy as np, torch
torch.set_num_threads(1)
import tiny_backbones as tb
from diffusers import (AutoencoderKL, AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, FluxPipeline,
                       Flux2KleinPipeline, FluxTransformer2DModel, Flux2Transformer2DModel, ZImagePipeline,
                       ZImageTransformer2DModel)

VAE16 = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
             up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
             latent_channels=16, norm_num_groups=4, sample_size=128, scaling_factor=0.3611, shift_factor=0.1159,
             use_quant_conv=False, use_post_quant_conv=False)
VAE32 = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
             up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
             latent_channels=32, norm_num_groups=4, sample_size=128, batch_norm_eps=1e-4, patch_size=(2, 2))
SCHED = {
    "flux1-dev": dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                      base_image_seq_len=256, max_image_seq_len=4096),
    "flux1-schnell": dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False),
    "flux2-klein": dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, time_shift_type="exponential"),
    "z-image": dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False),
}
B, PX, N_STEPS, T = 1, 64, 3, 7
captured = []
def grab(pipe, i, t, kw):
    captured.append((float(t), kw["latents"].clone(), pipe.scheduler.sigmas.clone()))
    return {}

def expected_sigmas(name, seq_len, n):
    s = np.linspace(1.0, 1 / n, n)
    cfg = SCHED[name]
    if name == "flux1-dev":
        m = (1.15 - 0.5) / (4096 - 256); mu = seq_len * m + 0.5 - m * 256
        s = math.exp(mu) / (math.exp(mu) + (1 / s - 1) ** 1.0)
    elif name == "flux2-klein":
        from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu
        mu = compute_empirical_mu(seq_len, n); s = math.exp(mu) / (math.exp(mu) + (1 / s - 1))
    else:
        sh = cfg["shift"]; s = sh * s / (1 + (sh - 1) * s)
    return np.append(s, 0.0)

def report(name, x0, x1_pipe, x1_manual, sig_pipe, sig_exp, out_shape):
    print(json.dumps(dict(base=name, step0_maxdiff=float((x1_pipe - x1_manual).abs().max()),
                          sigmas_pipe=[round(float(v), 5) for v in sig_pipe],
                          sigmas_formula=[round(float(v), 5) for v in sig_exp], latent_output_shape=str(out_shape))))

torch.manual_seed(0)
g = torch.Generator().manual_seed(1)
# ---- FLUX.1 dev / schnell
for name, cfg in [("flux1-dev", tb.FLUX1_DEV), ("flux1-schnell", tb.FLUX1_SCHNELL)]:
    captured.clear()
    tr = FluxTransformer2DModel(**cfg).eval(); vae = AutoencoderKL(**VAE16).eval()
    sch = FlowMatchEulerDiscreteScheduler(**SCHED[name])
    pipe = FluxPipeline(scheduler=sch, vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=tr)
    pe, pp = torch.randn(B, T, 32, generator=g), torch.randn(B, 32, generator=g)
    h = PX // 8
    x0 = FluxPipeline._pack_latents(torch.randn(B, 16, h, h, generator=g), B, 16, h, h)  # latents must be PACKED
    out = pipe(prompt_embeds=pe, pooled_prompt_embeds=pp, height=PX, width=PX, num_inference_steps=N_STEPS,
               guidance_scale=3.5, latents=x0, output_type="latent", callback_on_step_end=grab).images
    img = pipe(prompt_embeds=pe, pooled_prompt_embeds=pp, height=PX, width=PX, num_inference_steps=1,
               latents=x0, output_type="np").images
    s = captured[0][2]
    with torch.no_grad():
        v = tr(hidden_states=x0, timestep=torch.full((B,), float(s[0])), encoder_hidden_states=pe, pooled_projections=pp,
               img_ids=FluxPipeline._prepare_latent_image_ids(B, h // 2, h // 2, "cpu", torch.float32),
               txt_ids=torch.zeros(T, 3), guidance=torch.full((B,), 3.5) if cfg["guidance_embeds"] else None,
               return_dict=False)[0]
    report(name, x0, captured[0][1], x0 + (s[1] - s[0]) * v, s, expected_sigmas(name, x0.shape[1], N_STEPS), out.shape)
    print(name, "decoded np image", img.shape)

# ---- FLUX.2 klein
captured.clear()
tr = Flux2Transformer2DModel(**tb.FLUX2_KLEIN).eval(); vae = AutoencoderKLFlux2(**VAE32).eval()
with torch.no_grad():  # non-trivial BN statistics so the (de)normalisation is visible
    vae.bn.running_mean.copy_(torch.randn(128, generator=g) * 0.1); vae.bn.running_var.copy_(torch.rand(128, generator=g) + 0.5)
sch = FlowMatchEulerDiscreteScheduler(**SCHED["flux2-klein"])
pipe = Flux2KleinPipeline(scheduler=sch, vae=vae, text_encoder=None, tokenizer=None, transformer=tr, is_distilled=True)
pe = torch.randn(B, T, 48, generator=g)
hp = PX // 16
x0u = torch.randn(B, 128, hp, hp, generator=g)  # latents are PATCHIFIED but NOT packed: (B, 128, H/16, W/16)
out = pipe(prompt_embeds=pe, height=PX, width=PX, num_inference_steps=N_STEPS, guidance_scale=1.0, latents=x0u,
           output_type="latent", callback_on_step_end=grab).images
img = pipe(prompt_embeds=pe, height=PX, width=PX, num_inference_steps=1, guidance_scale=1.0, latents=x0u, output_type="np").images
x0 = Flux2KleinPipeline._pack_latents(x0u)
s = captured[0][2]
with torch.no_grad():
    v = tr(hidden_states=x0, timestep=torch.full((B,), float(s[0])), encoder_hidden_states=pe,
           img_ids=Flux2KleinPipeline._prepare_latent_ids(x0u), txt_ids=Flux2KleinPipeline._prepare_text_ids(pe),
           guidance=None, return_dict=False)[0]
report("flux2-klein", x0, captured[0][1], x0 + (s[1] - s[0]) * v, s, expected_sigmas("flux2-klein", x0.shape[1], N_STEPS), out.shape)
print("flux2-klein decoded np image", img.shape)
# what output_type='latent' returns: unpack -> BN de-normalise -> unpatchify = raw VAE latent (B, 32, H/8, W/8)
lat = captured[-1][1]
u = Flux2KleinPipeline._unpack_latents_with_ids(lat, Flux2KleinPipeline._prepare_latent_ids(x0u), hp, hp)
std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
raw = Flux2KleinPipeline._unpatchify_latents(u * std + vae.bn.running_mean.view(1, -1, 1, 1))
print("flux2-klein latent output == unpatchify(unpack*std+mean):", torch.allclose(raw, out, atol=1e-6))

# ---- Z-Image
captured.clear()
tr = ZImageTransformer2DModel(**tb.ZIMAGE).eval(); vae = AutoencoderKL(**VAE16).eval()
sch = FlowMatchEulerDiscreteScheduler(**SCHED["z-image"])
pipe = ZImagePipeline(scheduler=sch, vae=vae, text_encoder=None, tokenizer=None, transformer=tr)
pe = [torch.randn(T, 16, generator=g)]  # list of (L_i, cap_feat_dim), unpadded
h = PX // 8
x0 = torch.randn(B, 16, h, h, generator=g)  # latents UNPACKED (B, 16, H/8, W/8), float32
out = pipe(prompt_embeds=pe, height=PX, width=PX, num_inference_steps=N_STEPS, guidance_scale=0.0, latents=x0,
           output_type="latent", callback_on_step_end=grab).images
img = pipe(prompt_embeds=pe, height=PX, width=PX, num_inference_steps=1, guidance_scale=0.0, latents=x0, output_type="np").images
s = captured[0][2]
with torch.no_grad():
    o = tr(list(x0.unsqueeze(2).unbind(0)), torch.full((B,), 1 - float(s[0])), pe, return_dict=False)[0]
v = -torch.stack(o).squeeze(2)  # pipeline negates the model output
report("z-image", x0, captured[0][1], x0 + (s[1] - s[0]) * v, s, expected_sigmas("z-image", (h // 2) ** 2, N_STEPS), out.shape)
print("z-image decoded np image", img.shape)
# CFG form check: pred = pos + w*(pos-neg)
captured.clear(); neg = [torch.randn(5, 16, generator=g)]
pipe(prompt_embeds=pe, negative_prompt_embeds=neg, height=PX, width=PX, num_inference_steps=N_STEPS, guidance_scale=2.0,
     latents=x0, output_type="latent", callback_on_step_end=grab)
with torch.no_grad():
    pos = torch.stack(tr(list(x0.unsqueeze(2).unbind(0)), torch.full((B,), 1 - float(s[0])), pe, return_dict=False)[0]).squeeze(2)
    ng = torch.stack(tr(list(x0.unsqueeze(2).unbind(0)), torch.full((B,), 1 - float(s[0])), neg, return_dict=False)[0]).squeeze(2)
for label, pred in [("pos+w(pos-neg)", pos + 2.0 * (pos - ng)), ("neg+w(pos-neg)", ng + 2.0 * (pos - ng))]:
    print("z-image cfg", label, float((captured[0][1] - (x0 + (s[1] - s[0]) * -pred)).abs().max()))

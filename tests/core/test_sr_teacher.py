"""The SR teacher (method.md section 2): its equations, the Control-LoRA layout, and a real training signal."""

import copy

import pytest
import torch

from fluxsr_core.methods.sr_teacher import (cfg_velocity, evaluations, flow_loss, hr_estimate, noisy_source, solve,
                                            sr_path, sr_target)
from fluxsr_core.models import lora
from fluxsr_core.models.sr_model import SRModel
from helpers import method_model


def _teacher_model(components):
    """A fresh copy of the tiny transformer as the SR teacher builds it: widened input, LoRA incl. x_embedder."""
    return method_model(components, "sr-teacher")


def test_path_ends_and_target_is_its_velocity():
    g = torch.Generator().manual_seed(0)
    z0, z_L, n = (torch.randn(2, 16, 4, 4, generator=g) for _ in range(3))
    x_src = noisy_source(z_L, n, 0.1)
    torch.testing.assert_close(x_src, (1 - 0.01) ** 0.5 * z_L + 0.1 * n)
    torch.testing.assert_close(sr_path(z0, x_src, torch.zeros(2)), z0)  # s = 0: HR
    torch.testing.assert_close(sr_path(z0, x_src, torch.ones(2)), x_src)  # s = 1: the source
    h = 1e-3
    s = torch.full((2,), 0.4)
    fd = (sr_path(z0, x_src, s + h) - sr_path(z0, x_src, s - h)) / (2 * h)
    torch.testing.assert_close(fd, sr_target(x_src, z0), atol=1e-3, rtol=0)
    assert flow_loss(sr_target(x_src, z0), sr_target(x_src, z0)) == 0


@pytest.mark.parametrize("solver", ["euler", "midpoint"])
def test_solver_returns_z0_on_an_exact_straight_flow(solver):
    g = torch.Generator().manual_seed(1)
    z0, x_src = torch.randn(2, 16, 4, 4, generator=g), torch.randn(2, 16, 4, 4, generator=g)
    exact = lambda x, s: (x - z0) / s.reshape(-1, 1, 1, 1)  # on the line x_s, (x_s - z0)/s = x_src - z0
    torch.testing.assert_close(solve(exact, x_src, 4, solver), z0, atol=1e-5, rtol=0)
    assert evaluations(4, solver, 1.0) == (8 if solver == "midpoint" else 4) and evaluations(4, solver, 2.0) == 2 * (
        8 if solver == "midpoint" else 4)


def test_cfg_at_one_is_the_conditional_velocity():
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    torch.testing.assert_close(cfg_velocity(a, b, 1.0), b)
    torch.testing.assert_close(cfg_velocity(a, b, 0.0), a)


def test_the_pixel_term_decodes_the_flows_hr_estimate(tiny_components, monkeypatch):
    """x̂_0 = x_s - s·v lands on z_0 for the exact velocity at any s, so with it L_pix is the decoder's own error
    D(z_0) against the HR image, and 0 when sr_teacher.lambda_pixel is 0 (no decode at all). A sign or time
    convention wrong in x̂_0 decodes another latent and fails here."""
    from dataclasses import replace

    from fluxsr_core.methods import sr_teacher
    from fluxsr_core.models.codec import decode_latents

    g = torch.Generator().manual_seed(7)
    z0, z_L = torch.randn(3, 16, 8, 8, generator=g), torch.randn(3, 16, 8, 8, generator=g)
    x_src, s = noisy_source(z_L, torch.randn(3, 16, 8, 8, generator=g), 0.1), torch.tensor([0.2, 0.6, 0.95])
    torch.testing.assert_close(hr_estimate(sr_path(z0, x_src, s), s, sr_target(x_src, z0)), z0, atol=1e-5, rtol=0)

    model, method = _teacher_model(tiny_components)
    hr = torch.rand(3, 3, 64, 64, generator=g)
    batch = {"z_L": z_L, "z0": z0, "hr": hr}
    times = {**method.sample_times(3, torch.Generator().manual_seed(8)), "cond_kept": torch.ones(3)}
    monkeypatch.setattr(model, "velocity", lambda x, t, control=None: (x - z0) / t.reshape(-1, 1, 1, 1))
    decoded = []
    monkeypatch.setattr(sr_teacher, "decode_latents", lambda c, z: decoded.append(z) or decode_latents(c, z))
    with torch.no_grad():
        off = method.loss(model, batch, times)
        assert off["pixel"] == 0 and off["total"] == off["flow"] < 1e-6 and not decoded
        on = replace(method, lambda_pixel=30.0, pixel_samples=2).loss(model, batch, times)
        want = ((decode_latents(tiny_components, z0[:2]).float() - hr[:2]) ** 2).mean()
    torch.testing.assert_close(on["pixel"], want)
    torch.testing.assert_close(on["total"], 30.0 * want)


def test_the_pixel_term_trains_the_image_the_one_step_sampler_returns(tiny_components):
    """With the pixel term on, its samples are drawn at s = 1 with their condition kept, and L_pix is the decoded
    error of exactly what ``sample(steps=1)`` returns from the same noise. At a uniform s (the earlier code) most
    of the term trained estimates that no sampler outputs."""
    from dataclasses import replace

    from fluxsr_core.models.codec import decode_latents

    model, method = _teacher_model(tiny_components)
    method = replace(method, lambda_pixel=30.0, pixel_samples=2, cond_dropout=0.5)
    g = torch.Generator().manual_seed(3)
    z0, z_L = torch.randn(4, 16, 8, 8, generator=g), torch.randn(4, 16, 8, 8, generator=g)
    hr = torch.rand(4, 3, 64, 64, generator=g)
    for step in range(3):
        times = method.sample_times(4, torch.Generator().manual_seed(step))
        assert times["s"][:2].tolist() == [1.0, 1.0] and times["cond_kept"][:2].tolist() == [1.0, 1.0]
        assert (times["s"][2:] < 1).all()  # the others keep their drawn times
    with torch.no_grad():
        got = method.loss(model, {"z_L": z_L, "z0": z0, "hr": hr}, times)["pixel"]
        one_step = torch.cat([method.sample(model, z_L[i:i + 1], steps=1, seed=int(times["noise_seed"][i]))
                              for i in range(2)])
        want = ((decode_latents(tiny_components, one_step).float() - hr[:2]) ** 2).mean()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert (replace(method, lambda_pixel=0.0).sample_times(4, torch.Generator().manual_seed(0))["s"] < 1).all()


def test_untrained_teacher_is_the_base_transformer(backbone_components):
    """On every backbone: the widened input (its LR columns zero) is exactly the base at initialisation."""
    from helpers import latent_shape

    model, _ = _teacher_model(backbone_components)
    base = SRModel(backbone_components)
    g = torch.Generator().manual_seed(2)
    shape = latent_shape(backbone_components, batch=1)
    x, z_L = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    s = torch.full((1,), 0.7)
    backbone = backbone_components.backbone
    widened = model.transformer.get_submodule(backbone.condition_module).base_layer
    plain = backbone_components.transformer.get_submodule(backbone.condition_module)
    with torch.no_grad():
        assert widened.in_features == 2 * plain.in_features
        torch.testing.assert_close(model.velocity(x, s, control=z_L), base.velocity(x, s), atol=1e-6, rtol=0)


def test_training_lowers_the_loss_on_a_fixed_batch(tiny_components):
    model, method = _teacher_model(tiny_components)
    g = torch.Generator().manual_seed(3)
    batch = {"z_L": torch.randn(2, 16, 8, 8, generator=g), "z0": torch.randn(2, 16, 8, 8, generator=g)}
    times = method.sample_times(2, torch.Generator().manual_seed(4))
    params = lora.lora_parameters(model.transformer)
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = method.loss(model, batch, times)["total"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.92 * losses[0] and all(b < a for a, b in zip(losses, losses[1:])), losses
    x_emb = model.transformer.x_embedder
    assert x_emb.lora_B["default"].weight.abs().sum() > 0  # the condition path (LoRA on x_embedder) trained


def test_saved_teacher_loads_through_diffusers_flux_lora_loader(tiny_components, tmp_path):
    """A plain transformer, given the saved LoRA by FluxPipeline.load_lora_weights, is widened and gives the same v."""
    from dataclasses import replace

    from diffusers import FluxPipeline

    model, _ = _teacher_model(tiny_components)
    with torch.no_grad():
        for name, p in model.transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    lora.save_lora(model.transformer, tmp_path, "FluxPipeline")
    plain = copy.deepcopy(tiny_components.transformer)
    pipe = FluxPipeline(scheduler=tiny_components.scheduler, vae=tiny_components.vae, transformer=plain,
                        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    pipe.load_lora_weights(str(tmp_path))
    assert plain.x_embedder.base_layer.in_features == 128 and plain.config.in_channels == 128
    theirs = SRModel(replace(tiny_components, transformer=plain))
    g = torch.Generator().manual_seed(5)
    x, z_L = torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 16, 8, 8, generator=g)
    s = torch.full((1,), 0.3)
    with torch.no_grad():
        ours = model.velocity(x, s, control=z_L)
        torch.testing.assert_close(theirs.velocity(x, s, control=z_L), ours, atol=1e-5, rtol=0)
        assert not torch.allclose(ours, model.velocity(x, s, control=torch.zeros_like(z_L)), atol=1e-4)


def test_sampling_is_reproducible_from_its_seed_and_the_knobs_matter(tiny_components):
    model, method = _teacher_model(tiny_components)
    with torch.no_grad():
        for name, p in model.transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
        z_L = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(6))
        a, again = method.sample(model, z_L, steps=2, seed=0), method.sample(model, z_L, steps=2, seed=0)
        other_seed, more_steps = method.sample(model, z_L, steps=2, seed=1), method.sample(model, z_L, steps=4, seed=0)
        guided = method.sample(model, z_L, steps=2, guidance_scale=2.0, seed=0)
    assert torch.equal(a, again)
    for b in (other_seed, more_steps, guided):
        assert not torch.allclose(a, b, atol=1e-4)
    assert method.check_knobs({"steps": 8}) == {"steps": 8, "guidance_scale": 1.0, "seed": 0}

"""`fluxsr plan`: memory and FLOPs on meta tensors, checked analytically and against a real CPU step."""

import pytest
import torch

from fluxsr_core.config import FluxSRConfig
from fluxsr_core.plan import LiveStorages, plan_train, plan_upscale


def test_live_storages_count_what_is_alive_and_the_peak():
    with LiveStorages() as mem:
        a = torch.empty(1024, dtype=torch.float32, device="meta")  # 4 KiB
        b = a.view(32, 32)  # a view: the same storage, counted once
        c = torch.empty(256, dtype=torch.bfloat16, device="meta")  # 512 B
        assert mem.live == 4096 + 512
        del a, b
        assert mem.live == 512
        del c
    assert mem.live == 0 and mem.peak == 4096 + 512


def test_weights_gradients_and_adamw_state_are_what_the_counts_say():
    """bf16 weights = 2 bytes a frozen parameter; fp32 LoRA, its gradients and AdamW's two moments = 4 bytes each a
    trainable parameter; the LoRA's size is peft's on the real tiny model."""
    cfg = FluxSRConfig()
    p = plan_train(cfg, "sr-teacher", resolution=64, dtype=torch.bfloat16)
    frozen = p.parameters - p.trainable_parameters
    from diffusers import AutoencoderKL

    from fluxsr_core.models import tiny
    with torch.device("meta"):
        vae = sum(x.numel() for x in AutoencoderKL(**tiny.VAE_CONFIG).parameters())
    assert p.weights_gib * 2 ** 30 == pytest.approx(2 * (frozen + vae), abs=2 ** 30 * 1e-4)
    assert p.trainable_gib * 2 ** 30 == pytest.approx(4 * p.trainable_parameters, abs=2 ** 30 * 1e-4)
    assert p.gradients_gib == p.trainable_gib and p.optimizer_gib == pytest.approx(2 * p.trainable_gib, abs=1e-4)

    from fluxsr_core.config import ModelConfig
    from fluxsr_core.methods import build_method
    from fluxsr_core.models import load_components
    from fluxsr_core.models.sr_model import SRModel
    from fluxsr_core.train import lora

    model = SRModel(load_components(ModelConfig()))
    method = build_method("sr-teacher", cfg)
    method.extend(model)
    lora.add_lora(model.transformer, cfg.lora.model_copy(
        update={"target_modules": method.lora_targets(cfg.lora.target_modules)}), seed=0)
    assert p.trainable_parameters == sum(x.numel() for x in lora.lora_parameters(model.transformer))


def test_plan_peak_is_the_real_cpu_step_peak(one_torch_thread):
    """The same step on real CPU tensors, its live storages counted by the same tracker (CPU attention keeps O(N)
    memory, as the plan's flash attention does): the planned peak is within 10%."""
    cfg = FluxSRConfig()
    cfg.train.batch_size = 2
    planned = plan_train(cfg, "ftd", resolution=128, dtype=torch.float32)
    measured = _real_ftd_peak(cfg, 128)
    assert planned.peak_gib == pytest.approx(measured, rel=0.10), (planned, measured)


def _real_ftd_peak(cfg, resolution: int) -> float:
    from fluxsr_core.config import ModelConfig
    from fluxsr_core.methods import build_method
    from fluxsr_core.models import load_components
    from fluxsr_core.models.sr_model import SRModel
    from fluxsr_core.train.loop import Trainer

    h = resolution // 8
    cfg = cfg.model_copy(deep=True)
    cfg.loss.allow_random_lpips_backbone = True
    with LiveStorages() as mem:
        method = build_method("ftd", cfg)
        model = SRModel(load_components(ModelConfig()))
        sample = {"z_L": torch.randn(16, h, h), "z0": torch.randn(16, h, h), "noise": torch.randn(16, h, h),
                  "hr": torch.rand(3, resolution, resolution)}
        trainer = Trainer(method, model, [sample] * cfg.train.batch_size, lora_cfg=cfg.lora, train_cfg=cfg.train)
        for k in (1, 2):  # the second step, as planned: AdamW's state exists
            trainer.optimizer.zero_grad(set_to_none=True)
            if k == 2:
                mem.peak = mem.live
            terms, _ = trainer.compute_loss(trainer.batch_for_step(k), trainer.step_generator(k))
            terms["total"].backward()
            trainer.optimizer.step()
        return mem.peak / 2 ** 30


def test_full_flux_dev_plans_on_meta_and_flash_attention_is_smaller_than_math():
    from fluxsr_core import configs

    cfg = configs.flux_dev()
    cfg.train.batch_size = 1
    flash = plan_upscale(cfg, size=256, attention="flash")
    math_ = plan_upscale(cfg, size=256, attention="math")
    assert 11.8e9 < flash.parameters < 12.0e9  # FLUX.1-dev's transformer
    assert flash.weights_gib == pytest.approx(2 * (flash.parameters + 83.65e6) / 2 ** 30, rel=0.01)  # + the VAE, bf16
    assert flash.peak_gib < math_.peak_gib and flash.tflop > 1

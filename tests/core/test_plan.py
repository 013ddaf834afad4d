"""`fluxsr plan`: memory and FLOPs on meta tensors, checked analytically and against a real CPU step."""

import json
import math
import subprocess
import sys

import pytest
import torch

from fluxsr_core.config import FluxSRConfig
from fluxsr_core.plan import GPU_PEAK_TFLOPS, LiveStorages, size_train_step, size_upscale, seconds_at
from helpers import REPO


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
    p = size_train_step(cfg, "sr-teacher", resolution=64, dtype=torch.bfloat16)
    frozen = p.parameters - p.trainable_parameters
    from diffusers import AutoencoderKL

    from fluxsr_core.backbones.flux1 import configs
    with torch.device("meta"):
        vae = sum(x.numel() for x in AutoencoderKL(**configs.TINY_VAE_CONFIG).parameters())
    assert p.weights_gib * 2 ** 30 == pytest.approx(2 * (frozen + vae), abs=2 ** 30 * 1e-4)
    assert p.trainable_gib * 2 ** 30 == pytest.approx(4 * p.trainable_parameters, abs=2 ** 30 * 1e-4)
    assert p.gradients_gib == p.trainable_gib and p.optimizer_gib == pytest.approx(2 * p.trainable_gib, abs=1e-4)

    from fluxsr_core.config import ModelConfig
    from fluxsr_core.methods import build_method
    from fluxsr_core.models import load_components, lora
    from fluxsr_core.models.sr_model import SRModel

    model = SRModel(load_components(ModelConfig()))
    method = build_method("sr-teacher", cfg)
    method.extend(model)
    lora.add_lora(model.transformer, cfg.lora.model_copy(
        update={"target_modules": method.lora_targets(cfg.lora.target_modules, model.components.backbone)}), seed=0)
    assert p.trainable_parameters == sum(x.numel() for x in lora.lora_parameters(model.transformer))


def test_plan_peak_is_the_real_cpu_step_peak(one_torch_thread):
    """The same step on real CPU tensors, its live storages counted by the same tracker (CPU attention keeps O(N)
    memory, as the plan's flash attention does): the planned peak is within 10%."""
    cfg = FluxSRConfig()
    cfg.train.batch_size = 2
    planned = size_train_step(cfg, "ftd", resolution=128, dtype=torch.float32)
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
    from fluxsr_core.config import presets as configs

    cfg = configs.flux_dev()
    cfg.train.batch_size = 1
    flash = size_upscale(cfg, size=256, attention="flash")
    math_ = size_upscale(cfg, size=256, attention="math")
    assert 11.8e9 < flash.parameters < 12.0e9  # FLUX.1-dev's transformer
    assert flash.weights_gib == pytest.approx(2 * (flash.parameters + 83.65e6) / 2 ** 30, rel=0.01)  # + the VAE, bf16
    assert flash.peak_gib < math_.peak_gib and flash.tflop > 1


def test_nf4_weights_and_8bit_adamw_are_the_bytes_their_formats_say():
    """NF4: half a byte a block weight + a float32 absmax a block of 64 (0.5625 byte); everything else bf16.
    8-bit AdamW: two uint8 moments + two float32 absmax a block of 256 for a tensor of >= 4096 elements, two
    float32 moments below that, plus its two shared 256-entry quantisation maps."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    from fluxsr_core.backbones.flux1 import blocks as flux1_blocks, configs
    from fluxsr_core.models.low_vram import block_linears

    cfg = FluxSRConfig()
    cfg.model.weights, cfg.train.optimizer = "nf4", "adamw8bit"
    cfg.lora.rank = 32  # some LoRA matrices of >= 4096 elements: both of bitsandbytes' state layouts
    p = size_train_step(cfg, "sr-teacher", resolution=64)
    with torch.device("meta"):
        blocks = sum(m.weight.numel() for *_, m in
                     block_linears(flux1_blocks(FluxTransformer2DModel(**configs.TINY_TRANSFORMER_CONFIG))))
        vae = sum(x.numel() for x in AutoencoderKL(**configs.TINY_VAE_CONFIG).parameters())
    frozen = p.parameters - p.trainable_parameters
    expected = 0.5625 * blocks + 2 * (frozen - blocks) + 2 * vae
    assert p.weights_gib * 2 ** 30 == pytest.approx(expected, abs=2 ** 30 * 1e-4)
    full = size_train_step(FluxSRConfig(), "sr-teacher", resolution=64)
    assert p.weights_gib < full.weights_gib

    from fluxsr_core.methods import build_method
    from fluxsr_core.models import load_components
    from fluxsr_core.models.sr_model import SRModel
    from fluxsr_core.train.loop import Trainer
    from helpers import latent_samples

    method = build_method("sr-teacher", cfg)
    trainer = Trainer(method, SRModel(load_components(FluxSRConfig().model)), latent_samples(1, 0),
                      lora_cfg=cfg.lora, train_cfg=cfg.train)
    sizes = [q.numel() for q in trainer.params]
    moments = sum(2 * n + 2 * 4 * math.ceil(n / 256) if n >= 4096 else 8 * n for n in sizes)
    maps = 2 * 256 * 4 if any(n >= 4096 for n in sizes) else 0
    assert p.trainable_parameters == sum(sizes) and any(n >= 4096 for n in sizes) and any(n < 4096 for n in sizes)
    assert p.optimizer_gib * 2 ** 30 == pytest.approx(moments + maps, abs=2 ** 30 * 1e-4)


def test_per_rank_figures_and_time_at_a_fraction_of_a_gpu_peak():
    cfg = FluxSRConfig()
    one = size_train_step(cfg, "sr-teacher", resolution=64)
    cfg.train.nproc_per_node = 4
    ddp = size_train_step(cfg, "sr-teacher", resolution=64)
    cfg.train.strategy = "fsdp"
    fsdp = size_train_step(cfg, "sr-teacher", resolution=64)
    assert ddp.what == "train sr-teacher ddp/4" and fsdp.what == "train sr-teacher fsdp/4"
    assert ddp.peak_gib == pytest.approx(one.peak_gib + one.gradients_gib, abs=1e-3)  # DDP's gradient buckets
    sharded = one.settings["transformer_weights_gib"] + one.trainable_gib + one.gradients_gib + one.optimizer_gib
    whole = 2 * one.settings["largest_block_gib"]
    assert fsdp.peak_gib == pytest.approx(one.peak_gib - 0.75 * sharded + whole, abs=1e-3)
    assert fsdp.optimizer_gib == pytest.approx(one.optimizer_gib / 4, abs=1e-4)
    assert fsdp.settings["parallel"] == {"strategy": "fsdp", "ranks": 4, "derived_from_one_process": True}
    assert seconds_at(989.4, "H100", 0.5) == pytest.approx(2.0)
    assert set(GPU_PEAK_TFLOPS) >= {"H100", "A100", "L40S"}
    with pytest.raises(ValueError, match="unknown GPU"):
        seconds_at(1.0, "T4", 0.4)


def test_reduced_depth_full_width_flux_plan_is_the_measured_cpu_peak():
    """FLUX.1-dev's width (hidden 3072, 24 heads, joint attention 4096) with 1 double + 1 single block: every
    layer shape of the real model, 0.55 B parameters. The same FTD step on real CPU tensors, its peak measured by
    the kernel (the process's peak resident set, VmHWM, over the step, less its resident set before the model:
    bench/plan_vs_cuda.py), in a fresh process; the plan is within 10%."""
    r = subprocess.run([sys.executable, str(REPO / "bench" / "plan_vs_cuda.py"), "--case", "reduced-flux",
                        "--device", "cpu", "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (row,) = json.loads(r.stdout)
    assert 0.53e9 < row["parameters"] < 0.56e9, row
    assert row["ratio"] == pytest.approx(1.0, abs=0.10), row

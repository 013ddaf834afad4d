"""Low-VRAM modes on the tiny preset, on CPU (bitsandbytes has a CPU path): the blocks' weights in NF4 or fp8 and
8-bit AdamW train and lower the loss; a LoRA trained on a quantised base applies to the full-precision base with
outputs close to the quantised run's; block offloading gives the same image. (Their memory on a GPU:
bench/plan_vs_cuda.py.)"""

import pytest
import torch

from fluxsr_core.config import FluxSRConfig
from fluxsr_core.methods import build_method
from fluxsr_core.models import load_components
from fluxsr_core.models.sr_model import SRModel
from fluxsr_core.student import load_student
from fluxsr_core.train.loop import Trainer
from helpers import latent_samples


def _config(weights: str = "full", optimizer: str = "adamw") -> FluxSRConfig:
    cfg = FluxSRConfig()
    cfg.model.weights, cfg.train.optimizer = weights, optimizer
    cfg.train.learning_rate, cfg.train.batch_size = 2e-3, 2
    return cfg


def _trainer(cfg: FluxSRConfig, run_dir=None) -> Trainer:
    method = build_method("sr-teacher", cfg)
    model = SRModel(load_components(cfg.model), guidance=method.guidance)
    return Trainer(method, model, latent_samples(2, seed=0), lora_cfg=cfg.lora, train_cfg=cfg.train, run_dir=run_dir)


def _fixed_batch_losses(tr: Trainer, steps: int) -> tuple[float, float]:
    """The loss on one fixed batch and draw of times, before and after ``steps`` optimiser steps on it."""
    batch = tr.batch_for_step(1)

    def loss() -> float:
        with torch.no_grad():
            return tr.compute_loss(batch, torch.Generator().manual_seed(7))[0]["total"].item()

    start = loss()
    for s in range(1, steps + 1):
        tr.train_step(s, batch)
    return start, loss()


@pytest.mark.parametrize("weights", ["nf4", "fp8"])
def test_quantised_base_trains_and_its_lora_applies_to_the_full_base(weights, tmp_path, one_torch_thread):
    cfg = _config(weights)
    tr = _trainer(cfg)
    # peft wrapped each quantised layer of the blocks: its base_layer is the quantised one, its adapters are not
    bases = [m.base_layer for b in tr.model.components.backbone.blocks(tr.transformer) for m in b.modules() if hasattr(m, "lora_A")]
    assert bases and all(m.weight.dtype == (torch.uint8 if weights == "nf4" else torch.float8_e4m3fn) for m in bases)
    assert all(p.dtype == torch.float32 for p in tr.params)
    start, end = _fixed_batch_losses(tr, 6)
    assert end < 0.985 * start, (start, end)  # measured: 0.633 -> 0.613 for both

    tr.export(tmp_path / "model")
    quantised = load_student(cfg, tmp_path / "model")
    full = load_student(FluxSRConfig(), tmp_path / "model")
    assert full.info.base["weights"] == weights  # the model says what it was trained on
    g = torch.Generator().manual_seed(5)
    x, z_L, s = torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 16, 8, 8, generator=g), torch.full((1,), 0.6)
    with torch.no_grad():
        vq = quantised.model.velocity(x, s, control=z_L)
        vf = full.model.velocity(x, s, control=z_L)
        base = load_student(FluxSRConfig(), None).model.velocity(x, s)
    rel = ((vf - vq).norm() / vq.norm()).item()
    assert rel < (0.05 if weights == "nf4" else 0.02), rel  # measured: nf4 0.016, fp8 0.005 on the tiny weights
    assert (vf - base).norm() > 0  # the LoRA and the widened input were loaded


def test_8bit_adamw_trains_keeps_8bit_state_and_resumes_to_the_same_weights(tmp_path, one_torch_thread):
    cfg = _config(optimizer="adamw8bit")
    cfg.lora.rank = 32  # LoRA matrices of 4096 elements: bitsandbytes' 8-bit state starts there (min_8bit_size)
    tr = _trainer(cfg)
    start, end = _fixed_batch_losses(tr, 6)
    assert end < 0.985 * start, (start, end)
    states = [s for s in tr.optimizer.state.values() if "state1" in s]
    assert any(s["state1"].dtype == torch.uint8 for s in states)  # blockwise 8-bit moments (large tensors)

    cfg.train.checkpoint_every, cfg.train.steps = 2, 4
    whole = _trainer(cfg, tmp_path / "a")
    whole.fit()
    part = _trainer(cfg, tmp_path / "b")
    part.fit(2)
    resumed = _trainer(cfg, tmp_path / "b")
    assert resumed.resume() and resumed.step == 2
    resumed.fit()
    for (name, a), b in zip(whole.transformer.named_parameters(), resumed.transformer.parameters()):
        if a.requires_grad:
            assert torch.equal(a, b), name


def test_block_offloading_gives_the_same_image(one_torch_thread):
    """diffusers' group offloading moves each block to the device as it runs (on a CPU machine the CPU: the
    hooks run, the memory saving needs a GPU); the image is the same."""
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cfg = FluxSRConfig()
    plain = load_student(cfg, None).upscale(image, cfg.infer)
    cfg.infer.offload = True
    offloaded = load_student(cfg, None)
    hooked = [m for m in offloaded.model.transformer.modules() if getattr(m, "_diffusers_hook", None) is not None]
    assert hooked  # the blocks carry diffusers' offloading hooks
    torch.testing.assert_close(offloaded.upscale(image, cfg.infer), plain, atol=1e-6, rtol=0)


@pytest.mark.parametrize("weights", ["nf4", "fp8"])
def test_meanflow_refuses_quantised_weights_by_name(weights):
    """torch.func.jvp does not pass through bitsandbytes' 4-bit matmul (measured: the target 67% off) and crashes
    on fp8 casts: MeanFlow on a quantised base is refused before anything is built, saying what to use."""
    from fluxsr_core.errors import UsageError
    from fluxsr_core.train.loop import check_runtime

    cfg = _config(weights)
    with pytest.raises(UsageError, match=f"model.weights={weights}.*use model.weights=full"):
        check_runtime(build_method("meanflow", cfg), cfg.train, weights)

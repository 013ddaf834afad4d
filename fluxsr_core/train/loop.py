"""Algorithm 1 of FluxSR (method.md section 1), without orchestration.

Per step, for a batch {z_L, z0, noise, hr} of one record's LR latent, clean latent,
initial noise and HR pixels:

1. t ~ U[T_L, 1]; z_t = interpolate(z_L, ε, t, T_L)                           (eq. 16)
2. v = v_θ(z_t, t); L_FTD = ftd_loss(v, ε, z0, z_L, T_L)                      (eq. 17)
3. ẑ = G_θ(z_L) = z_L - T_L·v_θ(z_L, T_L); x̂ = D(ẑ)                          (eq. 18)
4. L = L_FTD + MSE(x̂, x_H) + λ·TV-LPIPS(x̂, x_H) + μ·L_ADL                     (eqs. 19-23)
5. AdamW step on the LoRA parameters only.

ADL source (``TrainConfig.adl_source``, default ``"one_step"``): the attention
diversification loss is computed on the block tokens of the one-step pass at T_L,
because that pass is the generator used at inference and the one whose output is
decoded; the 16-pixel periodic artifacts ADL fights are artifacts of that output.
The FTD pass at a random t ∈ [T_L, 1] sees inputs the deployed model never sees
(z_t mixes in noise), so regularising its tokens constrains the wrong features.
``"ftd"`` is kept as an option for ablations.

Conditioning is one fixed embedding of the empty prompt, encoded once with
``components.prompt_encoder`` at construction; no text encoder runs per step.

Determinism: step k (1-based) draws its data indices and its t from
``torch.Generator`` seeded by (TrainConfig.seed, k) only, and the data order is a
per-epoch permutation seeded by (seed, epoch); so a run resumed from the
checkpoint of step k repeats exactly what an uninterrupted run does (CPU).
On CUDA, steps run under bf16 autocast with the LoRA weights kept in float32.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fluxsr_core import ftd
from fluxsr_core.config import LoraConfig, LossConfig, TrainConfig
from fluxsr_core.losses import LossTerms, capture_block_tokens, total_loss
from fluxsr_core.models.codec import decode_latents
from fluxsr_core.models.velocity import TextCondition, predict_velocity
from fluxsr_core.train import checkpoint as ckpt
from fluxsr_core.train import lora

log = logging.getLogger(__name__)

BATCH_KEYS = ("z_L", "z0", "noise", "hr")
HISTORY_IN_CHECKPOINT = 50  # recent per-step records kept in state.json (inspection only)
_MIX = 1_000_003  # mixes (seed, counter) into one 63-bit generator seed


def _seed(seed: int, counter: int, salt: int) -> int:
    return ((seed * _MIX + counter) * 31 + salt) % (2**63 - 1)


def encode_empty_prompt(components, prompt: str = "") -> TextCondition:
    """The fixed training/inference condition: ``prompt`` (default empty) encoded once."""
    emb, pooled = components.prompt_encoder.encode([prompt], components.device)
    return TextCondition(emb.detach(), pooled.detach())


class Trainer:
    """LoRA training of the student by Algorithm 1; subclass and override ``train_step`` to change a step.

    ``components`` is modified in place: its transformer gets the trainable LoRA
    adapter (build a dedicated ``load_components`` for training). ``dataset`` is
    map-style (``len`` + ``__getitem__``) returning dicts of tensors with keys
    z_L (16, h, w), z0, noise (same) and hr (3, 8h, 8w) in [0, 1].
    """

    def __init__(self, components, dataset, *, loss_cfg: LossConfig, lora_cfg: LoraConfig, train_cfg: TrainConfig,
                 lpips_model=None, run_dir: str | Path | None = None, cond: TextCondition | None = None,
                 log_fn: Callable[[dict[str, Any]], None] | None = None, extra_state: dict[str, Any] | None = None):
        if len(dataset) == 0:
            raise ValueError("the training dataset is empty: no complete (record, variant) samples")
        self.components, self.dataset = components, dataset
        self.loss_cfg, self.lora_cfg, self.train_cfg = loss_cfg, lora_cfg, train_cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.log_fn = log_fn
        self.extra_state = extra_state or {}
        self.device = components.device
        self.use_autocast = self.device.type == "cuda"
        self.transformer = components.transformer
        self.params = lora.add_lora(self.transformer, lora_cfg, seed=train_cfg.seed)
        for p in self.params:  # master weights of the adapters in float32 even when the model is bf16
            p.data = p.data.float()
        if train_cfg.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.transformer.train()
        if lpips_model is None and loss_cfg.lambda_tv_lpips > 0:
            from fluxsr_core.perceptual import build_lpips

            lpips_model = build_lpips(loss_cfg.lpips_net, loss_cfg.lpips_backbone_path, loss_cfg.allow_random_lpips_backbone)
        self.lpips = lpips_model.to(self.device) if lpips_model is not None else None
        self.cond = cond if cond is not None else encode_empty_prompt(components)
        self.optimizer = torch.optim.AdamW(self.params, lr=train_cfg.learning_rate)
        self.step = 0  # completed steps
        self.history: list[dict[str, Any]] = []

    # -- data and randomness, pure functions of (seed, step) -----------------------------------
    def step_generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(_seed(self.train_cfg.seed, step, 1))

    def indices_for_step(self, step: int) -> list[int]:
        """Sample indices of step ``step`` (1-based): consecutive slices of per-epoch permutations."""
        n, b = len(self.dataset), self.train_cfg.batch_size
        out = []
        for pos in range((step - 1) * b, step * b):
            epoch, i = divmod(pos, n)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(self.train_cfg.seed, epoch, 2)))
            out.append(int(perm[i]))
        return out

    def batch_for_step(self, step: int) -> dict[str, torch.Tensor]:
        items = [self.dataset[i] for i in self.indices_for_step(step)]
        return {k: torch.stack([torch.as_tensor(it[k]) for it in items]).to(self.device, torch.float32) for k in BATCH_KEYS}

    # -- one step ----------------------------------------------------------------------------------
    def _velocity(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return predict_velocity(self.transformer, z, t, self.cond, self.train_cfg.guidance).float()

    def compute_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> tuple[LossTerms, torch.Tensor]:
        """Algorithm 1's loss for one batch; returns (terms, sampled t)."""
        T_L = self.loss_cfg.T_L
        z_L, z0, eps, hr = (batch[k] for k in BATCH_KEYS)
        t = ftd.sample_t(z_L.shape[0], T_L, generator=generator).to(self.device)
        z_t = ftd.interpolate(z_L, eps, t, T_L)
        adl_on_ftd = self.train_cfg.adl_source == "ftd"
        need_tokens = self.loss_cfg.mu_adl > 0
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.use_autocast else contextlib.nullcontext())
        with autocast:
            with capture_block_tokens(self.transformer) if (need_tokens and adl_on_ftd) else contextlib.nullcontext([]) as f1:
                v = self._velocity(z_t, t)
            l_ftd = ftd.ftd_loss(v.float(), eps, z0, z_L, T_L)
            with capture_block_tokens(self.transformer) if (need_tokens and not adl_on_ftd) else contextlib.nullcontext([]) as f2:
                z_hat = ftd.one_step(self._velocity, z_L, T_L)
            x_hat = decode_latents(self.components, z_hat).float()
        terms = total_loss(self.loss_cfg, ftd=l_ftd, x_hat=x_hat, x_hr=hr, block_tokens=f1 if adl_on_ftd else f2,
                           lpips_model=self.lpips)
        return terms, t

    def train_step(self, step: int, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """One optimiser step; returns the logged record (every loss term as a float)."""
        self.optimizer.zero_grad(set_to_none=True)
        terms, t = self.compute_loss(batch, self.step_generator(step))
        if not torch.isfinite(terms.total):
            raise FloatingPointError(f"step {step}: non-finite loss {terms.as_floats()} (lower train.learning_rate?)")
        terms.total.backward()
        self.optimizer.step()
        return {"step": step, **terms.as_floats(), "t_mean": float(t.mean()), "lr": self.optimizer.param_groups[0]["lr"]}

    # -- the run -------------------------------------------------------------------------------------
    def fit(self, steps: int | None = None) -> list[dict[str, Any]]:
        """Run from ``self.step`` to ``steps`` (default ``train_cfg.steps``), checkpointing into ``run_dir``."""
        end = steps if steps is not None else self.train_cfg.steps
        every = self.train_cfg.checkpoint_every
        while self.step < end:
            step = self.step + 1
            t0 = time.perf_counter()
            record = self.train_step(step, self.batch_for_step(step))
            record["seconds"] = time.perf_counter() - t0
            self.step = step
            self.history.append(record)
            if self.log_fn is not None:
                self.log_fn(record)
            log.info("step %d %s", step, {k: round(v, 5) for k, v in record.items() if isinstance(v, float)})
            if self.run_dir is not None and (step % every == 0 or step == end):
                self.save_checkpoint()
        return self.history

    def save_checkpoint(self) -> Path:
        if self.run_dir is None:
            raise ValueError("Trainer has no run_dir to checkpoint into")
        return ckpt.save_checkpoint(self.run_dir, self.step, transformer=self.transformer, optimizer=self.optimizer,
                                    extra={**self.extra_state, "recent": self.history[-HISTORY_IN_CHECKPOINT:]})

    def resume(self, path: str | Path | None = None) -> bool:
        """Load ``path`` or the latest complete checkpoint in ``run_dir``; False when there is none."""
        if path is None:
            if self.run_dir is None:
                return False
            path = ckpt.latest_checkpoint(self.run_dir, clean=True)
            if path is None:
                return False
        state = ckpt.load_checkpoint(path, transformer=self.transformer, optimizer=self.optimizer)
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", path, self.step)
        return True

    def epochs_done(self) -> float:
        return self.step * self.train_cfg.batch_size / len(self.dataset)


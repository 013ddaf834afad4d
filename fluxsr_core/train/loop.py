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

Data parallel (under ``torchrun``, a process group initialised by the caller):
each of W processes takes its slice of the step's W·batch_size indices and of
its t draws, so W processes with batch b take the same samples and t as one
process with batch W·b; DDP averages the LoRA gradients. The whole loss is one
``StepLoss`` forward because the transformer runs twice per step (FTD pass and
one-step pass) and DDP expects one forward per backward. ``train.strategy=fsdp`` shards
the transformer over the processes instead (FSDP2 ``fully_shard`` per block), for
GPUs too small for the whole model. Rank 0 logs and writes checkpoints (under FSDP
every rank first gathers the full tensors); every rank resumes from the checkpoint
rank 0 picks.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

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


class StepLoss(torch.nn.Module):
    """Algorithm 1's loss for one batch and its t as one forward (both transformer passes, decode, all terms).

    Returns the ``LossTerms`` fields as a dict of tensors. Only the transformer's
    LoRA parameters train; the VAE is read through ``components`` and the LPIPS
    network is frozen.
    """

    def __init__(self, components, lpips_model, cond: TextCondition, loss_cfg: LossConfig, train_cfg: TrainConfig):
        super().__init__()
        self.transformer = components.transformer
        self.lpips = lpips_model
        self.components, self.cond, self.loss_cfg, self.train_cfg = components, cond, loss_cfg, train_cfg
        self.use_autocast = components.device.type == "cuda"

    def velocity(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return predict_velocity(self.transformer, z, t, self.cond, self.train_cfg.guidance).float()

    def forward(self, z_L, z0, eps, hr, t) -> dict[str, torch.Tensor]:
        T_L = self.loss_cfg.T_L
        z_t = ftd.interpolate(z_L, eps, t, T_L)
        adl_on_ftd = self.train_cfg.adl_source == "ftd"
        need_tokens = self.loss_cfg.mu_adl > 0
        capture = lambda on: capture_block_tokens(self.transformer) if on else contextlib.nullcontext([])
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.use_autocast else contextlib.nullcontext()
        with autocast:
            with capture(need_tokens and adl_on_ftd) as f1:
                v = self.velocity(z_t, t)
            l_ftd = ftd.ftd_loss(v.float(), eps, z0, z_L, T_L)
            with capture(need_tokens and not adl_on_ftd) as f2:
                z_hat = ftd.one_step(self.velocity, z_L, T_L)
            x_hat = decode_latents(self.components, z_hat).float()
        terms = total_loss(self.loss_cfg, ftd=l_ftd, x_hat=x_hat, x_hr=hr, block_tokens=f1 if adl_on_ftd else f2,
                           lpips_model=self.lpips)
        return {k: getattr(terms, k) for k in LossTerms.NAMES}


def _world() -> tuple[int, int]:
    """(rank, world size) of the current process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def warmup_factor(warmup_steps: int) -> Callable[[int], float]:
    """LambdaLR factor: step k (1-based, the scheduler's epoch k-1) runs at min(1, k / warmup) of the rate."""
    return lambda epoch: min(1.0, (epoch + 1) / warmup_steps) if warmup_steps > 0 else 1.0


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
        self.rank, self.world = _world()
        self.transformer = components.transformer
        self.params = lora.add_lora(self.transformer, lora_cfg, seed=train_cfg.seed)
        for p in self.params:  # master weights of the adapters in float32 even when the model is bf16
            p.data = p.data.float()
        if train_cfg.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        if train_cfg.compile:
            for block in list(self.transformer.transformer_blocks) + list(self.transformer.single_transformer_blocks):
                block.compile()
        self.transformer.train()
        if lpips_model is None and loss_cfg.lambda_tv_lpips > 0:
            from fluxsr_core.perceptual import build_lpips

            lpips_model = build_lpips(loss_cfg.lpips_net, loss_cfg.lpips_backbone_path, loss_cfg.allow_random_lpips_backbone)
        self.lpips = lpips_model.to(self.device) if lpips_model is not None else None
        self.cond = cond if cond is not None else encode_empty_prompt(components)
        self.loss_module = StepLoss(components, self.lpips, self.cond, loss_cfg, train_cfg)
        self.model = self._parallel(self.loss_module)
        self.params = lora.lora_parameters(self.transformer)  # FSDP replaced them by sharded (DTensor) ones
        self.optimizer = torch.optim.AdamW(self.params, lr=train_cfg.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_factor(train_cfg.lr_warmup_steps))
        self.step = 0  # completed steps
        self.history: list[dict[str, Any]] = []

    def _parallel(self, module: StepLoss) -> torch.nn.Module:
        """DDP over the LoRA parameters, or FSDP2 sharding of the transformer, when several processes train."""
        if self.world == 1:
            return module
        if self.train_cfg.strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard

            # one all-gather group per block, then the rest; frozen weights and adapters alike are sharded,
            # gradients of the adapters are reduce-scattered (averaged over ranks)
            for block in list(self.transformer.transformer_blocks) + list(self.transformer.single_transformer_blocks):
                fully_shard(block)
            fully_shard(self.transformer)
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        # frozen weights are identical on every rank by construction: broadcast and reduce only the adapters
        frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
        frozen += [n for n, _ in module.named_buffers()]
        DDP._set_params_and_buffers_to_ignore_for_model(module, frozen)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(module, device_ids=device_ids, broadcast_buffers=False)

    # -- data and randomness, pure functions of (seed, step) -----------------------------------
    def step_generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(_seed(self.train_cfg.seed, step, 1))

    def _local(self, values: list | torch.Tensor):
        """This rank's slice of a step's global batch (all of it with one process)."""
        b = self.train_cfg.batch_size
        return values[self.rank * b:(self.rank + 1) * b]

    def indices_for_step(self, step: int) -> list[int]:
        """All ranks' sample indices of step ``step`` (1-based): consecutive slices of per-epoch permutations."""
        n, b = len(self.dataset), self.train_cfg.batch_size * self.world
        out = []
        for pos in range((step - 1) * b, step * b):
            epoch, i = divmod(pos, n)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(self.train_cfg.seed, epoch, 2)))
            out.append(int(perm[i]))
        return out

    def batch_for_step(self, step: int) -> dict[str, torch.Tensor]:
        """This rank's batch of step ``step``."""
        items = [self.dataset[i] for i in self._local(self.indices_for_step(step))]
        return {k: torch.stack([torch.as_tensor(it[k]) for it in items]).to(self.device, torch.float32) for k in BATCH_KEYS}

    # -- one step ----------------------------------------------------------------------------------
    def compute_loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> tuple[LossTerms, torch.Tensor]:
        """Algorithm 1's loss for this rank's batch; returns (terms, this rank's t)."""
        global_batch = batch["z_L"].shape[0] * self.world
        t = self._local(ftd.sample_t(global_batch, self.loss_cfg.T_L, generator=generator)).to(self.device)
        terms = self.model(*(batch[k] for k in BATCH_KEYS), t)
        return LossTerms(**terms), t

    def train_step(self, step: int, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """One optimiser step; returns the logged record (every loss term as a float, averaged over ranks).

        The terms and mean t are read back as one vector: one device sync per step,
        before backward, so a non-finite loss (on any rank) stops every rank before
        it touches the weights.
        """
        self.optimizer.zero_grad(set_to_none=True)
        terms, t = self.compute_loss(batch, self.step_generator(step))
        values = torch.cat([terms.stacked(), t.detach().double().mean()[None]])
        if self.world > 1:
            dist.all_reduce(values)
            values /= self.world
        logged = dict(zip((*LossTerms.NAMES, "t_mean"), values.tolist()))
        if not math.isfinite(logged["total"]):
            raise FloatingPointError(f"step {step}: non-finite loss {logged} (lower train.learning_rate?)")
        terms.total.backward()
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        return {"step": step, **logged, "lr": lr}

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
            if self.rank == 0:
                if self.log_fn is not None:
                    self.log_fn(record)
                log.info("step %d %s", step, {k: round(v, 5) for k, v in record.items() if isinstance(v, float)})
            if self.run_dir is not None and (step % every == 0 or step == end):
                self.save_checkpoint()
        return self.history

    def save_checkpoint(self) -> Path:
        """Every rank gathers the state (collective under FSDP), rank 0 writes it; returns the checkpoint's path."""
        if self.run_dir is None:
            raise ValueError("Trainer has no run_dir to checkpoint into")
        ckpt.save_checkpoint(self.run_dir, self.step, transformer=self.transformer, optimizer=self.optimizer,
                             scheduler=self.scheduler, write=self.rank == 0,
                             extra={**self.extra_state, "recent": self.history[-HISTORY_IN_CHECKPOINT:]})
        if self.world > 1:
            dist.barrier()
        return ckpt.step_dir(self.run_dir, self.step)

    def resume(self, path: str | Path | None = None) -> bool:
        """Load ``path`` or the latest complete checkpoint in ``run_dir``; False when there is none.

        With several processes, rank 0 picks (and cleans up after killed writers)
        and every rank loads the same checkpoint.
        """
        if path is None and self.run_dir is not None and self.rank == 0:
            path = ckpt.latest_checkpoint(self.run_dir, clean=True)
        if self.world > 1:
            box = [str(path) if path is not None else None]
            dist.broadcast_object_list(box, src=0)
            path = box[0]
        if path is None:
            return False
        state = ckpt.load_checkpoint(path, transformer=self.transformer, optimizer=self.optimizer,
                                     scheduler=self.scheduler)
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", path, self.step)
        return True

    def epochs_done(self) -> float:
        return self.step * self.train_cfg.batch_size * self.world / len(self.dataset)

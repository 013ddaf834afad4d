"""The training loop, for any method (``fluxsr_core.methods``), without orchestration.

Per step: the method draws its times for the step's global batch, this rank takes its
slice of the samples and times, the method's loss is one forward of ``MethodLoss``
(DDP expects one forward per backward; FTD runs the transformer twice inside it), the
named terms are read back as one vector, and AdamW steps every trainable parameter: the
LoRA adapters plus the modules the method trains in full. The loop, optimiser, scheduler,
checkpoints, DDP/FSDP and logging never name a method.

Determinism: step k (1-based) draws its data indices and its times from a
``torch.Generator`` seeded by (TrainConfig.seed, k) only, and the data order is a
per-epoch permutation seeded by (seed, epoch); so a run resumed from the checkpoint
of step k repeats exactly what an uninterrupted run does (CPU). On CUDA the method's
network calls run under bf16 autocast (``SRModel.autocast``) with trainable weights
kept in float32.

Data parallel (under ``torchrun``, a process group initialised by the caller): each of
W processes takes its slice of the step's W·batch_size indices and of its time draws,
so W processes with batch b take the same samples and times as one process with batch
W·b; DDP averages the gradients of the trainable parameters. ``train.strategy=fsdp``
shards the transformer over the processes instead (``parallelize.apply_fsdp``). Rank 0
logs and writes checkpoints (under FSDP every rank first gathers the full tensors);
every rank resumes from the checkpoint rank 0 picks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from fluxsr_core import model_folder
from fluxsr_core.config import LoraConfig, TrainConfig
from fluxsr_core.errors import UsageError
from fluxsr_core.methods.base import RUNTIME_NEEDS, Method
from fluxsr_core.models import lora
from fluxsr_core.models.sr_model import SRModel
from fluxsr_core.train import checkpoint as ckpt
from fluxsr_core.train import parallelize

log = logging.getLogger(__name__)

BATCH_KEYS = ("z_L", "z0", "noise", "hr")
HISTORY_IN_CHECKPOINT = 50  # recent per-step records kept in state.json (inspection only)
TIMING_KEYS = ("seconds",)  # logged, never written into a checkpoint (bytes must not depend on the clock)
_MIX = 1_000_003  # mixes (seed, counter) into one 63-bit generator seed


def _seed(seed: int, counter: int, salt: int) -> int:
    return ((seed * _MIX + counter) * 31 + salt) % (2**63 - 1)


class MethodLoss(torch.nn.Module):
    """One forward = the method's loss of a batch at its times (what DDP wraps)."""

    def __init__(self, method: Method, model: SRModel):
        super().__init__()
        self.method = method
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor], times: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.method.loss(self.model, batch, times)


def _world() -> tuple[int, int]:
    """(rank, world size) of the current process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def lr_factor(warmup_steps: int, total_steps: int, decay: str = "constant") -> Callable[[int], float]:
    """LambdaLR factor of step k (1-based; the scheduler's epoch k-1): linear warm-up min(1, k / warmup), then
    ``decay`` over the remaining steps, with progress p = (k - warmup) / (total - warmup) in [0, 1]:
    constant 1, linear 1 - p, cosine (1 + cos(pi p)) / 2 (SGDR's annealing, without restarts). The last step runs
    at 0 under a decay, so the weights written at train.steps are those the rate settled."""
    def factor(epoch: int) -> float:
        k = epoch + 1
        if warmup_steps > 0 and k < warmup_steps:
            return k / warmup_steps
        if decay == "constant":
            return 1.0
        span = total_steps - warmup_steps
        p = min(1.0, max(0.0, (k - warmup_steps) / span)) if span > 0 else 1.0
        return 1.0 - p if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * p))
    return factor


def trainable_parameters(transformer) -> list[torch.nn.Parameter]:
    """Every parameter that trains, in ``named_parameters`` order (stable across processes: the optimizer's
    state in a checkpoint is indexed by it)."""
    return [p for _, p in transformer.named_parameters() if p.requires_grad]


def check_runtime(method: Method, train_cfg: TrainConfig, weights: str = "full", full: bool = False) -> None:
    """What the method (and the base's ``model.weights``) needs from the runtime, checked before anything is built;
    ``full``: every weight trains (no adapter)."""
    if full and weights != "full":
        raise UsageError(f"method {method.name!r} trains every weight here (lora.rank: 0 or a base pretraining), "
                         f"which model.weights={weights} freezes in quantised form: use model.weights=full")
    unknown = method.needs - RUNTIME_NEEDS
    if unknown:
        raise ValueError(f"method {method.name!r} needs {sorted(unknown)}, which the trainer does not provide")
    fsdp = train_cfg.strategy == "fsdp" and train_cfg.nproc_per_node * train_cfg.nnodes > 1
    if "forward_ad" in method.needs and fsdp:
        raise UsageError(f"method {method.name!r} uses forward-mode AD (torch.func.jvp), which does not run through "
                         "FSDP-sharded parameters: use train.strategy=ddp")
    if "forward_ad" in method.needs and weights != "full":
        raise UsageError(f"method {method.name!r} differentiates the network forward (torch.func.jvp), which does "
                         f"not pass through model.weights={weights} layers (bitsandbytes' 4-bit matmul has no "
                         "forward-mode derivative: measured, the JVP came out 67% wrong; fp8 casts crash it): use "
                         "model.weights=full (with gradient checkpointing and 8-bit AdamW for memory)")
    if weights != "full" and fsdp:
        raise UsageError(f"model.weights={weights} keeps quantised weights that FSDP cannot shard: use "
                         "train.strategy=ddp (each process holds the small quantised base)")


def make_optimizer(params: list[torch.nn.Parameter], train_cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over ``params``: torch's (two float32 moments a parameter) or bitsandbytes' blockwise 8-bit one."""
    if train_cfg.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=train_cfg.learning_rate)
    return torch.optim.AdamW(params, lr=train_cfg.learning_rate)


class Trainer:
    """Trains ``model`` by ``method``; subclass and override ``train_step`` to change a step.

    ``model.transformer`` is modified in place: the method's extensions, then the LoRA
    adapter (``lora_cfg``), then the method's fully trained modules are unfrozen (build a
    dedicated ``load_components`` for training). ``dataset`` is map-style (``len`` +
    ``__getitem__``) returning dicts of tensors with keys z_L (16, h, w), z0, noise (same)
    and hr (3, 8h, 8w) in [0, 1]. ``identity``: the static part of the saved models'
    ``fluxsr_model.json`` (``base``, ``trained_on``); the rest comes from the method and run.
    """

    def __init__(self, method: Method, model: SRModel, dataset, *, lora_cfg: LoraConfig, train_cfg: TrainConfig,
                 run_dir: str | Path | None = None, log_fn: Callable[[dict[str, Any]], None] | None = None,
                 identity: dict[str, Any] | None = None, extra_state: dict[str, Any] | None = None):
        if len(dataset) == 0:
            raise ValueError("the training dataset is empty: no complete (record, variant) samples")
        self.full = method.trains_in_full or lora_cfg.rank == 0  # every weight trains: no adapter
        check_runtime(method, train_cfg, getattr(model.components.config, "weights", "full"), full=self.full)
        self.method, self.model, self.dataset = method, model, dataset
        self.lora_cfg, self.train_cfg = lora_cfg, train_cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.log_fn = log_fn
        self.extra_state = extra_state or {}
        self.device = model.device
        self.rank, self.world = _world()
        # The trainer draws from its own generators (pure functions of seed and step); the global one, which library
        # code may draw from and which a checkpoint saves, starts from the seed too, not from torch's random start-up
        # seed: two identical runs then write the same checkpoint bytes.
        torch.manual_seed(_seed(train_cfg.seed, 0, 5))
        self.transformer = transformer = model.transformer
        self.identity = {"base": model_folder.base_model_of(model), **(identity or {})}
        method.extend(model)
        if self.full:
            self.modules = {**lora.full_modules(transformer), **method.trainable_modules(model)}
        else:
            lora_cfg = lora_cfg.model_copy(update={"target_modules": method.lora_targets(lora_cfg.target_modules,
                                                                                    model.components.backbone)})
            lora.add_lora(transformer, lora_cfg, seed=train_cfg.seed)
            self.modules = method.trainable_modules(model)
        for module in self.modules.values():
            module.requires_grad_(True)
        for p in trainable_parameters(transformer):  # master weights in float32 even when the model is bf16
            p.data = p.data.float()
        if train_cfg.gradient_checkpointing:
            parallelize.apply_activation_checkpointing(transformer, model.components.vae)
        if train_cfg.compile:
            parallelize.apply_compile(model.components.backbone.blocks(transformer))
        transformer.train()
        method.setup_training(model)
        self.loss_module = MethodLoss(method, model)
        self.step_module = parallelize.data_parallel(self.loss_module, transformer,
                                                     model.components.backbone.blocks(transformer), strategy=train_cfg.strategy,
                                                     world=self.world, device=self.device)
        self.params = trainable_parameters(transformer)  # after FSDP, which replaced them by sharded (DTensor) ones
        self.optimizer = make_optimizer(self.params, train_cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(train_cfg.lr_warmup_steps,
                                                                                   train_cfg.steps, train_cfg.lr_decay))
        self.step = 0  # completed steps
        self.history: list[dict[str, Any]] = []  # this process's steps
        self.resumed_recent: list[dict[str, Any]] = []  # the checkpoint's records of the steps before a resume

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
    def compute_loss(self, batch: dict[str, torch.Tensor],
                     generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The method's terms for this rank's batch; returns (terms, this rank's times)."""
        global_batch = batch["z_L"].shape[0] * self.world
        times = {k: self._local(v).to(self.device) if v.is_floating_point() else self._local(v)  # integer draws
                 for k, v in self.method.sample_times(global_batch, generator).items()}  # (seeds) stay on the CPU
        return self.step_module(batch, times), times

    def train_step(self, step: int, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """One optimiser step; returns the logged record (every term as a float, averaged over ranks).

        The terms and mean times are read back as one vector: one device sync per step,
        before backward, so a non-finite loss (on any rank) stops every rank before it
        touches the weights.
        """
        self.optimizer.zero_grad(set_to_none=True)
        terms, times = self.compute_loss(batch, self.step_generator(step))
        draws = {k: v for k, v in times.items() if v.is_floating_point()}  # not integer seeds
        names = (*self.method.term_names, *(f"{k}_mean" for k in draws))
        values = torch.stack([*(terms[k].detach().double() for k in self.method.term_names),
                              *(v.detach().double().mean() for v in draws.values())])
        if self.world > 1:
            dist.all_reduce(values)
            values /= self.world
        logged = dict(zip(names, values.tolist()))
        if not math.isfinite(logged["total"]):
            raise FloatingPointError(f"step {step}: non-finite loss {logged} (lower train.learning_rate?)")
        terms["total"].backward()
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

    def model_info(self) -> model_folder.ModelInfo:
        """The identity of the model as it is now (written into every checkpoint and the export)."""
        return model_folder.ModelInfo(
            method=self.method.name, method_params=self.method.metadata(), base=self.identity["base"],
            lora=model_folder.lora_settings(self.transformer), modules=sorted(self.modules),
            knobs=self.method.knob_defaults(), steps=self.step,
            trained_on={**self.identity.get("trained_on", {}), "samples": len(self.dataset)},
            init_from=self.identity.get("init_from", {}), training=self.settings(),
            super_resolves=self.method.super_resolves)

    def settings(self) -> dict:
        """The training settings that shaped the weights (the model card's table): optimiser, schedule, batch, data
        parallelism."""
        keep = ("batch_size", "learning_rate", "lr_warmup_steps", "lr_decay", "optimizer", "seed", "gradient_checkpointing",
                "strategy")
        return {**self.train_cfg.model_dump(include=set(keep)), "processes": self.world}

    def warm_start(self, path: str | Path) -> None:
        """Start from the weights of a trained model of the same method (or one in ``init_methods``) and base,
        before the first step.

        ``identity["init_from"]`` (``model_folder.init_record``) records it in the model either way, a
        resumed run included."""
        info = model_folder.read_info(path)
        if info.method not in (self.method.name, *self.method.init_methods):
            raise model_folder.ModelMismatchError(f"train.init_from {path} is a {info.method} model; this run trains "
                                                  f"{self.method.name}: give a model of "
                                                  f"{', '.join((self.method.name, *self.method.init_methods))} or none")
        info.check_base(self.identity["base"], str(path))
        if bool(info.lora) != lora.has_adapter(self.transformer):
            how = {True: "with LoRA (lora.rank > 0)", False: "in full (lora.rank: 0)"}
            raise model_folder.ModelMismatchError(f"train.init_from {path} was trained {how[bool(info.lora)]}, this "
                                                  f"run trains {how[not self.full]}: train both the same way")
        if info.lora:
            lora.set_lora_weights(self.transformer, path)
        shared = {name: m for name, m in self.modules.items() if name in info.modules}  # a module the init model
        if shared:  # lacks (MeanFlow's interval embedding, from the teacher) keeps its initialisation
            model_folder.load_module_state(shared, model_folder.model_dir(path) / model_folder.MODULES_FILE,
                                           strict=False)
        log.info("warm start from %s (%s, %d steps)", path, info.method, info.steps)

    def save_checkpoint(self) -> Path:
        """Every rank gathers the state (collective under FSDP), rank 0 writes it; returns the checkpoint's path."""
        if self.run_dir is None:
            raise ValueError("Trainer has no run_dir to checkpoint into")
        recent = [*self.resumed_recent, *({k: v for k, v in r.items() if k not in TIMING_KEYS} for r in self.history)]
        recent = recent[-HISTORY_IN_CHECKPOINT:]
        ckpt.save_checkpoint(self.run_dir, self.step, transformer=self.transformer, optimizer=self.optimizer,
                             pipeline=self.model.components.backbone.pipeline,
                             scheduler=self.scheduler, modules=self.modules, info=self.model_info(),
                             write=self.rank == 0, extra={**self.extra_state, "recent": recent})
        if self.world > 1:
            dist.barrier()
        return ckpt.step_dir(self.run_dir, self.step)

    def export(self, directory: str | Path) -> Path:
        """Write the trained model (weights + identity) into ``directory`` (every rank calls: FSDP gathers);
        returns the main weights file (rank 0) or the path it would have."""
        lora_tensors = lora.lora_state_dict(self.transformer)
        module_tensors = model_folder.module_state_dict(self.modules)
        directory = Path(directory)
        if self.rank == 0:
            directory.mkdir(parents=True, exist_ok=True)
            model_folder.write_weights(directory, self.transformer, lora_tensors, module_tensors,
                                       self.model.components.backbone.pipeline)
            model_folder.write_info(directory, self.model_info())
        return model_folder.main_weights(directory)

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
                                     scheduler=self.scheduler, modules=self.modules)
        self.step = int(state["step"])
        # the steps before the checkpoint, so the next checkpoints hold the same records (and bytes) as an
        # uninterrupted run's
        self.resumed_recent = list((state.get("extra") or {}).get("recent", []))
        log.info("resumed from %s at step %d", path, self.step)
        return True

    def epochs_done(self) -> float:
        return self.step * self.train_cfg.batch_size * self.world / len(self.dataset)

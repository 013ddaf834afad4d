"""Stage 4 task: one training run of a method, a subprocess (through torchrun for several processes), cached on
(latents, method, config, code)."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task

from fluxsr_core.atomic import sha256_file, write_bytes
from fluxsr_core.config import FluxSRConfig
from fluxsr_core.errors import InputNotFoundError, UsageError
from fluxsr_core.methods import check_data_source, method_class
from fluxsr_core.model_folder import keyed, main_weights, model_digest, model_dir, read_info
from storage.layout import stage_dir, stage_key
from storage.manifest import manifest_digest
from storage.registry import ModelRegistry
from tasks.caching import code_version
from tasks.common import finished_stage, release_components
from tasks.encode import plan_encode
from tasks.gpu import gpu_slot, scheduling_enabled, slot_count

STAGE = "train"
CONFIG_FILE = "train-config.json"  # the training sections the worker processes read (tasks.train_worker --config)
CODE_MODULES = ("tasks.train", "tasks.train_worker")  # + imports; the worker runs via `python -m`, not an import
TRAINER_SECTIONS = frozenset({"preset", "model", "lora", "train"})  # what every training reads; a method adds the
# sections of its parameters (``Method.config_sections``): FTD's key holds no OFTSR setting, and so on


def sections(method: str) -> set[str]:
    """The config sections the training of ``method`` reads: its task input and cache key."""
    return set(TRAINER_SECTIONS | method_class(method).config_sections())


@dataclass(frozen=True)
class TrainPlan:
    method: str
    key: str
    directory: Path
    store_path: Path
    latents_key: str
    latents_digest: str
    records: int  # the dataset's size: the store's first ``records`` records (it may have grown past them)
    init_dir: Path | None  # the model it warm-starts from (train.init_from resolved; a distilled method's teacher)
    init_digest: str | None
    teacher_dir: Path | None = None  # the frozen teacher of a distilled method (its final/ folder)
    teacher_digest: str | None = None


def plan_train(cfg: FluxSRConfig, root: str | Path, method: str = "ftd") -> TrainPlan:
    """Where the training of ``method`` on this config's latents lives: ``<root>/train/<key>/``."""
    cls = method_class(method)  # an unknown method fails here, naming the available ones
    check_data_source([method], cfg.pairs.source)
    enc = plan_encode(cfg, root)
    finished_stage(enc.directory, "encode-latents", enc.manifest_name)
    digest = manifest_digest(enc.directory, enc.manifest_name)
    teacher_dir = finished_teacher(cfg, root, cls.distils) if cls.distils else None
    init_dir = resolve_init(cfg, root, method) or teacher_dir  # a distilled student starts as its teacher
    init_digest = model_digest(init_dir) if init_dir else None
    teacher_digest = model_digest(teacher_dir) if teacher_dir else None
    identity = {"method": method, **keyed(training_config(cfg, method), sections(method))}
    key = stage_key(identity, code_version(*CODE_MODULES),
                    {"latents": digest, "init": init_digest or "none", "teacher": teacher_digest or "none"})
    return TrainPlan(method=method, key=key, directory=stage_dir(root, STAGE, key), store_path=enc.store_path,
                     latents_key=enc.key, latents_digest=digest, records=enc.records, init_dir=init_dir,
                     init_digest=init_digest, teacher_dir=teacher_dir, teacher_digest=teacher_digest)


def finished_teacher(cfg: FluxSRConfig, root: str | Path, teacher_method: str) -> Path:
    """The trained ``teacher_method`` model of this config's latents (its training's ``final/``), which a distilled
    method needs; an error saying how to train it when it is not there."""
    final = plan_train(cfg, root, teacher_method).directory / "final"
    if not (final / "fluxsr_model.json").is_file():
        raise InputNotFoundError(f"no trained {teacher_method} for this config at {final}: train it first "
                                 f"(`fluxsr train --method {teacher_method}`; `fluxsr run` trains it before the "
                                 "methods distilled from it)")
    return final


def resolve_init(cfg: FluxSRConfig, root: str | Path, method: str) -> Path | None:
    """``train.init_from`` as a model folder: none -> None; latest -> the current promoted model of ``method`` under
    ``root`` when it was trained on this config's base (else None: a fresh start); a folder -> that folder."""
    spec = cfg.train.init_from
    if spec == "none":
        return None
    if spec != "latest":
        return model_dir(spec)  # a missing folder is an error naming it
    current = ModelRegistry(root).current(method)
    if current is None:
        return None
    base = read_info(current.path).base
    same = (base.get("preset"), base.get("seed")) == (cfg.model.preset, cfg.model.seed if cfg.model.preset == "tiny" else None)
    return current.path if same else None


def training_config(cfg: FluxSRConfig, method: str) -> FluxSRConfig:
    """The sections training reads (``sections``), the others at their preset's values: the task's input, so a
    setting training never reads (a benchmark metric, say) leaves its cache key alone. ``train.init_from`` is
    replaced by what it resolves to (``TrainPlan.init_digest`` in the key), since 'latest' moves."""
    data = cfg.model_dump(include=sections(method))
    data["train"]["init_from"] = "none"
    data["train"]["steps"] = cfg.train.method_steps.get(method, cfg.train.steps)  # this method's own, so a
    data["train"]["method_steps"] = {}  # student's steps never change its teacher's key
    return FluxSRConfig.model_validate(data)


def worker_command(config_file: str, store_path: str, run_dir: str, *, method: str = "ftd",
                   latents_key: str | None = None, nproc_per_node: int = 1, nnodes: int = 1,
                   node_rank: int = 0, rdzv_endpoint: str | None = None, records: int | None = None,
                   init_from: str | None = None, teacher: str | None = None) -> list[str]:
    """The trainer's command line: the worker itself for one process (torchrun's agent would cost ~4 s of start-up
    and nothing else), torchrun for several: ``--standalone`` on one machine, c10d rendezvous across several."""
    cmd = [sys.executable]
    if nproc_per_node > 1 or nnodes > 1:
        cmd += ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc_per_node)]
    if nproc_per_node > 1 and nnodes == 1:
        cmd.append("--standalone")
    elif nnodes > 1:
        if not rdzv_endpoint:
            raise UsageError(f"train.nnodes={nnodes} needs rdzv_endpoint=HOST:PORT (a machine every node reaches)")
        cmd += ["--nnodes", str(nnodes), "--node-rank", str(node_rank), "--rdzv-backend", "c10d",
                "--rdzv-endpoint", rdzv_endpoint, "--rdzv-id", Path(run_dir).name]
    cmd += ["-m", "tasks.train_worker", "--config", config_file, "--method", method, "--store", store_path,
            "--run-dir", run_dir]
    cmd += ["--latents-key", latents_key] if latents_key else []
    cmd += ["--records", str(records)] if records is not None else []
    cmd += ["--teacher", teacher] if teacher else []
    return cmd + (["--init-from", init_from] if init_from else [])


@task(name="train-model", task_run_name="train-{method}-{latents_digest:.8}")
def train_model(directory: str, store_path: str, method: str, config: FluxSRConfig, latents_key: str,
                latents_digest: str, records: int | None = None, init_dir: str | None = None,
                init_digest: str | None = None, teacher_dir: str | None = None, teacher_digest: str | None = None,
                node_rank: int = 0, rdzv_endpoint: str | None = None) -> dict:
    """Run (or resume) the training of ``method`` in ``directory`` in a subprocess; returns the final model's entry.

    ``config`` holds the training sections (``training_config``); the worker processes read it from a JSON
    file beside the run (a process boundary), validated like any config. ``records``: the dataset's size
    in the store; ``init_dir``/``init_digest``: the model to warm-start from (the digest is in the key).

    ``train.nproc_per_node`` processes start here, each on its own GPU of the slot
    (or gloo processes on CPU); with ``train.nnodes`` > 1 every machine runs this
    task with its ``node_rank`` and the same ``rdzv_endpoint``, on a shared ``directory``.
    """
    log = get_run_logger()
    train_cfg = config.train
    run_dir = Path(directory)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / CONFIG_FILE  # one fixed name, written whole: a killed run leaves no stray temp file
    write_bytes(config_file, config.model_dump_json().encode())
    cmd = worker_command(str(config_file), store_path, str(run_dir), method=method, latents_key=latents_key,
                           records=records, init_from=init_dir, teacher=teacher_dir,
                           nproc_per_node=train_cfg.nproc_per_node,
                           nnodes=train_cfg.nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint)
    if scheduling_enabled() and train_cfg.nproc_per_node > slot_count():
        raise UsageError(f"train.nproc_per_node={train_cfg.nproc_per_node} needs that many GPUs, "
                         f"this machine has {slot_count()} GPU slots")
    release_components()  # the pipeline's teacher and VAE leave the GPU before the trainer loads its own
    slots = gpu_slot(count=train_cfg.nproc_per_node) if scheduling_enabled() else nullcontext()
    with slots as slot:
        env = slot.env() if slot is not None else dict(os.environ)  # CUDA_VISIBLE_DEVICES pinned to the slot
        log.info("launching: %s", " ".join(cmd))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        tail: list[str] = []
        for line in proc.stdout:  # stream the trainer's output into the run's logs
            line = line.rstrip()
            tail = (tail + [line])[-40:]
            log.info(line)
        code = proc.wait()
    if code != 0:
        raise RuntimeError(f"training exited with {code}; last output:\n" + "\n".join(tail))
    weights = main_weights(run_dir / "final")
    return {"weights": str(weights.relative_to(run_dir)), "sha256": sha256_file(weights),
            "loss_plot": "loss.png", "losses": "losses.jsonl"}

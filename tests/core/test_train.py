"""Training core on the tiny preset, CPU: loss goes down, only what the method trains changes, exports load,
resume is exact; a method with an extra fully trained module goes through the same loop."""

import json
import math
import shutil
import subprocess
import sys

import pytest
import torch

from fluxsr_core.config import LoraConfig, ModelConfig, TrainConfig
from fluxsr_core.methods.ftd import FTD
from fluxsr_core.models import load_components, lora
from fluxsr_core.models.sr_model import SRModel, encode_empty_prompt
from fluxsr_core.models.velocity import predict_velocity
from fluxsr_core.perceptual import build_lpips
from fluxsr_core.train.checkpoint import latest_checkpoint
from fluxsr_core.train.loop import Trainer, lr_factor
from helpers import REPO, latent_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _dataset(n=2):
    return latent_samples(n, seed=123)


T_L = 0.5


@pytest.fixture(scope="module")
def lpips_model(one_torch_thread):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_lpips("alex", allow_random=True)


def _trainer(lpips_model, run_dir=None, method_cls=FTD, **train):
    cfg = TrainConfig(**{"batch_size": 2, "learning_rate": 1e-3, "seed": 0, **train})
    method = method_cls(T_L=T_L, lpips_net="alex", allow_random_lpips_backbone=True, lpips_model=lpips_model)
    return Trainer(method, SRModel(load_components(ModelConfig())), _dataset(), lora_cfg=LoraConfig(rank=4),
                   train_cfg=cfg, run_dir=run_dir)


def test_non_finite_loss_stops_before_the_weights_change(lpips_model):
    tr = _trainer(lpips_model)
    before = lora.lora_state_dict(tr.transformer)
    batch = tr.batch_for_step(1)
    batch["z0"][0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="step 1: non-finite loss"):
        tr.train_step(1, batch)
    after = lora.lora_state_dict(tr.transformer)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_loss_decreases_and_only_lora_changes(lpips_model):
    tr = _trainer(lpips_model)
    before = {k: v.clone() for k, v in tr.transformer.state_dict().items()}
    vae_before = {k: v.clone() for k, v in tr.model.components.vae.state_dict().items()}
    batch = tr.batch_for_step(1)
    gen = lambda: torch.Generator().manual_seed(7)
    with torch.no_grad():
        start = tr.compute_loss(batch, gen())[0]["total"].item()
    records = [tr.train_step(s, batch) for s in range(1, 9)]
    with torch.no_grad():
        end = tr.compute_loss(batch, gen())[0]["total"].item()
    assert end < start, (start, end)
    for r in records:  # every term is logged
        assert set(r) >= {"step", "total", "ftd", "mse", "tv_lpips", "adl", "t_mean", "lr"}
        assert T_L <= r["t_mean"] <= 1.0
    after = tr.transformer.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all("lora_" in k for k in changed)
    assert any("lora_B" in k for k in changed)
    assert all(torch.equal(v, tr.model.components.vae.state_dict()[k]) for k, v in vae_before.items())
    assert all(p.requires_grad == ("lora_" in n) for n, p in tr.transformer.named_parameters())


def test_exported_lora_round_trip(tmp_path, lpips_model):
    tr = _trainer(lpips_model)
    tr.fit(2)
    f = lora.save_lora(tr.transformer, tmp_path / "lora", "FluxPipeline")
    from safetensors import safe_open

    with safe_open(str(f), "pt") as s:
        keys = list(s.keys())
    assert keys and all(k.startswith("transformer.") and "lora" in k for k in keys)
    fresh = load_components(ModelConfig())
    lora.load_lora(fresh.transformer, tmp_path / "lora")
    cond = encode_empty_prompt(fresh)
    z = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.5])
    tr.transformer.eval()
    with torch.no_grad():
        a = predict_velocity(fresh.backbone, tr.transformer, z, t, cond, 3.5)
        b = predict_velocity(fresh.backbone, fresh.transformer, z, t, cond, 3.5)
        base = predict_velocity(fresh.backbone, load_components(ModelConfig()).transformer, z, t, cond, 3.5)
    assert torch.equal(a, b)
    assert not torch.equal(a, base)  # the LoRA did change the model


@pytest.mark.parametrize("decay, expected", [("constant", [0.25, 0.5, 0.75, 1, 1, 1, 1, 1]),
                                             ("linear", [0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25, 0])])
def test_learning_rate_factor_warms_up_then_decays_to_zero_at_the_last_step(decay, expected):
    factor = lr_factor(warmup_steps=4, total_steps=8, decay=decay)
    assert [factor(k - 1) for k in range(1, 9)] == pytest.approx(expected)  # LambdaLR's epoch k-1 is step k


def test_kill_and_resume_repeats_the_loss_sequence(tmp_path, lpips_model):
    full = _trainer(lpips_model, tmp_path / "full", steps=6, checkpoint_every=3, lr_warmup_steps=2, lr_decay="cosine")
    losses = [r["total"] for r in full.fit()]
    lrs = [r["lr"] for r in full.history]
    # warm-up over 2 steps, then a half cosine from step 2 (1) to step 6 (0)
    assert lrs == pytest.approx([1e-3 * f for f in (0.5, 1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5,
                                                      (1 - math.cos(math.pi / 4)) / 2, 0.0)])
    assert latest_checkpoint(tmp_path / "full").name == "step-000006"
    # a run "killed" after its step-3 checkpoint (plus a half-written checkpoint left behind)
    shutil.copytree(tmp_path / "full" / "step-000003", tmp_path / "killed" / "step-000003")
    (tmp_path / "killed" / "step-000004.tmp").mkdir()
    resumed = _trainer(lpips_model, tmp_path / "killed", steps=6, checkpoint_every=3, lr_warmup_steps=2,
                       lr_decay="cosine")
    assert resumed.resume()
    assert resumed.step == 3 and not (tmp_path / "killed" / "step-000004.tmp").exists()
    again = [r["total"] for r in resumed.fit()]
    assert again == losses[3:]
    assert [r["lr"] for r in resumed.history] == lrs[3:]  # the LR scheduler resumed too
    assert [r["step"] for r in resumed.history] == [4, 5, 6]
    for name in ("step-000003", "step-000006"):  # the same bytes as the uninterrupted run's (no start-up RNG seed)
        for f in sorted((tmp_path / "full" / name).iterdir()):
            assert f.read_bytes() == (tmp_path / "killed" / name / f.name).read_bytes(), (name, f.name)


def _torchrun_two(out, steps, jobs: list[tuple[str, str]], run_dir=None) -> dict:
    """tests/ddp_trainer.py under torchrun with 2 gloo processes x batch 1, every (strategy, method) job in one
    launch: per job, each rank's final LoRA tensors and logs."""
    from safetensors.torch import load_file

    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(REPO / "tests" / "ddp_trainer.py"), str(out), "1", str(steps), ",".join(f"{s}:{m}" for s, m in jobs),
           *([str(run_dir)] if run_dir else [])]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {(s, m): ([load_file(str(out / f"rank{r}-{s}-{m}.safetensors")) for r in (0, 1)],
                     [json.loads((out / f"rank{r}-{s}-{m}.json").read_text()) for r in (0, 1)]) for s, m in jobs}


PARITY_STEPS = 3
PARITY_JOBS = [("ddp", "ftd"), ("fsdp", "ftd"), ("ddp", "sr-teacher"), ("ddp", "oftsr"), ("ddp", "meanflow")]


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """Every parity job in one torchrun launch (the FSDP one checkpointing into ``run``)."""
    root = tmp_path_factory.mktemp("parity")
    return root, _torchrun_two(root / "full", PARITY_STEPS, PARITY_JOBS, root / "run")


@pytest.mark.parametrize("strategy, method", PARITY_JOBS)
def test_two_process_gloo_training_matches_one_process_on_the_combined_batch(two_process_runs, strategy, method):
    """torchrun, 2 CPU processes x batch 1 vs one process x batch 2: same samples, same times and noise seeds,
    averaged gradients, for every method (the SR teacher, and the OFTSR and MeanFlow distillations of a frozen
    teacher: MeanFlow's torch.func.jvp runs inside the DDP-wrapped loss module, on the transformer itself), under
    DDP and (FTD) FSDP."""
    import ddp_trainer

    ranks, logs = two_process_runs[1][(strategy, method)]
    assert ranks[0].keys() == ranks[1].keys() and ranks[0]
    for k in ranks[0]:  # the replicas (or the gathered shards) are identical, bit for bit
        assert torch.equal(ranks[0][k], ranks[1][k]), k
    single = ddp_trainer.run(batch=2, steps=PARITY_STEPS, method=method)
    ref = lora.lora_state_dict(single.transformer)
    start = lora.lora_state_dict(ddp_trainer.build(batch=2, steps=PARITY_STEPS, method=method).transformer)
    for k, v in ref.items():
        assert torch.allclose(ranks[0][k], v, atol=1e-6, rtol=1e-5), (k, (ranks[0][k] - v).abs().max())
    assert any(not torch.equal(ref[k], start[k]) for k in ref)  # training moved the adapters
    assert len(logs[0]) == PARITY_STEPS
    terms = [*single.method.term_names, "lr", *(k for k in single.history[0] if k.endswith("_mean"))]
    for rec2, rec1 in zip(logs[0], single.history):  # rank-averaged terms = the combined batch's terms
        for term in terms:
            assert rec2[term] == pytest.approx(rec1[term], rel=1e-5, abs=1e-7), (rec2["step"], term)


def test_fsdp_checkpoints_gather_and_a_second_launch_resumes_to_the_same_adapters(two_process_runs):
    """FSDP checkpoints gather the sharded adapters and AdamW state into a plain, whole LoRA; a second launch
    resumes from step 2 to the same final adapters."""
    root, launched = two_process_runs
    run_dir = root / "run"
    ranks, logs = launched[("fsdp", "ftd")]
    assert sorted(p.name for p in run_dir.iterdir()) == ["step-000002", "step-000003"]
    saved = lora.lora_state_dict(_loaded(run_dir / "step-000003"))  # a plain, whole LoRA for inference
    assert all(torch.equal(saved[k], ranks[0][k]) for k in saved)
    resumed_dir = root / "resumed"
    shutil.copytree(run_dir / "step-000002", resumed_dir / "step-000002")
    again = _torchrun_two(root / "again", PARITY_STEPS, [("fsdp", "ftd")], resumed_dir)[("fsdp", "ftd")]
    assert [r["step"] for r in again[1][0]] == [3] and again[1][0][0]["total"] == logs[0][2]["total"]
    assert all(torch.equal(again[0][0][k], ranks[0][k]) for k in ranks[0])


def _loaded(path):
    tr = load_components(ModelConfig()).transformer
    lora.load_lora(tr, path)
    return tr


class FTDWithOutput(FTD):
    """FTD that also trains the transformer's output projection in full: a method with one extra module
    (what a widened input projection or a second time embedding is for OFTSR and MeanFlow)."""

    def trainable_modules(self, model):
        return {"proj_out": model.transformer.proj_out}


def test_a_method_module_is_optimised_checkpointed_resumed_and_exported(tmp_path, lpips_model):
    from safetensors.torch import load_file

    from fluxsr_core import model_folder

    full = _trainer(lpips_model, tmp_path / "full", method_cls=FTDWithOutput, steps=4, checkpoint_every=2)
    start = {k: v.clone() for k, v in full.transformer.proj_out.state_dict().items()}
    assert full.modules["proj_out"].weight.requires_grad and full.modules["proj_out"].weight.dtype == torch.float32
    losses = [r["total"] for r in full.fit()]
    trained = full.transformer.proj_out.state_dict()
    assert all(not torch.equal(start[k], trained[k]) for k in start)  # optimised, not only the LoRA
    saved = load_file(str(tmp_path / "full" / "step-000004" / model_folder.MODULES_FILE))
    assert sorted(saved) == ["proj_out.bias", "proj_out.weight"]
    assert all(torch.equal(saved[f"proj_out.{k}"], v) for k, v in trained.items())  # checkpointed
    resumed = _trainer(lpips_model, tmp_path / "full", method_cls=FTDWithOutput, steps=4, checkpoint_every=2)
    assert resumed.resume(tmp_path / "full" / "step-000002")
    assert [r["total"] for r in resumed.fit()] == losses[2:]  # resumed: module and its AdamW state restored
    assert all(torch.equal(resumed.transformer.proj_out.state_dict()[k], v) for k, v in trained.items())
    full.export(tmp_path / "export")
    info = model_folder.read_info(tmp_path / "export")
    assert info.modules == ["proj_out"] and info.steps == 4 and info.method == "ftd"
    fresh = SRModel(load_components(ModelConfig()))
    lora.load_lora(fresh.transformer, tmp_path / "export")
    model_folder.load_module_state({"proj_out": fresh.transformer.proj_out}, tmp_path / "export" / model_folder.MODULES_FILE)
    z, t = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(2)), torch.tensor([0.6])
    full.transformer.eval()
    with torch.no_grad():
        assert torch.equal(full.model.velocity(z, t), fresh.velocity(z, t))  # exported: the same model

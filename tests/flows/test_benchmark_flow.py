"""benchmark flow through the CLI: one table for bicubic and a peer, cached on re-run, absent weights reported."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from helpers import make_lora, run_cli_here, summary_of


def _subset(shared: Path, tmp: Path, n: int = 3) -> tuple[Path, Path, Path]:
    src = shared / "data" / "ResShift_ImageNetVal_x4"
    lr, hr, peer = tmp / "lq", tmp / "gt", tmp / "peer"
    for d in (lr, hr, peer):
        d.mkdir()
    for p in sorted((src / "lq").iterdir())[:n]:
        shutil.copy(p, lr / p.name)
        shutil.copy(src / "gt" / p.name, hr / p.name)
        im = Image.open(p).convert("RGB")
        im.resize((im.width * 4, im.height * 4), Image.NEAREST).save(peer / (p.stem + ".png"))
    return lr, hr, peer


def test_benchmark_table_models_peer_cache_and_unavailable_metric(prefect_env, shared, tmp_path):
    """bicubic, a trained model at two step fractions and a peer folder in one table; cached; lpips unavailable."""
    lr, hr, peer = _subset(shared, tmp_path)
    weights = make_lora(tmp_path / "lora")
    env = {**prefect_env, "TORCH_HOME": str(tmp_path / "empty-torch-home")}
    args = ["bench", str(lr), "--hr", str(hr), "--peer", f"nearest={peer}", "--model", f"ours={weights}",
            "--knob", "step_fraction=0.5", "--knob", "step_fraction=1", "--out", str(tmp_path / "out"), "--set", "bench.metrics=[psnr,lpips]"]
    s = summary_of(run_cli_here(env, *args))
    methods = ["bicubic", "ours step_fraction=0.5", "ours step_fraction=1", "nearest"]
    assert s["computed"] == 1 and s["methods"] == methods
    assert "lpips" in s["unavailable"] and ".pth" in s["unavailable"]["lpips"]
    table = Path(s["table"]).read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| Method", "| ---"))]
    assert [r.split("|")[1].strip() for r in rows] == methods
    assert "psnr" in table and "Y channel" in table and "| NFE | s/image |" in table
    data = json.loads((Path(s["directory"]) / "summary.json").read_text())
    assert data["unavailable"]["lpips"] and all(m.get("lpips") is None for m in s["summary"].values())
    assert s["summary"]["bicubic"]["psnr"] > s["summary"]["nearest"]["psnr"]
    assert s["summary"]["ours step_fraction=0.5"]["psnr"] != s["summary"]["ours step_fraction=1"]["psnr"]

    # the model rows are the student of `fluxsr upscale`, same LoRA and settings, to 8-bit rounding
    import torch

    from fluxsr_core.config import tiny
    from fluxsr_core.imageio import read_image
    from fluxsr_core.student import load_student

    first = sorted(lr.iterdir())[0]
    with torch.inference_mode():
        mine = load_student(tiny(), weights).upscale(read_image(first), tiny().infer, step_fraction=0.5)
    saved = read_image(Path(s["directory"]) / "sr" / "ours step_fraction=0.5" / f"{first.stem}.png")
    assert (saved - mine).abs().max().item() <= 0.5 / 255 + 1e-6

    again = summary_of(run_cli_here(env, *args))
    assert again["cached"] == 1 and again["computed"] == 0 and again["summary"] == s["summary"]
    make_lora(weights, seed=2)  # another checkpoint under the same path: a new key, scored again
    other = summary_of(run_cli_here(env, *args))
    assert other["computed"] == 1 and other["key"] != s["key"]
    assert other["summary"]["bicubic"] == s["summary"]["bicubic"]
    assert other["summary"]["ours step_fraction=1"] != s["summary"]["ours step_fraction=1"]


def test_synthetic_testset_from_hr_folder_is_reproducible_and_scored(prefect_env, shared, tmp_path):
    src = shared / "data" / "RealSR_x4" / "test_HR"
    hr_in = tmp_path / "hr_in"
    hr_in.mkdir()
    for p in sorted(src.iterdir())[:2]:
        shutil.copy(p, hr_in / p.name)
    args = ["bench", "--synthetic-from", str(hr_in), "--out", str(tmp_path / "out"),
            "--set", "bench.synthetic_crop=128", "--set", "bench.metrics=[psnr]"]
    s = summary_of(run_cli_here(prefect_env, *args))
    (testset,) = list((tmp_path / "out" / "testsets").iterdir())
    lrs = sorted((testset / "lr").glob("*.png"))
    assert [p.name for p in lrs] == [p.stem + ".png" for p in sorted(hr_in.iterdir())]
    assert Image.open(lrs[0]).size == (32, 32) and Image.open(testset / "hr" / lrs[0].name).size == (128, 128)
    assert s["methods"] == ["bicubic"] and s["summary"]["bicubic"]["psnr"] > 15
    first = {p.name: p.read_bytes() for p in lrs}
    shutil.rmtree(testset)  # a deleted cached output is regenerated identically
    again = summary_of(run_cli_here(prefect_env, *args))
    assert {p.name: p.read_bytes() for p in sorted((testset / "lr").glob("*.png"))} == first
    assert again["summary"] == s["summary"]


@pytest.mark.parametrize("peers, with_model", [({"bicubic": "p"}, False), ({"ours": "p"}, True)])
def test_method_names_must_be_unique(tmp_path, peers, with_model):
    from flows.benchmark import benchmark

    models = {"ours": str(make_lora(tmp_path / "lora"))} if with_model else {}
    with pytest.raises(ValueError, match="are used twice"):
        benchmark.fn(lr_dir=str(tmp_path), peers=peers, models=models, out=str(tmp_path))

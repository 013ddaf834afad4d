"""benchmark flow through the CLI: one table for bicubic and a peer, cached on re-run, absent weights reported."""

import json
import shutil
from pathlib import Path

from PIL import Image

from helpers import run_cli, summary_of


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


def test_benchmark_table_cache_and_unavailable_metric(prefect_env, shared, tmp_path):
    lr, hr, peer = _subset(shared, tmp_path)
    env = {**prefect_env, "TORCH_HOME": str(tmp_path / "empty-torch-home")}
    args = ["bench", str(lr), "--hr", str(hr), "--peer", f"nearest={peer}", "--out", str(tmp_path / "out"),
            "--set", "bench.metrics=[psnr,ssim,lpips]"]
    s = summary_of(run_cli(env, *args))
    assert s["computed"] == 1 and s["methods"] == ["bicubic", "nearest"]
    assert "lpips" in s["unavailable"] and ".pth" in s["unavailable"]["lpips"]
    table = Path(s["table"]).read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| Method", "| ---"))]
    assert [r.split("|")[1].strip() for r in rows] == ["bicubic", "nearest"]
    assert "psnr" in table and "ssim" in table and "Y channel" in table
    data = json.loads((Path(s["directory"]) / "summary.json").read_text())
    assert data["unavailable"]["lpips"] and all(m.get("lpips") is None for m in s["summary"].values())
    assert s["summary"]["bicubic"]["psnr"] > s["summary"]["nearest"]["psnr"]
    again = summary_of(run_cli(env, *args))
    assert again["cached"] == 1 and again["computed"] == 0 and again["summary"] == s["summary"]

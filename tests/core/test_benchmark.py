"""Benchmark scoring: one table for bicubic, a peer's folder and a model hook; bad inputs; odd images."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fluxsr_core.benchmark import (
    BenchmarkError,
    BenchMethod,
    bicubic_upscale,
    discover_testset,
    run_benchmark,
)
from fluxsr_core.imageio import read_image, write_image
from fluxsr_core.metrics import score

PAIRS = ["Canon_001_LR4", "Canon_010_LR4", "Nikon_050_LR4"]
FAST = ["psnr", "gmsd", "piqe"]  # pyiqa's ssim/ms_ssim/vif cost ~1 s an image on CPU: not needed here


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def pairs(shared, tmp_path) -> tuple[Path, Path]:
    """Three RealSR pairs (LR 128 px, HR 512 px) copied so that tests may break them."""
    src = shared / "data" / "RealSR_x4"
    lr, hr = tmp_path / "lr", tmp_path / "hr"
    lr.mkdir()
    hr.mkdir()
    for name in PAIRS:
        shutil.copy(src / "test_LR" / f"{name}.png", lr)
        shutil.copy(src / "test_HR" / f"{name}.png", hr)
    (lr / "README.txt").write_text("not an image, ignored by name")
    return lr, hr


@pytest.fixture()
def peer(pairs, tmp_path) -> Path:
    """Another system's outputs: bilinear x4 of the LR, saved as 8-bit PNGs under the same names."""
    out = tmp_path / "peer"
    for p in sorted(pairs[0].glob("*.png")):
        write_image(out / p.name, F.interpolate(read_image(p), scale_factor=4, mode="bilinear", align_corners=False))
    return out


def _table(md: str) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return cells[0], cells[2:]


def nearest_x4(lr: torch.Tensor) -> torch.Tensor:
    return F.interpolate(lr, scale_factor=4, mode="nearest")


def test_one_table_for_bicubic_peer_and_model(pairs, peer, tmp_path, empty_torch_home):
    lr_dir, hr_dir = pairs
    metrics = [*FAST, "lpips"]
    net = torch.nn.Upsample(scale_factor=2, mode="nearest")  # the model's network: two passes per image
    methods = [BenchMethod("bicubic"), BenchMethod("peer-bilinear", peer), BenchMethod("model", lambda lr: net(net(lr)), network=net)]
    res = run_benchmark(discover_testset(lr_dir, hr_dir), methods, metrics, tmp_path / "out", crop_border=4)

    md = res.summary_md.read_text()
    header, rows = _table(md)
    assert header == ["Method", "psnr ↑", "gmsd ↓", "piqe ↓", "lpips ↓", "NFE", "s/image"]
    assert [r[0] for r in rows] == ["bicubic", "peer-bilinear", "model"]
    assert all(len(r) == 3 + len(metrics) and r[len(metrics)] == "unavailable" for r in rows)
    # each row's cost: network evaluations counted as they ran (0 for bicubic; another system's are unknown)
    assert [r[-2] for r in rows] == ["0", "n/a", "2"] and rows[1][-1] == "n/a"
    assert res.cost["model"]["evaluations"] == 2 and res.cost["peer-bilinear"]["seconds"] is None
    assert all(res.cost[m]["seconds"] > 0 for m in ("bicubic", "model"))
    assert "NFE: network (transformer) evaluations per image" in md
    assert "PSNR/SSIM protocol: Y channel of YCbCr (BT.601), crop border 4, pyiqa" in md
    assert "alexnet-owt-7be5be79.pth" in md

    # the table's bicubic PSNR is the mean of independently computed per-image scores
    direct = [score("psnr", bicubic_upscale(read_image(lr_dir / f"{n}.png")), read_image(hr_dir / f"{n}.png"),
                    crop_border=4) for n in PAIRS]
    assert res.summary["bicubic"]["psnr"] == pytest.approx(np.mean(direct), abs=1e-9)
    assert rows[0][1] == f"{np.mean(direct):.4f}"
    assert abs(res.summary["peer-bilinear"]["psnr"] - res.summary["bicubic"]["psnr"]) > 0.05
    assert res.summary["model"]["lpips"] is None and res.images == PAIRS

    with res.per_image_csv.open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 3 * len(PAIRS) and list(table[0]) == ["method", "image", *metrics, "evaluations", "seconds"]
    assert {r["evaluations"] for r in table if r["method"] == "model"} == {"2"}
    assert all(r["lpips"] == "" and float(r["psnr"]) > 15 for r in table)

    data = json.loads(res.summary_json.read_text())
    assert data["n_images"] == 3 and data["metrics"]["lpips"]["available"] is False and data["cost"] == res.cost
    assert "LPIPS_v0.1_alex-df73285e.pth" in data["unavailable"]["lpips"]
    assert data["metrics"]["psnr"]["protocol"].startswith("Y of YCbCr")
    json.dumps(res.to_dict())

    assert [p.name for p in res.crops] == [f"{n}.png" for n in PAIRS]
    with Image.open(res.crops[0]) as im:  # LR, three methods, HR: five 128-px panels
        assert im.size == (5 * 128 + 4 * 4, 128 + 16)


def test_lr_only_set_scores_no_reference_metrics(shared, tmp_path):
    lr = tmp_path / "lr"
    lr.mkdir()
    for name in ("chip.png", "penguin1.png"):  # 112 px RGB; 167x215 RGBA
        shutil.copy(shared / "data" / "RealSet65" / name, lr)
    ts = discover_testset(lr)
    assert not ts.paired and [i.name for i in ts.items] == ["chip", "penguin1"]
    res = run_benchmark(ts, {"bicubic": "bicubic", "model": nearest_x4}, ["piqe", "psnr"], tmp_path / "out",
                        save_sr=True)
    assert "no HR" in res.unavailable["psnr"]
    assert all(0 <= res.summary[m]["piqe"] <= 100 for m in ("bicubic", "model"))
    assert read_image(tmp_path / "out" / "sr" / "model" / "penguin1.png").shape == (1, 3, 4 * 215, 4 * 167)
    with Image.open(res.crops[0]) as im:  # LR, two methods
        assert im.size == (3 * 128 + 2 * 4, 128 + 16)


def test_missing_hr_partner(pairs):
    lr_dir, hr_dir = pairs
    (hr_dir / "Canon_010_LR4.png").unlink()
    with pytest.raises(BenchmarkError, match=rf"{lr_dir / 'Canon_010_LR4.png'}: no HR partner"):
        discover_testset(lr_dir, hr_dir)
    ts = discover_testset(lr_dir, hr_dir, on_error="skip")
    assert [i.name for i in ts.items] == ["Canon_001_LR4", "Nikon_050_LR4"]
    assert [(p.path, p.image) for p in ts.problems] == [(str(lr_dir / "Canon_010_LR4.png"), "Canon_010_LR4")]


def test_sr_hr_size_mismatch(pairs, tmp_path):
    lr_dir, hr_dir = pairs
    bad = hr_dir / "Nikon_050_LR4.png"
    write_image(bad, read_image(bad)[..., :500, :500])
    with pytest.raises(BenchmarkError, match=r"SR size \(512, 512\) differs from HR size \(500, 500\)"):
        run_benchmark(discover_testset(lr_dir, hr_dir), [BenchMethod("bicubic")], ["psnr"], tmp_path / "a")
    res = run_benchmark(discover_testset(lr_dir, hr_dir), [BenchMethod("bicubic")], ["psnr"], tmp_path / "b",
                        on_error="skip")
    assert res.images == ["Canon_001_LR4", "Canon_010_LR4"]
    assert [p.image for p in res.problems] == ["Nikon_050_LR4"] and str(bad) in res.problems[0].reason
    assert "Nikon_050_LR4" in res.summary_md.read_text()  # listed under "Skipped"


def test_empty_folders(pairs, peer, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(BenchmarkError, match=rf"{empty}: empty LR folder"):
        discover_testset(empty)
    ts = discover_testset(empty, on_error="skip")
    assert ts.items == [] and ts.problems[0].path == str(empty)
    with pytest.raises(BenchmarkError, match="no test image was scored"):
        run_benchmark(ts, [BenchMethod("bicubic")], ["piqe"], tmp_path / "out0", on_error="skip")

    lr_dir, hr_dir = pairs
    methods = [BenchMethod("bicubic"), BenchMethod("peer", empty)]
    with pytest.raises(BenchmarkError, match=rf"{empty}: empty SR \(peer\) folder"):
        run_benchmark(discover_testset(lr_dir, hr_dir), methods, ["psnr"], tmp_path / "out1")
    res = run_benchmark(discover_testset(lr_dir, hr_dir), methods, ["psnr"], tmp_path / "out2", on_error="skip")
    assert list(res.summary) == ["bicubic"] and res.problems[0].path == str(empty)


def test_unreadable_images_raise_or_are_listed(pairs, tmp_path):
    lr_dir, hr_dir = pairs
    (lr_dir / "Canon_001_LR4.png").write_text("this is text, not a PNG")
    truncated = hr_dir / "Canon_010_LR4.png"
    truncated.write_bytes(truncated.read_bytes()[:20000])
    with pytest.raises(BenchmarkError, match=rf"{lr_dir / 'Canon_001_LR4.png'}: not an image"):
        run_benchmark(discover_testset(lr_dir, hr_dir), [BenchMethod("bicubic")], ["psnr"], tmp_path / "a")
    res = run_benchmark(discover_testset(lr_dir, hr_dir), [BenchMethod("bicubic")], ["psnr"], tmp_path / "b",
                        on_error="skip")
    assert res.images == ["Nikon_050_LR4"]
    listed = {p.path: p.reason for p in res.problems}
    assert "not an image" in listed[str(lr_dir / "Canon_001_LR4.png")]
    assert "truncated" in listed[str(truncated)]


def test_missing_peer_image_and_failing_model(pairs, peer, tmp_path):
    lr_dir, hr_dir = pairs
    (peer / "Canon_001_LR4.png").unlink()
    calls = []

    def flaky(lr: torch.Tensor) -> torch.Tensor:  # fails on the second image (sorted: Canon_010_LR4)
        calls.append(lr.shape)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory")
        return nearest_x4(lr)

    peer_method = BenchMethod("peer", peer)
    with pytest.raises(BenchmarkError, match=rf"{peer}: no SR image named 'Canon_001_LR4\.\*'"):
        run_benchmark(discover_testset(lr_dir, hr_dir), [BenchMethod("bicubic"), peer_method], ["psnr"], tmp_path / "a")
    methods = [BenchMethod("bicubic"), peer_method, BenchMethod("flaky", flaky), BenchMethod("identity", lambda lr: lr)]
    res = run_benchmark(discover_testset(lr_dir, hr_dir), methods[:3], ["psnr"], tmp_path / "b", on_error="skip")
    assert res.images == ["Nikon_050_LR4"]  # the summary compares only images every method scored
    listed = {(p.method, p.image): p.reason for p in res.problems}
    assert "no SR image" in listed[("peer", "Canon_001_LR4")]
    assert "CUDA out of memory" in listed[("flaky", "Canon_010_LR4")]
    res = run_benchmark(discover_testset(lr_dir, hr_dir), [methods[0], methods[3]], ["psnr"], tmp_path / "c",
                        on_error="skip")  # identity returns LR-sized images
    assert list(res.summary) == ["bicubic"] and res.images == PAIRS  # a method with no image leaves the table
    assert [p.method for p in res.problems] == ["identity"] * 4
    assert all("differs from HR size" in p.reason for p in res.problems[:3])
    assert "scored no image" in res.problems[3].reason
    with pytest.raises(BenchmarkError, match="no test image was scored"):
        run_benchmark(discover_testset(lr_dir, hr_dir), [methods[3]], ["psnr"], tmp_path / "d", on_error="skip")


def test_read_image_errors_name_the_file(shared, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(ValueError, match=rf"{text}: not an image"):
        read_image(text)
    src = (shared / "data" / "RealSR_x4" / "test_HR" / f"{PAIRS[0]}.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(src[: len(src) // 2])
    with pytest.raises(ValueError, match=rf"{cut}: truncated"):
        read_image(cut)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"{empty}: empty file"):
        read_image(empty)
    with pytest.raises(ValueError, match="cannot read"):
        read_image(tmp_path / "absent.png")


def test_read_image_odd_modes(shared):
    import cv2

    root = shared / "data" / "RealESRGAN_inputs"
    gray = read_image(root / "wolf_gray.jpg")
    assert gray.shape == (1, 3, 236, 236) and torch.equal(gray[:, 0], gray[:, 2])

    rgba = read_image(root / "children-alpha.png")  # alpha dropped, colour kept (as PIL convert('RGB'))
    with Image.open(root / "children-alpha.png") as im:
        expected = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    assert rgba.shape == (1, 3, 350, 566) and torch.equal(rgba, expected)

    deep = read_image(root / "tree_alpha_16bit.png")  # 16 bits kept, not reduced to 8
    raw = cv2.imread(str(root / "tree_alpha_16bit.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    assert deep.shape == (1, 3, 256, 342) and 0 <= deep.min() and deep.max() <= 1
    assert torch.allclose(deep[0, 0], torch.from_numpy(raw[..., 2].astype(np.float32) / 65535))
    assert not torch.allclose(deep * 255, (deep * 255).round(), atol=1e-3)


def test_on_error_and_method_names_are_checked(pairs, tmp_path):
    lr_dir, hr_dir = pairs
    with pytest.raises(ValueError, match="on_error"):
        discover_testset(lr_dir, hr_dir, on_error="ignore")
    ts = discover_testset(lr_dir, hr_dir)
    with pytest.raises(ValueError, match="unique"):
        run_benchmark(ts, [BenchMethod("bicubic"), BenchMethod("bicubic")], ["psnr"], tmp_path / "o")
    with pytest.raises(ValueError, match="unknown metric"):
        run_benchmark(ts, [BenchMethod("bicubic")], ["lpipss"], tmp_path / "o")

"""``fluxsr upscale`` as a user runs it: files and folders, odd inputs, a trained LoRA, the same function in-process."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import make_lora, run_cli

ENV = dict(os.environ)

TILES = ["--set", "infer.tile=8", "--set", "infer.overlap=2"]


@pytest.fixture(scope="module")
def inputs(shared, tmp_path_factory):
    d = tmp_path_factory.mktemp("lr")
    photo = Image.open(shared / "data" / "RealSet65" / "0003.jpg").convert("RGB")
    photo.crop((0, 0, 60, 44)).save(d / "rgb.png")
    photo.crop((100, 100, 140, 132)).convert("RGBA").save(d / "rgba.png")
    photo.crop((0, 0, 24, 24)).convert("L").save(d / "gray.png")
    Image.fromarray(np.asarray(photo.crop((50, 50, 82, 82)).convert("L"), dtype=np.uint16) * 257).save(d / "deep.png")
    (d / "notes.png").write_text("not an image")
    data = (d / "rgb.png").read_bytes()
    (d / "cut.png").write_bytes(data[: len(data) // 2])
    return d


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    return make_lora(tmp_path_factory.mktemp("lora"))


def test_folder_with_odd_inputs_and_lora(inputs, lora_dir, tmp_path):
    out = tmp_path / "sr"
    r = run_cli(ENV, "upscale", str(inputs), "-o", str(out), "--lora", str(lora_dir), *TILES, check=False)
    text = r.stdout + r.stderr
    assert r.returncode == 1, text  # some inputs failed, and the exit status says so
    assert f"{inputs / 'notes.png'}: not an image" in text and f"{inputs / 'cut.png'}: truncated" in text
    assert "rgba.png: alpha channel dropped" in text and "deep.png: 16-bit input, output is 8-bit" in text
    assert "4 written" in text and "2 failed" in text
    assert sorted(p.name for p in out.iterdir()) == ["deep.png", "gray.png", "rgb.png", "rgba.png"]  # no partials
    for name, (w, h) in {"rgb.png": (60, 44), "rgba.png": (40, 32), "gray.png": (24, 24), "deep.png": (32, 32)}.items():
        with Image.open(out / name) as im:
            assert im.size == (4 * w, 4 * h) and im.mode == "RGB"

    # the CLI ran exactly the library's student (same LoRA, same settings), to the 8-bit rounding of the file
    from fluxsr_core.configs import tiny
    from fluxsr_core.imageio import read_image
    from fluxsr_core.student import load_student

    from fluxsr_core.config import InferConfig

    cfg = tiny()
    cfg.infer = InferConfig(tile=8, overlap=2)
    with torch.inference_mode():
        mine = load_student(cfg, lora_dir).upscale(read_image(inputs / "rgb.png"), cfg.infer)
        base = load_student(cfg, None).upscale(read_image(inputs / "rgb.png"), cfg.infer)
    written = read_image(out / "rgb.png")
    assert (written - mine).abs().max().item() <= 0.5 / 255 + 1e-6
    assert (written - base).abs().max().item() > 2 / 255  # the LoRA changed the result


def test_stop_on_first_error_and_bad_lora(inputs, tmp_path):
    r = run_cli(ENV, "upscale", str(inputs / "notes.png"), str(inputs / "gray.png"), "-o", str(tmp_path / "a"),
                "--on-error", "stop", *TILES, check=False)
    assert r.returncode == 1 and "1 not attempted" in r.stdout + r.stderr
    assert not list((tmp_path / "a").iterdir())
    r = run_cli(ENV, "upscale", str(inputs / "gray.png"), "-o", str(tmp_path / "b"), "--lora", str(tmp_path / "nope"),
                check=False)
    assert r.returncode == 2 and str(tmp_path / "nope") in r.stderr
    r = run_cli(ENV, "upscale", str(tmp_path / "missing.png"), "-o", str(tmp_path / "c"), check=False)
    assert r.returncode == 2 and "missing.png: no such file" in r.stderr

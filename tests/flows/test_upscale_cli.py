"""``fluxsr upscale`` as a user runs it: files and folders, odd inputs, a trained LoRA, the same function in-process."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import bomb_png, make_lora, run_cli_here

ENV = dict(os.environ)

TILES = ["--set", "infer.tile=8", "--set", "infer.overlap=2"]


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    return make_lora(tmp_path_factory.mktemp("lora"))


def test_stop_on_first_error_and_bad_lora(hostile, tmp_path):
    folder = hostile[0]
    r = run_cli_here(ENV, "upscale", str(folder / "text.png"), str(folder / "thin.png"), "-o", str(tmp_path / "a"),
                "--on-error", "stop", *TILES, check=False)
    assert r.returncode == 1 and "1 not attempted" in r.stdout + r.stderr
    assert not list((tmp_path / "a").iterdir())
    r = run_cli_here(ENV, "upscale", str(folder / "thin.png"), "-o", str(tmp_path / "b"), "--model", str(tmp_path / "nope"),
                check=False)
    assert r.returncode == 2 and str(tmp_path / "nope") in r.stderr
    r = run_cli_here(ENV, "upscale", str(tmp_path / "missing.png"), "-o", str(tmp_path / "c"), check=False)
    assert r.returncode == 2 and "missing.png: no such file" in r.stderr


@pytest.fixture(scope="module")
def hostile(shared, tmp_path_factory):
    """A folder of hostile and odd inputs, each with what must happen to it: a 4x output of (w, h), or a failure
    whose message says why (and, outside it, a file with no suffix, named on the command line)."""
    d = tmp_path_factory.mktemp("hostile")
    photo = Image.open(shared / "data" / "RealSet65" / "0003.jpg").convert("RGB")
    crop = photo.crop((0, 0, 24, 20))
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("hello, not an image")
    crop.save(d / "cut.png")
    data = (d / "cut.png").read_bytes()
    (d / "cut.png").write_bytes(data[: len(data) // 2])
    bomb_png(d / "bomb.png")
    crop.resize((1, 1)).save(d / "one.png")
    crop.resize((3, 17)).save(d / "thin.png")
    crop.convert("P", palette=Image.Palette.ADAPTIVE).save(d / "palette.png")
    crop.convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(np.asarray(crop.convert("L"), dtype=np.uint16) * 257).save(d / "gray16.png")
    crop.convert("RGBA").save(d / "rgba.png")
    crop.save(d / "anim.gif", save_all=True, append_images=[crop.rotate(90)], duration=100)
    crop.save(d / "photo.webp")
    (d / "notes.txt").write_text("a text file the folder happens to hold")
    (d / "sub").mkdir()
    crop.save(d / "sub" / "inner.png")
    bare = tmp_path_factory.mktemp("bare") / "nosuffix"
    crop.save(bare, format="PNG")
    expect = {"empty": "empty file", "text": "not an image", "cut": "truncated", "bomb": "60000x60000",
              "one": (1, 1), "thin": (3, 17), "palette": (24, 20), "cmyk": (24, 20), "gray16": (24, 20),
              "rgba": (24, 20), "anim": (24, 20), "photo": (24, 20), "nosuffix": (24, 20)}
    return d, bare, expect


def test_hostile_inputs_each_written_or_failed_by_name_by_the_trained_model(hostile, lora_dir, tmp_path):
    folder, bare, expect = hostile
    out = tmp_path / "sr"
    r = run_cli_here(ENV, "upscale", str(folder), str(bare), "-o", str(out), "--model", str(lora_dir), *TILES, check=False)
    text = r.stdout + r.stderr
    assert r.returncode == 1, text  # some inputs failed, and the exit status says so
    for stem, want in expect.items():
        if isinstance(want, str):  # failed, by name, with its reason; the batch went on
            assert f"failed: {folder / (stem + '.png')}: " in text and want in text, (stem, text[-3000:])
            assert not (out / f"{stem}.png").exists()
        else:
            with Image.open(out / f"{stem}.png") as im:
                assert im.size == (4 * want[0], 4 * want[1]) and im.mode == "RGB", stem
    assert "over the limit of 64,000,000 (raise it with --set infer.max_input_pixels=N" in text
    assert "animated image of 2 frames: the first frame is upscaled" in text and "CMYK input" in text
    assert f"skipped: {folder / 'notes.txt'}: suffix .txt is not an image suffix" in text
    assert f"skipped: {folder / 'sub'}/: a sub-folder (add --recursive" in text
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{s}.png" for s, w in expect.items() if not isinstance(w, str))  # no partial files
    assert f"{len(written)} written" in text and "4 failed, 2 skipped" in text
    assert "rgba.png: alpha channel dropped" in text and "gray16.png: 16-bit input, output is 8-bit" in text

    # the CLI ran exactly the library's student (same LoRA, same settings), to the 8-bit rounding of the file
    from fluxsr_core.config import InferConfig
    from fluxsr_core.config import tiny
    from fluxsr_core.imageio import read_image
    from fluxsr_core.student import load_student

    cfg = tiny()
    cfg.infer = InferConfig(tile=8, overlap=2)
    lr = read_image(folder / "palette.png")
    with torch.inference_mode():
        mine = load_student(cfg, lora_dir).upscale(lr, cfg.infer)
        base = load_student(cfg, None).upscale(lr, cfg.infer)
    written = read_image(out / "palette.png")
    assert (written - mine).abs().max().item() <= 0.5 / 255 + 1e-6
    assert (written - base).abs().max().item() > 2 / 255  # the LoRA changed the result


def test_recursive_reads_sub_folders(hostile, tmp_path):
    """(A folder named on the command line is read without it: the hostile test names one.)"""
    folder, _, _ = hostile
    r = run_cli_here(ENV, "upscale", str(folder), "-o", str(tmp_path / "b"), "--recursive", "--on-error", "skip", *TILES,
                check=False)
    assert (tmp_path / "b" / "inner.png").is_file() and "sub-folder" not in r.stderr

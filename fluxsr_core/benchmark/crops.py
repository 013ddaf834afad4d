"""Side-by-side crops: the same centre crop of LR, each method's SR image and HR, labelled, in one PNG."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from fluxsr_core.imageio import to_uint8


def _tile(img: torch.Tensor, box: tuple[float, float, float, float], side: int) -> torch.Tensor:
    """The relative box (top, left, height, width in [0, 1]) of img, resized (nearest) to side x side."""
    h, w = img.shape[-2:]
    t, l_ = round(box[0] * h), round(box[1] * w)
    ch, cw = max(1, round(box[2] * h)), max(1, round(box[3] * w))
    crop = img[..., t:t + ch, l_:l_ + cw]
    return F.interpolate(crop, size=(side, side), mode="nearest") if crop.shape[-2:] != (side, side) else crop


def write_crops(path: Path, panels: list[tuple[str, torch.Tensor]], crop_size: int) -> Path:
    """One PNG: the same centre crop of each panel side by side, each labelled underneath."""
    from PIL import Image, ImageDraw

    ref = panels[-1][1]
    h, w = ref.shape[-2:]
    side = min(crop_size, h, w)
    box = ((h - side) / 2 / h, (w - side) / 2 / w, side / h, side / w)
    gap, label_h = 4, 16
    canvas = Image.new("RGB", (len(panels) * (side + gap) - gap, side + label_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, img) in enumerate(panels):
        x = i * (side + gap)
        canvas.paste(Image.fromarray(to_uint8(_tile(img, box, side))), (x, 0))
        draw.text((x + 2, side + 2), label[: max(4, side // 7)], fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path

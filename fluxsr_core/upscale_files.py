"""``fluxsr upscale IN... -o OUT``: image files and folders through the student, one PNG each.

Every input is reported, none dropped silently: a file that is not an image, is
truncated, declares more pixels than ``infer.max_input_pixels`` or cannot be read is listed
as failed with the reason; what a folder holds that is not read (other suffixes,
sub-folders without ``recursive``) is listed as skipped with the reason (``on_error="skip"``
goes on with the rest, ``"stop"`` stops at it); grayscale, RGBA and 16-bit inputs
are upscaled as RGB with a note saying what was converted (alpha dropped, 16-bit
written as 8-bit). Outputs are written to a temporary name and renamed, so
``OUT`` never holds a half-written PNG.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image

from fluxsr_core.atomic import atomic_path
from fluxsr_core.config import InferConfig
from fluxsr_core.errors import InputNotFoundError, UnreadableImageError, UsageError
from fluxsr_core.imageio import IMAGE_SUFFIXES, read_image


@dataclass
class Outcome:
    source: Path
    output: Path | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None  # wall time of the upscale and its PNG writing (reading excluded)


@dataclass
class Inputs:
    files: list[Path]
    skipped: list[str]  # "<path>: why", for what a folder held that is not read


def collect_inputs(paths: list[str | Path], recursive: bool = False) -> Inputs:
    """Named files as given (whatever their suffix, so a bad one is reported) and each folder's image files, sorted
    (its sub-folders too with ``recursive``); what a folder holds that is not read is listed with the reason."""
    found: list[Path] = []
    skipped: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*") if recursive else p.iterdir()):
                if f.is_dir():
                    if not recursive:
                        skipped.append(f"{f}/: a sub-folder (add --recursive to read sub-folders)")
                elif f.suffix.lower() in IMAGE_SUFFIXES:
                    found.append(f)
                elif not f.name.startswith("."):
                    skipped.append(f"{f}: suffix {f.suffix or '(none)'} is not an image suffix "
                                   f"({', '.join(sorted(IMAGE_SUFFIXES))}); name the file to try it")
        elif p.exists():
            found.append(p)
        else:
            raise InputNotFoundError(f"{p}: no such file or folder")
    if not found:
        raise UsageError(f"no image files in {', '.join(map(str, paths))} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    stems: dict[str, Path] = {}
    for f in found:
        if f.stem in stems and stems[f.stem] != f:
            raise UsageError(f"{stems[f.stem]} and {f} would both be written as {f.stem}.png: rename one")
        stems[f.stem] = f
    return Inputs(files=list(dict.fromkeys(found)), skipped=skipped)


def conversion_notes(path: Path) -> list[str]:
    """What reading ``path`` as 8-bit RGB changes (empty for an RGB 8-bit file)."""
    try:
        with Image.open(path) as im:
            mode, transparent, frames = im.mode, "transparency" in im.info, getattr(im, "n_frames", 1)
    except Exception:  # unreadable by PIL: read_image reports the real reason
        return []
    notes = []
    if frames > 1:
        notes.append(f"animated image of {frames} frames: the first frame is upscaled")
    if mode == "CMYK":
        notes.append("CMYK input, converted to RGB")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and transparent):
        notes.append("alpha channel dropped (output is RGB)")
    if mode in ("L", "LA", "1", "I;16", "I;16L", "I;16B", "I"):
        notes.append("grayscale input, output is RGB")
    if mode.startswith("I;16") or mode == "I" or (path.suffix.lower() == ".png" and _png_bit_depth(path) == 16):
        notes.append("16-bit input, output is 8-bit")
    return notes


def _png_bit_depth(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if len(head) > 24 and head.startswith(b"\x89PNG") else None


def upscale_files(student, inputs: list[Path], out_dir: str | Path, cfg: InferConfig, *,
                  on_error: Literal["skip", "stop"] = "skip", progress=None,
                  knobs: dict | None = None) -> list[Outcome]:
    """Upscale each input into ``out_dir/<stem>.png``; returns one Outcome per input, in order. ``knobs``
    override the method's knobs of ``cfg`` (the WebUI's sliders)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for src in inputs:
        outcome = Outcome(source=src, notes=conversion_notes(src))
        try:
            image = read_image(src, cfg.max_input_pixels)
        except UnreadableImageError as err:
            outcome.error = str(err)
        else:
            target = out_dir / f"{src.stem}.png"
            start = time.perf_counter()
            # a full disk stops the batch (every later output would fail the same way); the temporary keeps
            # the .png suffix its writer goes by
            with atomic_path(target, temp=target.with_name(f".{target.stem}.partial.png"),
                             kept="the outputs written before it are kept") as tmp:
                student.upscale_to_png(image, cfg, tmp, **(knobs or {}))
            outcome.seconds = time.perf_counter() - start
            outcome.output = target
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)
        if outcome.error and on_error == "stop":
            break
    return outcomes

"""A benchmark's compared methods (``BenchMethod``): bicubic, a folder of another system's SR images, or a callable.

Not a training method (``fluxsr_core.methods.base.Method``): a row of the table and where its SR
images come from. A callable's output is checked and quantised to 8 bits, as if saved as PNG;
``counted_forwards`` counts its network's forward passes as it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from fluxsr_core.imageio import quantize_8bit

BICUBIC = "bicubic"

Upscale = Callable[[torch.Tensor], torch.Tensor]


def bicubic_upscale(lr: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """Bicubic x``scale`` (torch, align_corners=False), clamped and rounded to 8 bits."""
    up = F.interpolate(lr.float(), scale_factor=scale, mode="bicubic", align_corners=False)
    return quantize_8bit(up)


@dataclass(frozen=True)
class BenchMethod:
    """A compared method: ``source`` is ``"bicubic"``, a folder of SR images (matched by stem) or a callable.

    A callable gets the LR image as a CPU float32 tensor (1, 3, h, w) in [0, 1] and
    returns (1, 3, H, W) or (3, H, W); its output is clamped and rounded to 8 bits.
    ``network``: the callable's network (a model's transformer), whose forward passes
    are counted as the row's network evaluations per image. ``model``: what a trained model's
    row ran (its digest and knobs), recorded in summary.json so an exported model finds its rows.
    """

    name: str
    source: str | Path | Upscale = BICUBIC
    network: torch.nn.Module | None = field(default=None, compare=False)
    model: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def kind(self) -> Literal["bicubic", "folder", "callable"]:
        if isinstance(self.source, str) and self.source == BICUBIC:
            return "bicubic"
        if isinstance(self.source, (str, Path)):
            return "folder"
        if callable(self.source):
            return "callable"
        raise TypeError(f"method '{self.name}': source must be 'bicubic', a folder or a callable, "
                        f"got {type(self.source).__name__}")

    def describe(self) -> dict[str, str]:
        out = {"name": self.name, "kind": self.kind}
        if self.kind == "folder":
            out["folder"] = str(self.source)
        elif self.kind == "callable":
            out["callable"] = getattr(self.source, "__qualname__", type(self.source).__name__)
        if self.model is not None:
            out["model"] = self.model
        return out


def as_bench_methods(methods: Sequence[BenchMethod] | Mapping[str, str | Path | Upscale]) -> list[BenchMethod]:
    """The methods to compare, checked: at least one, names unique and fit for file names and tables."""
    out = [BenchMethod(k, v) for k, v in methods.items()] if isinstance(methods, Mapping) else list(methods)
    if not out:
        raise ValueError("no methods to compare")
    names = [m.name for m in out]
    for m in out:
        if not m.name or any(c in m.name for c in "/\\\n|,"):
            raise ValueError(f"method name {m.name!r} must be non-empty, without / \\ | , or newlines")
        m.kind  # noqa: B018 - validates the source
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names}")
    return out


@contextmanager
def counted_forwards(network: torch.nn.Module | None):
    """A one-item list counting ``network``'s forward calls inside the block (a pre-forward hook): measured
    network evaluations, so a tiled image counts every tile and CFG both passes."""
    calls = [0]
    handle = None if network is None else network.register_forward_pre_hook(
        lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        if handle is not None:
            handle.remove()


def run_callable(fn: Upscale, lr: torch.Tensor) -> torch.Tensor:
    """A callable method's SR image for ``lr``, checked (shape, finite) and quantised to 8 bits."""
    out = fn(lr.clone())
    if not torch.is_tensor(out):
        raise TypeError(f"upscale returned {type(out).__name__}, not a tensor")
    out = out.detach().float().cpu()
    if out.dim() == 3:
        out = out.unsqueeze(0)
    if out.dim() != 4 or out.shape[:2] != (1, 3):
        raise ValueError(f"upscale must return (1, 3, H, W) or (3, H, W), got {tuple(out.shape)}")
    if not torch.isfinite(out).all():
        raise ValueError("upscale returned NaN or inf values")
    return quantize_8bit(out)

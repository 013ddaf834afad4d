"""LPIPS with the ImageNet backbone loaded from a local file, never downloaded.

The ``lpips`` wheel ships the linear heads; the backbone (torchvision AlexNet,
VGG16 or SqueezeNet 1.1) is normally fetched from the internet. Here it is read
from ``path`` or from the torch hub cache under its official file name; when it is
absent, LPIPS refuses to build unless a random backbone is explicitly allowed
(tests and the tiny preset), because random-backbone LPIPS is not LPIPS.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from fluxsr_core.errors import InputNotFoundError, UsageError

log = logging.getLogger(__name__)

BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def default_backbone_path(net: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]


def _load_backbone(model, path: Path) -> None:
    """Map torchvision ``features.{i}.*`` keys onto lpips' ``slice{k}.{i}.*`` modules."""
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.net.state_dict()
    mapped = {}
    for key in target:
        _, index, rest = key.split(".", 2)
        src = f"features.{index}.{rest}"
        if src not in source:
            raise UsageError(f"{path} is not a torchvision backbone for this LPIPS net: key '{src}' missing")
        mapped[key] = source[src]
    model.net.load_state_dict(mapped, strict=True)


def build_lpips(net: str = "vgg", backbone_path: str | None = None, allow_random: bool = False):
    """An eval-mode, frozen ``lpips.LPIPS``; raises FileNotFoundError naming the missing file."""
    import lpips

    if net not in BACKBONE_FILES:
        raise UsageError(f"unknown LPIPS net '{net}'; choose one of {sorted(BACKBONE_FILES)}")
    path = Path(backbone_path).expanduser() if backbone_path else default_backbone_path(net)
    with torch.random.fork_rng(devices=[]):  # a random backbone must be the same in every process
        torch.manual_seed(0)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    if path.is_file():
        _load_backbone(model, path)
    elif allow_random:
        log.warning("LPIPS %s backbone not found at %s: using a RANDOM backbone (allowed by config)", net, path)
    else:
        raise InputNotFoundError(
            f"LPIPS needs the ImageNet {net} backbone weights '{BACKBONE_FILES[net]}', not found at {path}. "
            f"Copy torchvision's file there (or set loss.lpips_backbone_path to its path). "
            "For tests and the tiny preset only, loss.allow_random_lpips_backbone=true builds a random backbone."
        )
    return model.eval().requires_grad_(False)

"""The one place fluxsr imports basicsr.

basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor`` (removed in
torchvision 0.17; BasicSR issues #533, #663) from ``basicsr/data/degradations.py``.
Registering that module name as an alias exposing ``rgb_to_grayscale`` (the one
name basicsr takes from it) before the first basicsr import fixes every
basicsr entry point without patching installed files. Import basicsr's functions
from here, never from ``basicsr`` directly.
"""

from __future__ import annotations

import sys
import types


def _install_functional_tensor_alias() -> None:
    name = "torchvision.transforms.functional_tensor"
    if name in sys.modules:
        return
    try:  # a torchvision that still ships the module needs nothing
        __import__(name)
        return
    except ImportError:
        pass
    from torchvision.transforms import functional

    alias = types.ModuleType(name)
    alias.rgb_to_grayscale = functional.rgb_to_grayscale
    alias.__doc__ = "Alias created by fluxsr_core.basicsr_compat for basicsr 1.4.2."
    sys.modules[name] = alias


_install_functional_tensor_alias()

from basicsr.data import degradations  # noqa: E402
from basicsr.utils import DiffJPEG, USMSharp  # noqa: E402
from basicsr.utils.img_process_util import filter2D  # noqa: E402

__all__ = ["degradations", "DiffJPEG", "USMSharp", "filter2D"]

"""Building a metric with every download blocked, and checking the weights pyiqa was handed.

Why: nothing may wait on a network that is not there. While a metric is built, torch hub's,
pyiqa's and Hugging Face's downloads raise ``DownloadBlocked``, and the files found beforehand are
served from a staged hub folder through pyiqa's own default code path. pyiqa loads some files with
``strict=False``, so ``verify_keys`` checks that the file is weights for that network.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch

from fluxsr_core.metrics.specs import Need


class DownloadBlocked(RuntimeError):
    """Raised in place of any download a library attempts while a metric is built."""


@contextmanager
def _swap(obj: Any, attr: str, value: Any) -> Iterator[None]:
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


def _blocked_download(url: str, dst: str, *args: Any, **kwargs: Any) -> None:
    raise DownloadBlocked(f"needs {os.path.basename(dst)}; not found at {dst} (it would be downloaded from {url})")


@contextmanager
def offline(staged: Mapping[Need, Path] | None = None) -> Iterator[None]:
    """Block downloads (torch hub, pyiqa, Hugging Face) and, given files, serve them from a staged hub dir.

    With ``staged``, ``torch.hub.get_dir()`` and pyiqa's cache dir point to a
    temporary directory holding links to exactly those files, so pyiqa loads them
    through its own default code path. Not thread-safe (process-wide settings).
    """
    import pyiqa.utils.download_util as pyiqa_dl

    with ExitStack() as stack:
        stack.enter_context(_swap(torch.hub, "download_url_to_file", _blocked_download))
        stack.enter_context(_swap(pyiqa_dl, "download_url_to_file", _blocked_download))
        old_env = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"  # read at import by some libraries (transformers, timm helpers)
        stack.callback(lambda: os.environ.pop("HF_HUB_OFFLINE") if old_env is None
                       else os.environ.__setitem__("HF_HUB_OFFLINE", old_env))
        try:
            from huggingface_hub import constants as hf_constants

            stack.enter_context(_swap(hf_constants, "HF_HUB_OFFLINE", True))  # read at call time
        except ImportError:
            pass
        if staged is not None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fluxsr-weights-")))
            for need, path in staged.items():
                if need.where.startswith("hf:"):
                    continue
                link = root / need.where / need.file
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path.resolve())
            (root / "pyiqa").mkdir(exist_ok=True)
            stack.enter_context(_swap(torch.hub, "_hub_dir", str(root)))
            stack.enter_context(_swap(pyiqa_dl, "DEFAULT_CACHE_DIR", str(root / "pyiqa")))
        yield


def _state_keys(path: Path) -> dict[str, tuple[int, ...]]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("params"), dict):
        state = state["params"]
    if not isinstance(state, dict):
        return {}
    return {k.removeprefix("module."): tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}


def verify_keys(net: torch.nn.Module, path: Path) -> str | None:
    """Why ``path`` is not weights for ``net`` (pyiqa loads it with strict=False and would ignore it), or None."""
    try:
        keys = _state_keys(path)
    except Exception as err:  # noqa: BLE001
        return f"{path} cannot be read as a state dict ({type(err).__name__}: {err})"
    target = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    bad = [k for k, shape in keys.items() if target.get(k) != shape]
    if not keys or bad:
        return (f"{path} does not match the network ({len(bad)} of {len(keys)} tensors unknown or of another shape, "
                f"e.g. {bad[:3]}): pyiqa would silently ignore it")
    return None


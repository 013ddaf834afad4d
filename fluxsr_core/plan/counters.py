"""What a planned step is measured with, on meta tensors: the bytes of the storages alive, and the FLOPs.

- Memory: ``LiveStorages``, a dispatch mode that counts the bytes of every storage alive (each op's outputs,
  freed when the storage is: a weakref finalizer) and keeps the peak. The figure is what the caching allocator
  would have to hold at least (no fragmentation, no CUDA context, no workspace): a lower bound of
  ``torch.cuda.max_memory_allocated`` by construction, and equal to it up to those.
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over the same step (matmuls, convolutions, attention),
  bitsandbytes' 4-bit matmuls included.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class LiveStorages(TorchDispatchMode):
    """Bytes of the storages alive while the mode is on (plus ``baseline``), and their peak.

    Every tensor an op returns is looked at once per storage; its bytes count until the storage is freed
    (``weakref.finalize`` on the storage, which PyTorch keeps as one Python object while it lives)."""

    def __init__(self, baseline: int = 0):
        super().__init__()
        self.live = self.peak = baseline
        self._seen: set[int] = set()

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = id(storage)
        if key in self._seen:
            return
        self._seen.add(key)
        size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and not t.is_sparse:
                self._track(t)
        return out


def tensor_bytes(tensors) -> int:
    """Bytes of distinct storages among ``tensors``."""
    seen, total = set(), 0
    for t in tensors:
        s = t.untyped_storage()
        if id(s) not in seen:
            seen.add(id(s))
            total += s.nbytes()
    return total


def nf4_matmul_flops(a_shape, b_shape, shape_b, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of bitsandbytes' fused 4-bit matmuls (``gemm_4bit``, ``gemv_4bit``): 2·M·K·N, as a dense matmul
    of A (M, K) by the dequantised (N, K) weight; ``FlopCounterMode`` does not know these ops."""
    m = 1
    for d in a_shape[:-1]:
        m *= d
    return 2 * m * a_shape[-1] * shape_b[0]


class _NoModuleTracking:
    """Stands in for ``FlopCounterMode``'s module tracker: every count goes to the total ("Global"). The tracker's
    backward hooks on module outputs keep gradient checkpointing's recomputed activations alive until the step
    ends, which the memory count then sees (measured: a plan's activations grew with every checkpointed block)."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def flop_counter():
    """``FlopCounterMode`` for totals only (``_NoModuleTracking``), also counting bitsandbytes' 4-bit matmuls."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {}
    for name in ("gemm_4bit", "gemv_4bit"):  # registered once bitsandbytes is imported (diffusers imports it)
        op = getattr(torch.ops.bitsandbytes, name, None)
        if op is not None:
            mapping[op] = nf4_matmul_flops  # keyed by the overload packet, as FlopCounterMode looks ops up
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    counter.mod_tracker = _NoModuleTracking()
    return counter


def held(module: torch.nn.Module) -> list[torch.Tensor]:
    """The tensors a module holds: parameters, buffers, and its NF4 layers' quantisation state (absmax, code),
    which bitsandbytes keeps beside the packed weights rather than as parameters."""
    out = [*module.parameters(), *module.buffers()]
    for m in module.modules():
        qs = getattr(getattr(m, "weight", None), "quant_state", None)
        if qs is not None:
            out += [t for t in (qs.absmax, qs.code) if torch.is_tensor(t)]
    return out


def parameter_count(module: torch.nn.Module) -> int:
    """Parameters as the unquantised model counts them (a packed NF4 weight holds two a byte)."""
    total = 0
    for m in module.modules():
        for p in m.parameters(recurse=False):
            shape = getattr(getattr(p, "quant_state", None), "shape", None)
            total += shape.numel() if shape is not None else p.numel()
    return total

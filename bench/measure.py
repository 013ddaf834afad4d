"""The measuring harness of the bench scripts: device sync, wall time, peak memory (CUDA's counter, or the process
RSS sampled every ~1 ms on the CPU) and FLOPs counted by torch's FlopCounterMode."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import threading
import time

import torch

GiB = 2**30


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- measurement ----------------------------------------------------------------------------------------
def _malloc_trim() -> None:
    """Give freed heap back to the OS (glibc), so an RSS baseline is not inflated by earlier steps."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class _RssSampler:
    """Max RSS of this process, sampled every ``interval`` seconds in a thread."""

    def __init__(self, interval: float = 0.001):
        import psutil

        self.proc, self.interval = psutil.Process(), interval
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def measure_memory(fn, device: torch.device) -> tuple[float, float]:
    """(peak bytes, growth over the level just before) of one call of ``fn``.

    CUDA: torch.cuda.max_memory_allocated (tensors only; weights and optimiser state
    included in the peak). CPU: process RSS (psutil sampling), after gc + malloc_trim.
    """
    gc.collect()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
        return peak, peak - base
    _malloc_trim()
    try:
        import psutil  # noqa: F401
    except ImportError:  # fall back to the lifetime peak: only growth beyond every earlier peak shows
        import resource

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        fn()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return peak, peak - before
    sampler = _RssSampler()
    base = sampler.peak
    with sampler:
        fn()
    return sampler.peak, sampler.peak - base


def _cpu_attention_flops() -> dict:
    """FlopCounterMode has no formula for the CPU flash-attention kernels SDPA uses on CPU: add them."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten
    out = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        out[aten._scaled_dot_product_flash_attention_for_cpu] = (
            lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v))
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        out[aten._scaled_dot_product_flash_attention_for_cpu_backward] = (
            lambda g, q, k, v, *a, out_shape=None, **kw: sdpa_backward_flop_count(g, q, k, v))
    return out


FLOP_PARTS = {  # module names (last path segment in FlopCounterMode's module tree) -> part of the step
    "transformer": ("transformer", "FluxTransformer2DModel"),
    "VAE": ("vae", "AutoencoderKL", "AutoencoderTiny", "decoder", "Decoder", "encoder", "Encoder"),
    "LPIPS": ("lpips", "LPIPS"),
}


def count_flops(fn) -> tuple[int, dict[str, int]]:
    """FLOPs of one call of ``fn`` (matmuls, convolutions, attention; forward and backward), and by part.

    A part's count is the largest count among modules named like it (the outermost one
    holds its children's); "other" is what no part claims (losses, optimiser, glue).
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_cpu_attention_flops()) as counter:
        fn()
    total = int(counter.get_total_flops())
    parts = {part: 0 for part in FLOP_PARTS}
    for key, per_op in counter.get_flop_counts().items():
        last = key.rsplit(".", 1)[-1]
        for part, names in FLOP_PARTS.items():
            if last in names:
                parts[part] = max(parts[part], int(sum(per_op.values())))
    parts["other"] = max(0, total - sum(parts.values()))
    return total, parts


def timed(fn, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0

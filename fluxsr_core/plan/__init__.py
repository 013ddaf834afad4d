"""Plans of memory and FLOPs for a training step or an inference call, without a GPU and without weights.

The real step code runs on meta tensors (shapes and dtypes, no data): the preset's transformer and VAE are
built from their configs under ``torch.device("meta")`` (``meta``), the method and the Trainer's LoRA,
unfrozen modules and AdamW are the real ones, and one step is the Trainer's ``compute_loss`` + backward +
optimiser step (``steps``). Memory is the peak of the storages alive and FLOPs are counted over the same
step (``counters``); attention runs as the GPU's flash kernel would unless ``attention="math"``, and the
figure says which.
"""

from fluxsr_core.plan.counters import LiveStorages
from fluxsr_core.plan.meta import Attention, meta_components
from fluxsr_core.plan.steps import (
    GPU_PEAK_TFLOPS,
    Plan,
    per_rank,
    size_train_step,
    size_upscale,
    seconds_at,
)

__all__ = [
    "GPU_PEAK_TFLOPS", "Attention", "LiveStorages", "Plan", "meta_components", "per_rank", "size_train_step",
    "size_upscale", "seconds_at",
]

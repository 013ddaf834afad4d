"""Real-ESRGAN's second-order degradation as a pure, seeded function.

Why: FluxSR makes its LR inputs with Real-ESRGAN's pipeline (method.md section 1),
and each LR variant must be reproducible from (run seed, record, variant) alone,
whatever the process, worker order or batch, so re-runs give the same bytes and
every LR image can be audited.

How: basicsr's own functions, composed in the order of ``RealESRGANDataset`` (``kernels``)
and ``RealESRGANModel.feed_data`` (``passes``: two passes, then [resize back + sinc] and JPEG in
random order, clamp and round to /255); given the same generator states the LR is
bitwise theirs (the tests check it against the real classes). basicsr draws from
Python's ``random`` and numpy's and torch's global generators; each variant instead
has its own three (``seeds``), seeded from ``variant_seed``, which basicsr's module is given for
that variant (``basicsr_hooks.drawing_from``), so no draw made by another thread (Prefect's
retry jitter uses ``random``) can change an LR, and the caller's streams are never
touched. Images go one at a time (``pipeline``): basicsr's noise draws depend on the batch. basicsr does
not return what it drew, so its deterministic builders (``bivariate_*``,
``generate_*_noise_pt``) are wrapped with call-through recorders while a variant
runs (``basicsr_hooks.recording``), and every parameter lands in a JSON-serialisable dict. Python/numpy
draws (kernels, resizes, blur, order) match across CPU and CUDA; torch draws (noise, JPEG
quality) come from the device's generator and differ. ``inputs`` says which HR images a config can degrade.
"""

from fluxsr_core.degrade.inputs import min_hr_side
from fluxsr_core.degrade.pipeline import (
    PARAMS_SCHEMA,
    degrade_batch,
    degrade_image,
    degrade_variants,
)
from fluxsr_core.degrade.seeds import variant_seed

__all__ = ["PARAMS_SCHEMA", "degrade_batch", "degrade_image", "degrade_variants", "min_hr_side", "variant_seed"]

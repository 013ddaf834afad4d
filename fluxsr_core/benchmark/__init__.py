"""The benchmark stage's scoring, free of Prefect: test sets, methods, one table.

A test set is paired (LR and HR folders matched by file stem) or LR-only (``testset``). The
methods compared (``bench_method.BenchMethod``) are "bicubic" (computed here), folders of SR
outputs from other systems (matched by stem) and ``upscale(lr) -> sr`` callables (our model); every
method is scored with the same metrics on the same images (``run``). Outputs (``report``): a per-image
CSV, a Markdown summary whose header states the PSNR/SSIM protocol (``table``), a JSON for
machines (unavailable metrics with their reasons included) and side-by-side crops (``crops``).

Input problems (missing HR partner, SR/HR size mismatch, empty folder, unreadable
image, a metric failing on an image) raise ``BenchmarkError`` naming the file with
``on_error="raise"``, or are skipped and listed with ``"skip"`` (``problems``). The summary
averages over the images that every method scored, so its rows compare like with
like. Every SR image is quantised to 8 bits before scoring, as if saved as PNG.
"""

from fluxsr_core.benchmark.bench_method import (
    BICUBIC,
    BenchMethod,
    Upscale,
    bicubic_upscale,
    counted_forwards,
)
from fluxsr_core.benchmark.problems import BenchmarkError, OnError, Problem
from fluxsr_core.benchmark.report import BenchmarkResult
from fluxsr_core.benchmark.run import run_benchmark
from fluxsr_core.benchmark.table import COST_COLUMNS, rows_of_model
from fluxsr_core.benchmark.testset import (
    TestItem,
    TestSet,
    discover_testset,
    images_by_stem,
)

__all__ = [
    "BICUBIC", "COST_COLUMNS", "BenchMethod", "BenchmarkError", "BenchmarkResult", "OnError", "Problem", "TestItem",
    "TestSet", "Upscale", "bicubic_upscale", "counted_forwards", "discover_testset", "images_by_stem", "rows_of_model",
    "run_benchmark",
]

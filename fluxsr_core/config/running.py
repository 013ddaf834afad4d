"""The sections of what runs on trained models: retraining, the unit runner, the benchmark, inference."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    model_validator,
)

from fluxsr_core.config.base import Section

MAX_INPUT_PIXELS = 64_000_000  # infer.max_input_pixels' default (an 8000x8000 input)


class RetrainConfig(Section):
    """Scheduled retraining (flow ``retrain``): how the dataset grows and how a retrained model is promoted."""

    grow_by: int = Field(8, ge=0, description="Records added per run (records 0..N-1 are reused, only new shards "
                                              "computed); with pairs.num_records null the prompt file decides instead.")
    methods: list[str] = Field(default_factory=lambda: ["ftd"], description="Methods retrained each run.")
    metric: str = Field("psnr", description="pyiqa metric promotion compares (its direction from pyiqa).")
    tolerance: float = Field(0.0, ge=0.0, description="Promote when the candidate is not worse than the current model "
                                                      "by more than this (metric units).")
    test_lr: str | None = Field(None, description="Fixed test set: LR folder (with test_hr: paired).")
    test_hr: str | None = Field(None, description="Fixed test set: HR folder matched to test_lr by file stem.")
    test_synthetic_from: str | None = Field(
        None, description="Fixed test set: HR folder degraded into a paired set (bench.synthetic_* settings).")
    test_images: int = Field(4, ge=1, description="Without test_* folders: a synthetic set from the teacher images of "
                                                  "the first test_images records (fixed as the dataset grows).")


class RunnerConfig(Section):
    """How a stage runs its units: threads on this machine, or a Dask cluster (orchestration only: no stage key
    depends on it, and outputs are byte-identical whichever runs them)."""

    kind: Literal["threads", "dask"] = Field(
        "threads", description="'threads': concurrent units in this process; 'dask': units on a Dask cluster "
                               "(runner.address, or a temporary local cluster of max_workers processes).")
    max_workers: int | None = Field(
        None, ge=1, description="Units at once; null = the GPU slots of this machine (its GPUs, or FLUXSR_GPU_SLOTS), "
                                "1 on a machine with neither.")
    address: str | None = Field(None, description="Dask scheduler address (tcp://HOST:8786) when kind is 'dask'.")
    gpu_resource: str | None = Field(
        None, description="Dask worker resource a GPU unit requests one of (e.g. GPU, with workers started as "
                          "`dask worker ... --resources GPU=1`, one per GPU); null = none.")
    unit_threads: int | None = Field(
        None, ge=1, description="torch threads of a unit running on the CPU; null = this machine's cores shared "
                                "out over the concurrent units.")


class BenchConfig(Section):
    """Stage 5, benchmark."""

    metrics: list[str] = Field(default_factory=lambda: ["psnr", "ssim"], description="pyiqa metric names.")
    crops: int = Field(3, ge=0, description="Test images that get a side-by-side crop panel (every row, and HR).")
    crop_border: int = Field(0, ge=0, description="Pixels cropped from each border before full-reference metrics.")
    weights_dir: str | None = Field(
        None, description="Folder with metric weight files (pyiqa/torchvision names; brisque_opencv: OpenCV's "
                          "brisque_model_live.yml and brisque_range_live.yml); absent metrics are reported unavailable.")
    on_error: Literal["raise", "skip"] = Field(
        "raise", description="Bad test items (missing HR partner, size mismatch, unreadable): stop naming them, or skip and list them.")
    synthetic_crop: int = Field(
        512, ge=16, description="Synthetic test sets (DIV2K-val protocol): centre crop of each HR image, in pixels.")
    synthetic_seed: int = Field(0, description="Synthetic test sets: degradation seed (fixed for comparability).")
    knobs: dict[str, dict[str, list[float]]] = Field(
        default_factory=lambda: {"sr-teacher": {"steps": [4, 8]}, "oftsr": {"tau": [0.0, 0.5, 1.0]},
                                 "meanflow": {"steps": [1, 2, 4]}},
        description="The pipeline's table: per method, knob values that each give its trained model a row (the SR "
                    "teacher at 4 and 8 steps, OFTSR at τ 0, 0.5, 1, MeanFlow at 1, 2, 4 steps); a method not named "
                    "gets one row.")


def check_tiles(tile: int, overlap: int) -> None:
    """Tiles for latent inference: even sizes (2x2 patches), overlapping by less than a tile."""
    if tile % 2 or overlap % 2 or not 0 <= overlap < tile:
        raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be even latent sizes with 0 <= overlap < tile")


class InferConfig(Section):
    """One-step inference (``fluxsr upscale`` and the benchmark's model rows)."""

    scale: float = Field(4.0, gt=0.0, le=16.0, description="Output size / input size; the input is bicubic-resized by "
                                                         "this factor, then one step restores it (trained at 4).")
    color_fix: Literal["none", "wavelet", "adain"] = Field(
        "adain", description="Colour correction towards the bicubic input: 'adain' (per-channel mean/std, as OSEDiff), "
                             "'wavelet' (the input's low frequencies, as StableSR), 'none'.")
    tile: int | None = Field(128, ge=4, description="Latent tile size for the transformer and VAE (8 px per latent px; "
                                                    "even); larger images are tiled and blended. null = whole image.")
    overlap: int = Field(16, ge=0, description="Latent overlap between tiles (even, < tile).")
    knobs: dict[str, float | int] = Field(
        default_factory=dict, description="The model's inference knobs, e.g. {tau: 0.3} for OFTSR, {steps: 2} for "
                                          "MeanFlow, {step_fraction: 0.5} for FTD; each method's knobs, types, ranges "
                                          "and defaults: `fluxsr methods`. A knob the model's method lacks is refused "
                                          "by name.")
    guidance: float | None = Field(None, ge=0.0, description="Guidance-embedding value the network runs with; null = "
                                                             "the trained model's (train.guidance for a base model). "
                                                             "Not MeanFlow's distilled CFG scale w: that is its knob "
                                                             "infer.knobs.guidance.")
    offload: bool = Field(False, description="Keep the transformer's weights in CPU memory and move each block to "
                                            "the GPU only while it runs (diffusers' group offloading, one block at a "
                                            "time: the weights' GPU memory falls to one block's, for PCIe transfers).")
    max_input_pixels: int = Field(
        MAX_INPUT_PIXELS, ge=1, description="An input whose header declares more pixels is refused by name before it is "
                                      "decoded (the batch goes on); raise it for real huge images.")
    method_params: dict[str, Any] = Field(
        default_factory=dict, description="Run a trained model with other method parameters on purpose, e.g. "
                                          "{T_L: 0.4}; empty = as trained (fluxsr_model.json).")

    @model_validator(mode="after")
    def _tiles(self) -> "InferConfig":
        if self.tile is not None:
            check_tiles(self.tile, self.overlap)
        return self

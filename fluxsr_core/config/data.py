"""The data stages' sections: generate-pairs, the two-pass degradation, encode-latents."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from fluxsr_core.config.base import Section


class PairsConfig(Section):
    """Stage 1, generate-pairs: the records training learns from, the teacher's samples or crops of real photos."""

    source: Literal["teacher", "images", "both"] = Field(
        "teacher", description="'teacher': (ε, z_0, x_0) sampled from the base model (what FTD needs); 'images': "
                               "crops of the real HR photos in pairs.images (x_0 only; the SR teacher, OFTSR and "
                               "MeanFlow train on them); 'both': the teacher records, then the photo records.")
    images: str | None = Field(None, description="Folder of HR photos (recursive; PNG, JPEG, WebP) for source "
                                                 "images/both: records numbered by sorted relative path.")
    crops_per_image: int = Field(1, ge=1, description="Records cut from each photo: pairs.resolution squares at "
                                                      "seeded positions, each maybe flipped.")
    prompts: str | None = Field(None, description="Text (one prompt a line) or JSONL ({'prompt': ...}) file; None = bundled list.")
    num_records: int | None = Field(
        8, ge=1, description="Teacher records to generate (the dataset's first N: growing it reuses every finished "
                             "shard); null = one record per prompt, growing as lines are appended to the prompt "
                             "file. Photo records are every photo's crops_per_image crops.")
    records_per_shard: int = Field(4, ge=1, description="Records per WebDataset shard.")
    resolution: int = Field(128, ge=16, description="HR image side in pixels, a multiple of 16.")
    steps: int = Field(4, ge=1, description="Teacher sampling steps (FLUX.1-dev: 28).")
    guidance: float = Field(3.5, ge=0.0, description="Guidance embedding value (FLUX.1-dev: 3.5).")
    batch_size: int = Field(2, ge=1, description="Records sampled per teacher batch.")
    seed: int = Field(0, description="Run seed; record i's noise seed is a pure function of (seed, i).")

    @field_validator("resolution")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"resolution must be a multiple of 16 (VAE factor 8 x patch 2), got {v}; try {v - v % 16 or 16}")
        return v

    @model_validator(mode="after")
    def _photo_folder(self) -> "PairsConfig":
        if self.source != "teacher" and not self.images:
            raise ValueError(f"pairs.source is {self.source!r} but pairs.images is not set: name the folder of HR "
                             "photos (--images DIR, or --set pairs.images=DIR)")
        return self


def _check_low_high(v: list[float]) -> list[float]:
    if len(v) != 2 or not v[0] <= v[1]:
        raise ValueError(f"must be [low, high] with low <= high, got {v}")
    if v[0] < 0:
        raise ValueError(f"must be non-negative, got {v}")
    return v


KernelType = Literal["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]


class DegradationPass(Section):
    """One of the two passes of Real-ESRGAN's second-order degradation: blur, resize, noise, JPEG.

    Field names are those of Real-ESRGAN's ``options/train_realesrgan_x4plus.yml`` without the ``2`` its
    second pass adds (``blur_prob`` is its ``second_blur_prob``). Every field is required here: a pass
    given in part in a config is layered over that pass's own defaults by ``DegradeConfig``.
    """

    blur_prob: float = Field(
        ge=0.0, le=1.0, description="Probability of blurring with this pass's kernel (Real-ESRGAN: the first pass "
                                    "always blurs, 1 and no draw; the second 0.8)."
    )
    kernel_list: list[KernelType] = Field(min_length=1, description="Blur kernel types (basicsr random_mixed_kernels names).")
    kernel_prob: list[float] = Field(description="Probability of each kernel_list entry; sums to 1.")
    sinc_prob: float = Field(ge=0.0, le=1.0, description="Probability of a sinc kernel instead of a mixed kernel.")
    blur_sigma: list[float] = Field(description="[low, high] Gaussian sigma (x and y), 0 < low < high.")
    betag_range: list[float] = Field(description="[low, high] beta of generalized Gaussian kernels, low <= 1 <= high.")
    betap_range: list[float] = Field(description="[low, high] beta of plateau kernels, low <= 1 <= high.")
    resize_prob: list[float] = Field(description="Probabilities of [up, down, keep]; sums to 1.")
    resize_range: list[float] = Field(
        description="[low, high] resize factor; down draws U(low, 1), up U(1, high) (the second pass's is relative "
                    "to HR/scale)."
    )
    gaussian_noise_prob: float = Field(ge=0.0, le=1.0, description="Probability of Gaussian noise (else Poisson).")
    noise_range: list[float] = Field(description="[low, high] Gaussian noise sigma, in 0..255 units.")
    poisson_scale_range: list[float] = Field(description="[low, high] Poisson noise scale.")
    gray_noise_prob: float = Field(ge=0.0, le=1.0, description="Probability that the noise is gray (same on all channels).")
    jpeg_range: list[float] = Field(
        description="[low, high] JPEG quality, within [1, 100] (the second pass's JPEG is the final one, before or "
                    "after the resize back and the final sinc)."
    )

    @field_validator("kernel_prob", "resize_prob")
    @classmethod
    def _distribution(cls, v: list[float]) -> list[float]:
        if any(p < 0 for p in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"probabilities must be >= 0 and sum to 1, got {v} (sum {sum(v):g})")
        return v

    @field_validator("resize_prob")
    @classmethod
    def _three_way(cls, v: list[float]) -> list[float]:
        if len(v) != 3:
            raise ValueError(f"needs 3 probabilities [up, down, keep], got {len(v)}")
        return v

    @field_validator("blur_sigma", "betag_range", "betap_range", "resize_range", "noise_range", "poisson_scale_range",
                     "jpeg_range")
    @classmethod
    def _low_high(cls, v: list[float]) -> list[float]:
        return _check_low_high(v)

    @field_validator("blur_sigma")
    @classmethod
    def _sigma_strict(cls, v: list[float]) -> list[float]:
        if not 0 < v[0] < v[1]:  # basicsr's random_bivariate_* assert low < high
            raise ValueError(f"sigma range must satisfy 0 < low < high, got {v}")
        return v

    @field_validator("betag_range", "betap_range", "resize_range")
    @classmethod
    def _straddles_one(cls, v: list[float]) -> list[float]:
        if not (0 < v[0] <= 1 <= v[1]):  # draws are U(low, 1) or U(1, high)
            raise ValueError(f"must satisfy 0 < low <= 1 <= high, got {v}")
        return v

    @field_validator("jpeg_range")
    @classmethod
    def _jpeg_quality(cls, v: list[float]) -> list[float]:
        if not 1 <= v[0] <= v[1] <= 100:
            raise ValueError(f"JPEG quality range must lie in [1, 100], got {v}")
        return v

    @model_validator(mode="after")
    def _one_probability_per_kernel(self) -> DegradationPass:
        if len(self.kernel_list) != len(self.kernel_prob):
            raise ValueError(f"kernel_list has {len(self.kernel_list)} entries but kernel_prob has {len(self.kernel_prob)}")
        return self


# Real-ESRGAN's x4plus settings of its two passes (options/train_realesrgan_x4plus.yml)
_FIRST_PASS: dict[str, Any] = {
    "blur_prob": 1.0,
    "kernel_list": ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"],
    "kernel_prob": [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
    "sinc_prob": 0.1, "blur_sigma": [0.2, 3.0], "betag_range": [0.5, 4.0], "betap_range": [1.0, 2.0],
    "resize_prob": [0.2, 0.7, 0.1], "resize_range": [0.15, 1.5],
    "gaussian_noise_prob": 0.5, "noise_range": [1.0, 30.0], "poisson_scale_range": [0.05, 3.0], "gray_noise_prob": 0.4,
    "jpeg_range": [30.0, 95.0],
}
_SECOND_PASS: dict[str, Any] = {
    **_FIRST_PASS, "blur_prob": 0.8, "blur_sigma": [0.2, 1.5], "resize_prob": [0.3, 0.4, 0.3], "resize_range": [0.3, 1.2],
    "noise_range": [1.0, 25.0], "poisson_scale_range": [0.05, 2.5],
}
# The flat keys DegradeConfig had before its passes were one type: refused, naming the new key
_FLAT_PASS_KEYS = {
    **{name: f"first.{name}" for name in DegradationPass.model_fields if name != "blur_prob"},
    **{f"{name}2": f"second.{name}" for name in DegradationPass.model_fields if name != "blur_prob"},
    "second_blur_prob": "second.blur_prob",
}


class DegradeConfig(Section):
    """Stage 2, degrade: Real-ESRGAN second-order degradation (Wang et al. 2021).

    Defaults are Real-ESRGAN's published x4plus training settings
    (``options/train_realesrgan_x4plus.yml`` + ``RealESRGANDataset``): the settings of each pass in
    ``first`` and ``second`` (one ``DegradationPass`` each), those shared by both and the final step
    here. ``fluxsr_core.degrade`` applies them.
    """

    scale: int = Field(4, ge=1, description="Down-sampling factor of the LR images.")
    variants: int = Field(1, ge=1, description="Degraded LR variants K per HR image.")
    seed: int = Field(0, description="Run seed; variant k of record i draws from (seed, i, k).")
    usm_sharpen: bool = Field(
        True, description="Degrade the USM-sharpened HR (basicsr USMSharp), as Real-ESRGAN does; False degrades the HR as is."
    )
    # -- blur kernels (sizes shared by both passes and the final sinc, as in RealESRGANDataset) --
    kernel_sizes: list[int] = Field(
        default_factory=lambda: [7, 9, 11, 13, 15, 17, 19, 21],
        description="Odd kernel sizes drawn uniformly for each kernel (Real-ESRGAN's kernel_range, 7..21).",
    )
    blur_kernel_size: int = Field(
        21, ge=3, description="Every kernel is zero-padded to this odd size (Real-ESRGAN: 21); >= max(kernel_sizes)."
    )
    sinc_cutoff_small: list[float] = Field(
        default_factory=lambda: [1.0471975511965976, 3.141592653589793],
        description="[low, high] cutoff (radians) of both passes' sinc kernels smaller than 13 (Real-ESRGAN: [pi/3, pi]).",
    )
    sinc_cutoff_large: list[float] = Field(
        default_factory=lambda: [0.6283185307179586, 3.141592653589793],
        description="[low, high] cutoff (radians) of both passes' sinc kernels of size 13 or more (Real-ESRGAN: [pi/5, pi]).",
    )
    # -- the two passes --
    first: DegradationPass = Field(
        default_factory=lambda: DegradationPass(**_FIRST_PASS),
        description="The first pass on the HR: blur (always: blur_prob stays 1), resize, noise, JPEG.",
    )
    second: DegradationPass = Field(
        default_factory=lambda: DegradationPass(**_SECOND_PASS),
        description="The second pass: blur (with blur_prob), resize to HR/scale times a factor, noise; then its JPEG "
                    "and the resize back with the final sinc, in random order.",
    )
    # -- the final step --
    final_sinc_prob: float = Field(0.8, ge=0.0, le=1.0, description="Probability of the final sinc filter (else an identity pulse).")
    final_sinc_cutoff: list[float] = Field(
        default_factory=lambda: [1.0471975511965976, 3.141592653589793], description="[low, high] cutoff (radians) of the final sinc filter."
    )
    final_order_prob: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Probability of [resize back + sinc] then JPEG; otherwise JPEG then [resize back + sinc] (Real-ESRGAN: 0.5).",
    )

    @model_validator(mode="before")
    @classmethod
    def _passes_over_their_defaults(cls, data: Any) -> Any:
        """A pass given in part keeps its own pass's defaults for the rest; the old flat keys are refused."""
        if not isinstance(data, dict):
            return data
        old = [key for key in data if key in _FLAT_PASS_KEYS]
        if old:
            raise ValueError("the degradation passes' settings moved under degrade.first and degrade.second: "
                             + "; ".join(f"'degrade.{k}' is now 'degrade.{_FLAT_PASS_KEYS[k]}'" for k in old))
        data = dict(data)
        for name, defaults in (("first", _FIRST_PASS), ("second", _SECOND_PASS)):
            if isinstance(data.get(name), dict):
                data[name] = {**defaults, **data[name]}
        return data

    @field_validator("sinc_cutoff_small", "sinc_cutoff_large", "final_sinc_cutoff")
    @classmethod
    def _low_high(cls, v: list[float]) -> list[float]:
        return _check_low_high(v)

    @model_validator(mode="after")
    def _kernel_shapes(self) -> DegradeConfig:
        if self.blur_kernel_size % 2 == 0:
            raise ValueError(f"blur_kernel_size must be odd, got {self.blur_kernel_size}")
        bad = [k for k in self.kernel_sizes if k % 2 == 0 or not 3 <= k <= self.blur_kernel_size]
        if bad or not self.kernel_sizes:
            raise ValueError(
                f"kernel_sizes must be odd values in [3, blur_kernel_size={self.blur_kernel_size}], got {self.kernel_sizes}"
            )
        if self.first.blur_prob != 1.0:
            raise ValueError(f"first.blur_prob must be 1, got {self.first.blur_prob}: Real-ESRGAN's first pass always "
                             "blurs (only the second pass draws whether it blurs)")
        return self


class EncodeConfig(Section):
    """Stage 3, encode-latents: LR -> bicubic back to HR size -> VAE -> z_L in Zarr."""

    batch_size: int = Field(4, ge=1, description="Images per VAE batch.")
    records_per_task: int = Field(16, ge=1, description="Samples per resumable chunk-range task.")

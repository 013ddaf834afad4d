"""BRISQUE with OpenCV's LIVE-trained model, scored as ``cv2.quality.QualityBRISQUE`` scores it.

pyiqa's ``brisque`` needs piq's SVM (``brisque_svm_weights.pth``). The model here is the one
opencv_contrib ships (``modules/quality/samples``): ``brisque_model_live.yml``, an OpenCV ML
epsilon-SVR with an RBF kernel (774 support vectors of 36 features), and
``brisque_range_live.yml``, each feature's observed min/max, which maps a feature to [-1, 1]
before the SVR. OpenCV trained it (2019, "Updated model") on features computed as
``modules/quality/src/qualitybrisque.cpp`` computes them, so its scores are OpenCV's, not
the LIVE release's (which pyiqa's calibration table lists as ``brisque``).

What is whose:

- reading the model: ``cv2.FileStorage`` (OpenCV's own YAML dialect). This project's OpenCV
  (5.x) has no ``cv2.ml``, so the SVR is evaluated with pyiqa's ``rbf_kernel`` (pyiqa's
  BRISQUE score ``K(x, sv) @ sv_coef - rho``, the decision function OpenCV's SVM evaluates).
- the features: pyiqa's ``natural_scene_statistics`` cannot feed this model. It takes the Y
  of YIQ as OpenCV does, but it halves the image with MATLAB's antialiased ``imresize`` (OpenCV:
  ``cv2.resize`` INTER_CUBIC, no antialiasing), pads its Gaussian with zeros (OpenCV:
  replicated borders), fits the MSCN image with a symmetric GGD (OpenCV: the AGGD of the
  paired products) and pairs pixels across the borders with ``torch.roll`` (OpenCV: zeros).
  Measured on the five TID2013 images of pyiqa's calibration set and their references,
  its features moved this model's score by up to 18 points (pristine I03: -12.7 instead of
  OpenCV's 5.2). So the MSCN image and the pairs follow ``qualitybrisque.cpp`` with OpenCV's
  functions (``cvtColor``, ``resize``, ``GaussianBlur``); the AGGD fits are pyiqa's
  ``estimate_aggd_param``, the same moment-matching grid search (0.2 to 10, step 0.001).
- the score is clamped to [0, 100], as ``cv2.quality`` clamps it.

Scores equal ``cv2.quality.QualityBRISQUE_compute`` (opencv-contrib-python-headless 5.1) to
about 1e-3 on those ten images (OpenCV computes in float32, this in float64).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MODEL_FILE = "brisque_model_live.yml"
RANGE_FILE = "brisque_range_live.yml"
N_FEATURES = 36
_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))  # qualitybrisque.cpp: H, V, D1, D2


@dataclass(frozen=True)
class BrisqueModel:
    """OpenCV's BRISQUE SVR: score = sum_i coef_i exp(-gamma |s - sv_i|^2) - rho, s = the features scaled by range."""

    sv: torch.Tensor  # (n, 36) float64, in the scaled feature space
    coef: torch.Tensor  # (n,) float64
    rho: float
    gamma: float
    low: torch.Tensor  # (36,) each feature's minimum (-> -1)
    high: torch.Tensor  # (36,) and maximum (-> +1)


def _reals(node) -> list[float]:  # a cv2.FileNode sequence of reals
    return [node.at(i).real() for i in range(node.size())]


def _open(path: str | Path):  # -> cv2.FileStorage, open for reading
    import cv2

    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except Exception as err:  # noqa: BLE001 - cv2 raises SystemError/cv2.error on a file it cannot parse
        raise ValueError(f"{path} cannot be read by cv2.FileStorage ({type(err).__name__})") from None
    if not fs.isOpened():
        raise ValueError(f"{path} cannot be opened by cv2.FileStorage")
    return fs


def load_model(model_file: str | Path, range_file: str | Path) -> BrisqueModel:
    """OpenCV's model and range files -> a BrisqueModel; ValueError naming the file when either is not one."""
    model_fs, range_fs = _open(model_file), _open(range_file)
    try:
        svm = model_fs.getNode("opencv_ml_svm")
        kernel = svm.getNode("kernel")
        if svm.empty() or svm.getNode("svmType").string() != "EPS_SVR" or kernel.getNode("type").string() != "RBF":
            raise ValueError(f"{model_file} is not an OpenCV ML epsilon-SVR with an RBF kernel (opencv_ml_svm)")
        vectors = svm.getNode("support_vectors")
        sv = torch.tensor([_reals(vectors.at(i)) for i in range(vectors.size())], dtype=torch.float64)
        function = svm.getNode("decision_functions").at(0)
        coef = torch.tensor(_reals(function.getNode("alpha")), dtype=torch.float64)
        if sv.ndim != 2 or sv.shape[1] != N_FEATURES or coef.shape != (sv.shape[0],):
            raise ValueError(f"{model_file}: expected {N_FEATURES}-feature support vectors with one coefficient each, "
                             f"got {tuple(sv.shape)} vectors and {tuple(coef.shape)} coefficients")
        ranges = range_fs.getNode("range").mat()
        if ranges is None or ranges.shape != (2, N_FEATURES):
            shape = None if ranges is None else ranges.shape
            raise ValueError(f"{range_file}: expected a 2 x {N_FEATURES} 'range' matrix (min; max), got {shape}")
        ranges = torch.from_numpy(ranges.astype(np.float64))
        return BrisqueModel(sv=sv, coef=coef, rho=function.getNode("rho").real(),
                            gamma=kernel.getNode("gamma").real(), low=ranges[0], high=ranges[1])
    finally:
        model_fs.release()
        range_fs.release()


def _aggd(x: np.ndarray) -> tuple[float, float, float]:
    """pyiqa's AGGD fit (shape, left and right std) of a float32 map, accumulated in float64 as OpenCV does."""
    from pyiqa.archs.func_util import estimate_aggd_param

    alpha, left, right = estimate_aggd_param(torch.from_numpy(x).double()[None, None], return_sigma=True)
    return float(alpha[0]), float(left[0]), float(right[0])


def _paired(mscn: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """mscn(i, j) * mscn(i + dy, j + dx), 0 where the partner lies outside the image (qualitybrisque.cpp)."""
    h, w = mscn.shape
    partner = np.zeros_like(mscn)
    rows, cols = slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))
    partner[rows, cols] = mscn[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)]
    return mscn * partner


def features(gray: np.ndarray) -> torch.Tensor:
    """The 36 BRISQUE features of a float32 gray image in [0, 1], as ``QualityBRISQUE::computeFeatures``."""
    import cv2

    out: list[float] = []
    h, w = gray.shape
    for scale in (1, 2):
        img = cv2.resize(gray, (w // scale, h // scale), interpolation=cv2.INTER_CUBIC)
        mu = cv2.GaussianBlur(img, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE)
        var = cv2.GaussianBlur(img * img, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE) - mu * mu
        with np.errstate(invalid="ignore"):
            mscn = (img - mu) / (np.sqrt(var) + np.float32(1 / 255))
        # float32 rounding can leave a flat patch's variance below 0: OpenCV's NaN there is in no sum of its fit
        # but in its count, which is what a 0 is to the fit
        mscn = np.nan_to_num(mscn, nan=0.0)
        alpha, left, right = _aggd(mscn)
        out += [alpha, (left * left + right * right) / 2]
        for dy, dx in _SHIFTS:
            alpha, left, right = _aggd(_paired(mscn, dy, dx))
            eta = (right - left) * math.exp(math.lgamma(2 / alpha) - (math.lgamma(1 / alpha) + math.lgamma(3 / alpha)) / 2)
            out += [alpha, eta, left * left, right * right]
    return torch.tensor(out, dtype=torch.float64)


def gray8(rgb: torch.Tensor) -> np.ndarray:
    """(3, H, W) RGB in [0, 1] -> (H, W) float32 in [0, 1]: the 8-bit image's gray, as cv2.quality takes it."""
    import cv2

    from fluxsr_core.imageio import to_uint8

    # convertTo(CV_32F, 1/255.) multiplies by float(1/255), which rounds otherwise than a division by 255; a flat
    # patch's MSCN values are that rounding, and their signs weigh in the fits (I19 moved 2 points)
    return cv2.cvtColor(to_uint8(rgb), cv2.COLOR_RGB2GRAY).astype(np.float32) * np.float32(1 / 255)


def score(rgb: torch.Tensor, model: BrisqueModel) -> float:
    """BRISQUE of one (3, H, W) RGB image in [0, 1] with OpenCV's model: lower is better, in [0, 100]."""
    from pyiqa.archs.brisque_arch import rbf_kernel

    f = features(gray8(rgb))
    scaled = -1 + 2 * (f - model.low) / (model.high - model.low)
    value = rbf_kernel(scaled[None], model.sv.t(), model.gamma) @ model.coef - model.rho
    return min(max(float(value[0]), 0.0), 100.0)

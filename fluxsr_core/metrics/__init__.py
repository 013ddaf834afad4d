"""Image-quality metrics for the benchmark: pyiqa, offline, with labelled protocols.

Why a wrapper around ``pyiqa.create_metric``:

- SR papers (OSEDiff, TSD-SR) report PSNR/SSIM on the Y channel of BT.601 YCbCr
  (``test_y_channel=True, color_space='ycbcr'``), not with pyiqa's defaults (PSNR
  on RGB, SSIM on the Y of YIQ). Here ``psnr``/``ssim`` mean the SR protocol.
- basicsr's implementation of the same definition gives other numbers (SSIM differs
  by ~1e-3), so it gets its own names (``psnr_y_basicsr``, ``ssim_y_basicsr``) and
  a table never mixes the two under one label.
- pyiqa downloads weights on first use. Here the files a metric needs are looked
  for BEFORE pyiqa builds it; a missing one makes the metric UNAVAILABLE with the
  file and the places looked in (never a number, never a crash). Any download pyiqa
  would still try is blocked, so nothing waits on a network that is not there.

Metric names:

- ``psnr``, ``ssim``: Y of YCbCr (BT.601), pyiqa. ``psnr_y_basicsr``,
  ``ssim_y_basicsr``: the same with basicsr. ``niqe_basicsr``: basicsr's NIQE (its
  parameters ship inside the basicsr wheel); an image with fewer than two of its 96-px
  blocks scores NaN (a missing value), as basicsr cannot fit it.
- ``brisque_opencv``: BRISQUE with OpenCV's LIVE-trained model (``brisque_model_live.yml``
  and ``brisque_range_live.yml`` from opencv_contrib, found like any weights), scored as
  ``cv2.quality.QualityBRISQUE`` scores it (``fluxsr_core.brisque``). Not pyiqa's
  ``brisque`` (piq's SVM) and not the LIVE release's numbers: another model.
- any other pyiqa name (``lpips``, ``dists``, ``musiq``, ``ms_ssim``, ...): pyiqa's
  own defaults. ``pyiqa:<name>`` forces pyiqa's defaults for any name
  (``pyiqa:psnr`` is RGB PSNR, ``pyiqa:ssim`` the Y of YIQ), as in pyiqa's
  calibration table.

Weights are searched in ``weights_dir`` (flat, or with ``pyiqa/``,
``checkpoints/``, ``clip/``, ``brisque_opencv/`` subfolders, as a torch hub directory) and then in the
torch hub directory (``$TORCH_HOME/hub``); timm and transformers models in the
Hugging Face cache. ``model_paths={'musiq': '/my/ckpt.pth'}`` hands pyiqa a file
through its ``pretrained_model_path`` option. Full-reference metrics see SR and HR
cropped by ``crop_border`` pixels on each side.

Modules: ``specs`` (names, ``MetricSpec``, protocol lines), ``weights`` (finding the files),
``offline`` (building with downloads blocked), ``backends`` (basicsr's and OpenCV's metrics),
``scoring`` (``Scorer``, ``resolve_metrics``, ``score``).
"""

from fluxsr_core.metrics.offline import DownloadBlocked, offline
from fluxsr_core.metrics.scoring import Scorer, resolve_metrics, score
from fluxsr_core.metrics.specs import (
    PYIQA_PREFIX,
    MetricSpec,
    Need,
    metric_spec,
    protocol_lines,
)
from fluxsr_core.metrics.weights import (
    MetricUnavailable,
    find_weights,
    search_paths,
)

__all__ = [
    "PYIQA_PREFIX", "DownloadBlocked", "MetricSpec", "MetricUnavailable", "Need", "Scorer",
    "find_weights", "metric_spec", "offline", "protocol_lines", "resolve_metrics", "score", "search_paths",
]

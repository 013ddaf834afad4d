"""Read and write benchmark images as float tensors (1, 3, H, W) in [0, 1].

One reader for every method and metric, so that two scores never differ by a
decoder. Choices, made to match what pyiqa (``imread2tensor``) and basicsr
(``cv2.imread(..., IMREAD_COLOR)``) feed their metrics:

- PIL decodes, except 16-bit PNG and TIFF files, which OpenCV decodes because PIL
  reduces 16-bit RGB(A) to 8 bits. 16-bit data is divided by 65535, 8-bit by 255.
- Grayscale is repeated on three channels.
- Alpha is DROPPED, not composited: the colour stored under transparent pixels is
  kept, as PIL's ``convert('RGB')``, pyiqa and basicsr do.
- EXIF orientation is ignored (pyiqa and basicsr ignore it too).
- A file that is not an image, empty or truncated raises ``ValueError`` naming it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fluxsr_core.config import MAX_INPUT_PIXELS
from fluxsr_core.errors import UnreadableImageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
# fluxsr checks every input's declared size against its own limit (``max_pixels``, a config key) before decoding;
# Pillow's process-wide guard raises DecompressionBombError, which is no OSError, so one bad file stopped a batch.
Image.MAX_IMAGE_PIXELS = None
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*")


def is_image_file(path: str | Path) -> bool:
    """True for a file whose suffix is an image format we read (by name only)."""
    p = Path(path)
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES


def _needs_opencv(data: bytes) -> bool:
    """16-bit PNG (IHDR bit depth, byte 24) or any TIFF."""
    if data.startswith(_PNG_SIGNATURE) and len(data) > 24:
        return data[24] == 16
    return data[:4] in _TIFF_MAGICS


def _opencv_rgb(data: bytes, path: Path) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise UnreadableImageError(f"{path}: truncated or corrupt image (OpenCV could not decode it)")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[..., 2::-1]  # BGR(A) -> RGB, alpha dropped
    elif arr.ndim == 3:
        arr = arr[..., :1]  # gray + alpha
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    raise UnreadableImageError(f"{path}: unsupported sample type {arr.dtype} (expected 8- or 16-bit integers)")


def _pil_rgb(data: bytes, path: Path) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("I;16", "I;16L", "I;16B", "I"):  # 16-bit grayscale
                return np.clip(np.asarray(im, dtype=np.float32) / 65535.0, 0.0, 1.0)
            return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except UnidentifiedImageError:
        raise UnreadableImageError(f"{path}: not an image (no image format recognised)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise UnreadableImageError(f"{path}: truncated or corrupt image ({err})") from None


def declared_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header, decoding nothing; None when Pillow does not know the format."""
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def check_pixels(path: Path, max_pixels: int | None, key: str = "infer.max_input_pixels") -> None:
    """An input whose header declares more than ``max_pixels`` is refused before it is decoded, naming the limit."""
    size = declared_size(path) if max_pixels else None
    if size is not None and size[0] * size[1] > max_pixels:
        w, h = size
        raise UnreadableImageError(f"{path}: declares {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
                                   f"(raise it with --set {key}=N if the image is real)")


def read_image(path: str | Path, max_pixels: int | None = MAX_INPUT_PIXELS) -> torch.Tensor:
    """An image file as a float32 tensor (1, 3, H, W) in [0, 1]; ``UnreadableImageError`` naming the file on
    failure (not an image, truncated, empty, more than ``max_pixels`` pixels declared). An animated GIF gives its
    first frame."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise UnreadableImageError(f"{p}: cannot read file ({err.strerror or err})") from None
    if not data:
        raise UnreadableImageError(f"{p}: empty file, not an image")
    check_pixels(p, max_pixels)
    arr = _opencv_rgb(data, p) if _needs_opencv(data) else _pil_rgb(data, p)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0)


def quantize_8bit(img: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 256 levels of an 8-bit file, as if saved and reloaded."""
    return (img.float().clamp(0.0, 1.0) * 255.0).round() / 255.0


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) in [0, 1] -> (H, W, 3) uint8 RGB."""
    if img.dim() == 4:
        if img.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {img.shape[0]}")
        img = img[0]
    return (img.detach().float().clamp(0.0, 1.0) * 255.0).round().byte().permute(1, 2, 0).cpu().numpy()


def write_image(path: str | Path, img: torch.Tensor) -> Path:
    """Save as an 8-bit RGB PNG (parents created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(img)).save(p)
    return p

"""Real HR photos as a data source: a folder of photos in, seeded square crops out (``pairs.source: images``).

The records of a photo folder are numbered by the photos' sorted relative paths: photo k gives records
``k·crops_per_image ... (k + 1)·crops_per_image - 1``, crop j of a photo cut at a position and with a
horizontal flip drawn from (run seed, relative path, j) alone. So adding photos whose paths sort after the
others adds records and reuses every finished shard, and a photo's crops never move when others are added.
A record carries x_0 (the crop) and where it came from; there is no teacher noise ε (FTD needs the teacher
source). Real-ISR models train this way on LSDIR or DIV2K crops (OSEDiff, OMGSR, OFTSR), and a user
fine-tunes on their own domain the same way.

A file that is not an image, is truncated or is smaller than the crop is a line naming it; the others go on.
Decoding every photo to check it happens once per photo content (``PhotoChecks``, keyed by sha256).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fluxsr_core.errors import InputNotFoundError, UnreadableImageError, UsageError
from fluxsr_core.imageio import read_image, to_uint8

PHOTO_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})


@dataclass(frozen=True)
class Photo:
    path: Path  # where it is read from
    relpath: str  # its name inside the folder (POSIX), what numbers it and seeds its crops
    sha256: str
    size: tuple[int, int]  # (width, height)


@dataclass(frozen=True)
class PhotoCrop:
    """One record of the photo source: crop ``crop`` of ``photo``."""

    photo: Photo
    crop: int

    def describe(self) -> str:
        return f"{self.photo.relpath} crop {self.crop} (sha256 {self.photo.sha256[:12]})"

    def identity(self) -> list:
        """What decides the record's pixels besides the crop size and run seed (a shard's content hash)."""
        return [self.photo.relpath, self.photo.sha256, self.crop]


def _known_digest(path: Path, verdicts: dict) -> str:
    """The sha256 of ``path``, read again only when its size or modification time changed since it was hashed."""
    stat = path.stat()
    size, mtime, *digest = verdicts.get(f"file:{path}", [None, None])
    if (size, mtime) == (stat.st_size, stat.st_mtime_ns) and digest:
        return digest[0]
    digest = _sha256(path)
    verdicts[f"file:{path}"] = [stat.st_size, stat.st_mtime_ns, digest]
    return digest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def photo_files(folder: str | Path) -> list[Path]:
    """The photo files under ``folder`` (recursive; PNG, JPEG, WebP), sorted by relative path."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise InputNotFoundError(f"pairs.images: {root} is not a folder of photos; give the folder holding your HR "
                                 "photos (PNG, JPEG or WebP), e.g. --images photos/")
    return sorted((p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES),
                  key=lambda p: p.relative_to(root).as_posix())


def check_photo(path: Path, resolution: int) -> tuple[int, int]:
    """(width, height) of a photo that decodes and holds a ``resolution`` crop; ``UnreadableImageError`` naming it
    and why otherwise."""
    image = read_image(path)
    h, w = image.shape[-2:]
    if min(h, w) < resolution:
        raise UnreadableImageError(f"{path}: {w}x{h} is smaller than a crop of pairs.resolution={resolution}; "
                                   "remove it or lower pairs.resolution")
    return w, h


def scan_photos(folder: str | Path, resolution: int, verdicts: dict[str, dict]) -> tuple[list[Photo], list[str]]:
    """(usable photos in record order, one line per skipped file). ``verdicts`` holds what earlier scans learnt
    ("sha256:resolution" -> {"size": [w, h]} or {"error": why}; "file:<path>" -> [size, mtime_ns, sha256], so an
    unchanged file is not read again) and is updated in place."""
    root = Path(folder).expanduser()
    photos, problems = [], []
    for path in photo_files(root):
        try:
            digest = _known_digest(path, verdicts)
        except OSError as err:
            problems.append(f"{path}: cannot read file ({err.strerror or err}); skipped")
            continue
        known = verdicts.get(f"{digest}:{resolution}")
        if known is None:
            try:
                known = {"size": list(check_photo(path, resolution))}
            except UnreadableImageError as err:
                known = {"error": str(err).split(": ", 1)[-1]}
            verdicts[f"{digest}:{resolution}"] = known
        if "error" in known:
            problems.append(f"{path}: {known['error']}; skipped")
            continue
        photos.append(Photo(path=path, relpath=path.relative_to(root).as_posix(), sha256=digest,
                            size=tuple(known["size"])))
    if not photos:
        raise UsageError(f"pairs.images: no usable photo in {root} (looked for {', '.join(sorted(PHOTO_SUFFIXES))} "
                         f"of at least {resolution}x{resolution} pixels)" + "".join(f"\n  {p}" for p in problems))
    return photos, problems


def photo_crops(photos: list[Photo], crops_per_image: int) -> list[PhotoCrop]:
    """The records of ``photos``, in order: each photo's crops 0..crops_per_image-1."""
    return [PhotoCrop(photo, j) for photo in photos for j in range(crops_per_image)]


def crop_seed(run_seed: int, relpath: str, crop: int) -> int:
    """The seed of one crop's position and flip: a pure function of (run seed, photo path, crop number)."""
    digest = hashlib.sha256(f"fluxsr-photo:{run_seed}:{relpath}:{crop}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def crop_window(seed: int, size: tuple[int, int], resolution: int) -> tuple[int, int, bool]:
    """(top, left, flip) of a ``resolution`` square inside a (width, height) photo, uniform over positions, a
    horizontal flip with probability 1/2."""
    rng = np.random.default_rng(seed)
    w, h = size
    top = int(rng.integers(0, h - resolution + 1))
    left = int(rng.integers(0, w - resolution + 1))
    return top, left, bool(rng.integers(0, 2))


def cut_crop(image, item: PhotoCrop, resolution: int, run_seed: int) -> tuple[np.ndarray, dict]:
    """(the crop as (H, W, 3) uint8 RGB, where it came from) for one photo record, from its photo ``image``
    ((1, 3, H, W) in [0, 1], ``read_image``: decoded once for all its crops)."""
    seed = crop_seed(run_seed, item.photo.relpath, item.crop)
    top, left, flip = crop_window(seed, item.photo.size, resolution)
    if tuple(image.shape[-2:]) != item.photo.size[::-1]:
        raise UnreadableImageError(f"{item.photo.path}: changed while the stage ran (was "
                                   f"{item.photo.size[0]}x{item.photo.size[1]}); run the stage again")
    crop = image[..., top:top + resolution, left:left + resolution]
    if flip:
        crop = crop.flip(-1)
    meta = {"source": "images", "file": item.photo.relpath, "sha256": item.photo.sha256, "crop": item.crop,
            "box": [top, left, resolution, resolution], "flip": flip, "seed": seed}
    return to_uint8(crop), meta

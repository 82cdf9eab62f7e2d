"""Real-photo degradations for evaluation: ``spsr eval --degradation jpeg:Q[,noise:SIGMA][,blur:SIGMA]``.

The LR image is made from HR by one fixed pipeline, always in this order, whatever the
order of the items in the spec:

1. **bicubic** downscale by the scale (4): HR cropped to a multiple of it, then the
   MATLAB-compatible ``imresize`` (:func:`spsr_cli.io.imresize.bicubic_downscale`), uint8;
2. **blur** (``blur:SIGMA``, LR pixels): an isotropic Gaussian, kernel radius ``ceil(3 sigma)``,
   normalised to sum 1, image edges mirrored (``numpy.pad(mode="symmetric")``); sigma 0 skips it;
3. **noise** (``noise:SIGMA``, 8-bit levels): independent Gaussian noise per pixel and channel
   (colour noise) from numpy's PCG64, seeded by ``sha256("SEED:IMAGE_NAME")`` so every image gets
   its own noise and a rerun the same; sigma 0 skips it;
4. the float image is rounded half up and clipped to uint8;
5. **JPEG** (``jpeg:Q``, 1..100): encoded by Pillow at quality Q with 4:2:0 chroma subsampling,
   the standard (IJG) tables, baseline, not optimised, then decoded to RGB.

``seed:N`` (default 0) changes the noise seed. ``bicubic`` alone is step 1 only (the benchmark LR).
The decoded pixels depend on Pillow's libjpeg build (reports record Pillow's version).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from spsr_cli.errors import UsageError
from spsr_cli.files import sha256_bytes
from spsr_cli.io.imresize import bicubic_downscale

#: Pillow's ``subsampling`` value for 4:2:0.
JPEG_SUBSAMPLING = 2
ORDER = ("bicubic", "blur", "noise", "jpeg")
_EXAMPLE = "e.g. jpeg:50, jpeg:30,noise:5 or blur:1.2,noise:3,jpeg:70"


@dataclass(frozen=True)
class Degradation:
    """One degradation pipeline (see the module docstring for the order and settings).

    ``jpeg``: quality 1..100 or None (no JPEG); ``noise``: Gaussian sigma in 8-bit levels;
    ``blur``: Gaussian sigma in LR pixels; ``seed``: mixed with each image's name for the noise.
    """

    jpeg: int | None = None
    noise: float = 0.0
    blur: float = 0.0
    seed: int = 0

    @property
    def spec(self) -> str:
        """The canonical spec string, in pipeline order (``bicubic`` when nothing is added)."""
        parts = []
        if self.blur:
            parts.append(f"blur:{self.blur:g}")
        if self.noise:
            parts.append(f"noise:{self.noise:g}")
        if self.jpeg is not None:
            parts.append(f"jpeg:{self.jpeg}")
        if self.seed and self.noise:
            parts.append(f"seed:{self.seed}")
        return ",".join(parts) or "bicubic"

    def to_dict(self) -> dict[str, Any]:
        """What reports record: the spec and every setting of the pipeline."""
        return {
            "spec": self.spec,
            "order": list(ORDER),
            "bicubic": "MATLAB-compatible imresize, antialiased, uint8",
            "blur_sigma": self.blur,
            "noise_sigma": self.noise,
            "noise_seed": self.seed,
            "jpeg_quality": self.jpeg,
            "jpeg_subsampling": "4:2:0" if self.jpeg is not None else None,
        }

    def apply(self, hr: np.ndarray, name: str, scale: int = 4) -> np.ndarray:
        """H x W x 3 uint8 HR -> (H / scale) x (W / scale) x 3 uint8 degraded LR (HR cropped to a multiple
        of ``scale`` first). ``name`` seeds the noise: the same image name always gets the same noise."""
        lr = bicubic_downscale(hr, scale)
        if not self.blur and not self.noise and self.jpeg is None:
            return lr
        image = lr.astype(np.float64)
        if self.blur:
            image = gaussian_blur(image, self.blur)
        if self.noise:
            image = image + noise_rng(name, self.seed).standard_normal(image.shape) * self.noise
        out = np.floor(image + 0.5).clip(0, 255).astype(np.uint8)
        if self.jpeg is not None:
            out = decode_jpeg(encode_jpeg(out, self.jpeg))
        return out


def parse_degradation(text: str) -> Degradation:
    """``jpeg:Q[,noise:SIGMA][,blur:SIGMA][,seed:N]`` (any order) or ``bicubic`` -> :class:`Degradation`.

    Raises :class:`UsageError` naming the bad item and the expected form.
    """
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise UsageError(f"--degradation {text!r} is empty or has an empty item; {_EXAMPLE}")
    if [i.lower() for i in items] == ["bicubic"]:
        return Degradation()
    values: dict[str, str] = {}
    for item in items:
        kind, sep, value = item.partition(":")
        kind = kind.strip().lower()
        if kind not in ("jpeg", "noise", "blur", "seed") or not sep or not value.strip():
            raise UsageError(
                f"--degradation: {item!r} is not KIND:VALUE with KIND jpeg, noise, blur or seed "
                f"('bicubic' alone for none); {_EXAMPLE}"
            )
        if kind in values:
            raise UsageError(f"--degradation {text!r} gives {kind} twice; give each at most once")
        values[kind] = value.strip()
    jpeg = None
    if "jpeg" in values:
        jpeg = _number(values["jpeg"], "jpeg", int)
        if not 1 <= jpeg <= 100:
            raise UsageError(f"--degradation jpeg:{values['jpeg']}: the JPEG quality must be 1..100")
    noise = _number(values.get("noise", "0"), "noise", float)
    blur = _number(values.get("blur", "0"), "blur", float)
    for kind, value, top in (("noise", noise, 255.0), ("blur", blur, 50.0)):
        if not (math.isfinite(value) and 0 <= value <= top):
            raise UsageError(f"--degradation {kind}:{values[kind]}: sigma must be between 0 and {top:g}")
    seed = _number(values.get("seed", "0"), "seed", int)
    if seed < 0:
        raise UsageError(f"--degradation seed:{values['seed']}: the seed must be >= 0")
    return Degradation(jpeg=jpeg, noise=noise, blur=blur, seed=seed)


def _number(value: str, kind: str, kind_type: type) -> Any:
    try:
        return kind_type(value)
    except ValueError:
        what = "a whole number" if kind_type is int else "a number"
        raise UsageError(f"--degradation {kind}:{value}: {value!r} is not {what}; {_EXAMPLE}") from None


def noise_rng(name: str, seed: int = 0) -> np.random.Generator:
    """The noise generator of one image: PCG64 seeded by the first 8 bytes of ``sha256("SEED:NAME")``."""
    digest = bytes.fromhex(sha256_bytes(f"{seed}:{name}".encode("utf-8")))
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:8], "little")))


def gaussian_kernel(sigma: float) -> np.ndarray:
    """1-D Gaussian of ``sigma`` (> 0), radius ``ceil(3 sigma)``, summing to 1 (float64)."""
    radius = max(1, math.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """H x W x C float64 -> the same, blurred separably by a Gaussian of ``sigma``; edges mirrored."""
    if sigma <= 0:
        return image
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    out = image
    for axis in (0, 1):
        pad = [(0, 0)] * image.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")
        length = out.shape[axis]
        acc = np.zeros_like(out)
        for i, weight in enumerate(kernel):
            acc += weight * np.take(padded, range(i, i + length), axis=axis)
        out = acc
    return out


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """H x W x 3 uint8 RGB -> JPEG bytes: Pillow, ``quality``, 4:2:0, standard tables, baseline, not optimised."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(
        buffer, format="JPEG", quality=quality, subsampling=JPEG_SUBSAMPLING, optimize=False, progressive=False
    )
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> H x W x 3 uint8 RGB."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")).copy()


__all__ = [
    "Degradation",
    "JPEG_SUBSAMPLING",
    "ORDER",
    "decode_jpeg",
    "encode_jpeg",
    "gaussian_blur",
    "gaussian_kernel",
    "noise_rng",
    "parse_degradation",
]

"""Reading and writing images: Pillow, with pypng and tifffile for 16-bit colour.

Pixels travel through the program as float32 arrays in [0, 1]:

* ``Image.rgb``   H x W x 3 float32 in [0, 1] (grayscale sources are replicated to 3 channels),
* ``Image.alpha`` H x W float32 in [0, 1] or ``None``.

Alpha never goes through the network: the engine upscales it with :func:`resize_plane`
and puts it back on the :class:`Image` before :func:`write_image`.

Inputs: PNG, JPEG, WebP, TIFF, BMP (anything else Pillow can open is read as well), in
modes 1, L, LA, P/PA (palette transparency becomes alpha), I;16 (16-bit grayscale),
RGB, RGBA, CMYK (converted to RGB with Pillow's plain formula; a CMYK ICC profile is
dropped because it no longer describes the pixels). EXIF orientation is applied on read.

16-bit colour: Pillow has no 16-bit-per-channel RGB mode and decodes 48/64-bit PNG and
TIFF to 8 bits per channel, so those pixels are decoded by ``pypng`` (PNG: RGB, RGBA,
gray+alpha) and ``tifffile`` (TIFF: RGB, RGBA) instead, losslessly; Pillow still reads
their metadata. A 16-bit colour TIFF that ``tifffile`` cannot decode (LZW and JPEG need
the optional ``imagecodecs``, extra ``spsr-cli[tiff]``) is read with 8 bits per channel
and a warning. The same two libraries write 16-bit PNG (zlib) and TIFF (Adobe deflate
with the horizontal predictor).

Outputs: the format follows the extension (or ``format=``). 16-bit sources stay 16-bit
in PNG and TIFF; JPEG, WebP and BMP are 8-bit. PNG, TIFF and WebP keep alpha; JPEG and
BMP cannot carry it, so the image is composited over white (a warning is logged).
Grayscale sources are written as grayscale except to WebP (which has no grayscale
mode). The ICC profile is embedded whenever its colour space matches the written
pixels. 16-bit gray+alpha goes to TIFF as 16-bit RGBA (Pillow cannot read 16-bit
gray+alpha TIFF back). Every write goes through :func:`spsr_cli.files.atomic_open` (a temporary
file in the target folder, renamed into place, mode from the umask), so an existing file is
never left half-written.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import PIL.Image
import PIL.ImageOps
import png
import tifffile

from spsr_cli import files
from spsr_cli.errors import ImageError

log = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
#: Read as inputs but never written (GIF: 256 colours; its first frame is used): an output
#: for such an input needs another format (``spsr upscale --ext png``).
READ_ONLY_EXTENSIONS: tuple[str, ...] = (".gif",)

_FORMAT_BY_EXTENSION = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
_SIXTEEN_BIT_FORMATS = frozenset({"PNG", "TIFF"})
_ALPHA_FORMATS = frozenset({"PNG", "TIFF", "WEBP"})
_GRAY_FORMATS = frozenset({"PNG", "TIFF", "JPEG", "BMP"})
_QUALITY_FORMATS = frozenset({"JPEG", "WEBP"})
_EXIF_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "MPO"})
_JPEG_MAX_EXIF = 65_000  # one APP1 segment
_ORIENTATION_TAG = 0x0112
_PNG_IDAT_CHUNK = 1 << 24  # largest IDAT chunk written (PNG chunk lengths are 31-bit)
_TIFF_RGB = 2  # PhotometricInterpretation
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as Pillow's "L"

# What Pillow and pypng raise for corrupt, truncated or oversized files.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    PIL.Image.DecompressionBombError,
    png.Error,
)
# What tifffile raises for a TIFF it cannot decode (KeyError: a codec that needs imagecodecs);
# Pillow then decodes the file, or names what is wrong with it.
_TIFF_ERRORS = (tifffile.TiffFileError, ValueError, KeyError, OSError, struct.error, zlib.error)


@dataclass(kw_only=True)
class Image:
    """Decoded image, independent of the file format.

    rgb: H x W x 3 float32 in [0, 1]; grayscale sources are replicated to 3 channels.
        For writing, rgb and alpha may also hold quantised samples (uint8 0..255 for 8-bit,
        uint16 0..65535 for 16-bit), as the engine's output does.
    alpha: H x W float32 in [0, 1], or None when the source has no transparency.
    bit_depth: 8 or 16, the precision of the source (16-bit is kept on PNG/TIFF output).
    grayscale: the source had no colour; it is written back as grayscale.
    icc_profile: the embedded ICC profile bytes, or None.
    dpi: (x, y) resolution from the source, or None (carried unchanged).
    exif: EXIF bytes ("Exif\\0\\0" header) with the orientation tag removed, or None.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    grayscale: bool = False
    icc_profile: bytes | None = None
    dpi: tuple[float, float] | None = None
    exif: bytes | None = None

    def __post_init__(self) -> None:
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ImageError(f"Image.rgb must be H x W x 3, got shape {self.rgb.shape}")
        if self.alpha is not None and self.alpha.shape != self.rgb.shape[:2]:
            raise ImageError(
                f"Image.alpha shape {self.alpha.shape} does not match rgb {self.rgb.shape[:2]}; "
                "resize the alpha with resize_plane() first"
            )
        if self.bit_depth not in (8, 16):
            raise ImageError(f"Image.bit_depth must be 8 or 16, got {self.bit_depth}")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


def is_image_path(path: Path) -> bool:
    """True when the file name ends with an extension we read (case-insensitive), GIF included."""
    suffix = Path(path).suffix.lower()
    return suffix in SUPPORTED_EXTENSIONS or suffix in READ_ONLY_EXTENSIONS


def is_writable_extension(ext: str) -> bool:
    """True when :func:`write_image` can write files with this extension (leading dot optional)."""
    key = ext.lower() if ext.startswith(".") else "." + ext.lower()
    return key in _FORMAT_BY_EXTENSION


#: Temporaries :func:`write_image` makes for a path (``.NAME.XXXXXXXX.tmp`` beside it) that a
#: killed writer may have left: :func:`spsr_cli.files.temporary_files`, the one naming of every atomic write.
temporary_files = files.temporary_files


def format_for_extension(ext: str) -> str:
    """Pillow format name for an extension: ".jpg" -> "JPEG" (leading dot optional)."""
    key = ext.lower() if ext.startswith(".") else "." + ext.lower()
    try:
        return _FORMAT_BY_EXTENSION[key]
    except KeyError:
        raise ImageError(f"unsupported image extension {ext!r}; supported: {', '.join(SUPPORTED_EXTENSIONS)}") from None


def _normalise_format(fmt: str) -> str:
    """Accept "png", ".jpg", "JPEG", "tif", ... and return the Pillow format name."""
    name = fmt.upper().lstrip(".")
    if name in set(_FORMAT_BY_EXTENSION.values()):
        return name
    return format_for_extension(fmt)


# ----------------------------------------------------------------------------- reading


def _check_regular(path: Path) -> None:
    try:
        if path.is_file():
            return
        exists = os.path.lexists(path)
    except OSError as exc:  # e.g. a folder on the way without search permission
        raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if exists:
        raise ImageError(f"cannot read {path}: it is not a regular file (a folder, FIFO, socket or device)")
    raise ImageError(f"cannot read {path}: no such file")


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[PIL.Image.Image]:
    """``PIL.Image.open`` with Pillow's decompression-bomb warning and error replaced by our messages."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
        try:
            im = PIL.Image.open(path)
        except PIL.Image.DecompressionBombError:
            raise ImageError(
                f"cannot read {path}: it declares more than {2 * (PIL.Image.MAX_IMAGE_PIXELS or 0)} pixels, which "
                "decoding a small file into would take gigabytes (a decompression bomb?); downscale it with "
                "another tool first if it is a real image"
            ) from None
    with im:
        width, height = im.size
        if PIL.Image.MAX_IMAGE_PIXELS and width * height > PIL.Image.MAX_IMAGE_PIXELS:
            log.warning(
                "%s is %d x %d pixels (%.0f megapixels): decoding it alone takes about %.1f GB",
                path,
                width,
                height,
                width * height / 1e6,
                width * height * 16 / 1e9,
            )
        yield im


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file from its header, without decoding the pixels
    (EXIF orientation not applied: the product, and so the memory, is the same)."""
    path = Path(path)
    _check_regular(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(path) as im:
                width, height = im.size
    except _DECODE_ERRORS as exc:
        raise ImageError(f"cannot read {path}: {exc or type(exc).__name__}") from exc
    return int(height), int(width)


#: What Pillow raises while counting the frames of a file whose later frames are damaged (a TIFF page
#: without a width tag: TypeError; a cut animated GIF: IndexError, OSError, EOFError).
_FRAME_COUNT_ERRORS = (*_DECODE_ERRORS, TypeError, IndexError, KeyError)


def frame_count(im: PIL.Image.Image) -> int | None:
    """How many frames (pages) ``im`` holds, or None when a damaged later frame stops Pillow counting
    them; ``im`` is left on its first frame either way, so that frame can still be read."""
    try:
        frames = int(getattr(im, "n_frames", 1) or 1)
    except _FRAME_COUNT_ERRORS:
        frames = None
    try:
        if im.tell() != 0:
            im.seek(0)
    except _FRAME_COUNT_ERRORS as exc:
        where = getattr(im, "filename", "") or "the image"
        raise ImageError(f"cannot read {where}: {exc or type(exc).__name__}") from exc
    return frames


def count_frames(path: Path) -> int | None:
    """How many frames (pages) the image file ``path`` holds, from its headers; None when that cannot be told."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(path) as im:
                return frame_count(im)
    except (*_FRAME_COUNT_ERRORS, ImageError):
        return None


def read_image(path: Path) -> Image:
    """Read an image file into float32 planes in [0, 1], EXIF orientation applied.

    Raises ImageError (naming the file and the reason) for missing, corrupt or
    unsupported files, and for files that are not regular files (FIFOs, devices).
    """
    path = Path(path)
    _check_regular(path)
    try:
        with _opened(path) as im:
            frames = frame_count(im)
            if frames is None:
                log.warning("%s: its frames cannot be counted (a damaged later frame?); the first frame is used", path)
            elif frames > 1:
                log.warning("%s has %d frames (animated or multi-page); only the first frame is upscaled", path, frames)
            deep = _read_16bit_colour(path, im)
            if deep is not None:
                return _image_from_deep_colour(im, *deep)
            return _image_from_pillow(im)
    except ImageError:
        raise
    except _DECODE_ERRORS as exc:
        raise ImageError(f"cannot read {path}: {exc or type(exc).__name__}") from exc


def image_from_pil(im: PIL.Image.Image) -> Image:
    """An in-memory Pillow image as an :class:`Image` (8-bit modes; EXIF orientation applied)."""
    return _image_from_pillow(im)


def image_to_array(image: Image) -> np.ndarray:
    """The samples of ``image`` as written: H x W (gray), H x W x 2 (gray + alpha), H x W x 3 or
    H x W x 4 (RGBA); uint8 for 8-bit images, uint16 for 16-bit ones."""
    dtype = np.uint16 if image.bit_depth == 16 else np.uint8
    data = _planes(image, image.grayscale, False, dtype)
    return data[..., 0] if data.shape[2] == 1 else data


def _metadata(im: PIL.Image.Image, source_format: str | None) -> dict:
    icc = im.info.get("icc_profile") or None
    dpi = im.info.get("dpi")
    exif = im.info.get("exif") if source_format in _EXIF_FORMATS else None
    return {
        "icc_profile": icc,
        "dpi": (float(dpi[0]), float(dpi[1])) if dpi else None,
        "exif": exif if isinstance(exif, bytes) and exif else None,
    }


def _image_from_pillow(src: PIL.Image.Image) -> Image:
    """Decode the common 8/16-bit modes through Pillow."""
    source_format = src.format
    try:
        im = PIL.ImageOps.exif_transpose(src)
    except (ValueError, SyntaxError, struct.error, KeyError) as exc:
        log.warning("ignoring unreadable EXIF orientation: %s", exc)
        im = src
    meta = _metadata(im, source_format)
    mode = im.mode
    if mode == "CMYK":
        meta["icc_profile"] = None  # a CMYK profile does not describe the converted RGB pixels
        im, mode = im.convert("RGB"), "RGB"
    elif mode in ("1", "La") or (mode == "L" and "transparency" in im.info):
        im = im.convert("LA" if "transparency" in im.info or mode == "La" else "L")
        mode = im.mode
    elif mode in ("P", "PA") or (mode == "RGB" and "transparency" in im.info):
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
        mode = im.mode
    elif mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not mode.startswith("I;16"):
        im, mode = im.convert("RGB"), "RGB"  # RGBX, YCbCr, LAB, HSV, RGBa, ...

    arr = np.asarray(im)
    if mode.startswith("I;16") or mode == "I":
        gray = np.clip(arr.astype(np.float32) / 65535.0, 0.0, 1.0)
        return _gray_image(gray, None, bit_depth=16, **meta)
    if mode == "F":
        gray = np.clip(arr.astype(np.float32), 0.0, 1.0)
        return _gray_image(gray, None, bit_depth=16, **meta)
    planes = arr.astype(np.float32) / 255.0
    if mode == "L":
        return _gray_image(planes, None, bit_depth=8, **meta)
    if mode == "LA":
        return _gray_image(planes[..., 0], planes[..., 1], bit_depth=8, **meta)
    alpha = planes[..., 3] if mode == "RGBA" else None
    return Image(rgb=np.ascontiguousarray(planes[..., :3]), alpha=alpha, bit_depth=8, **meta)


def _gray_image(gray: np.ndarray, alpha: np.ndarray | None, *, bit_depth: int, **meta) -> Image:
    rgb = np.repeat(gray[..., None], 3, axis=2)
    return Image(rgb=rgb, alpha=alpha, bit_depth=bit_depth, grayscale=True, **meta)


def _read_16bit_colour(path: Path, im: PIL.Image.Image) -> tuple[np.ndarray, bool] | None:
    """(uint16 H x W x C array, is_gray_alpha) for a 16-bit colour PNG or TIFF, else None.

    Pillow opens these as 8-bit RGB/RGBA (16-bit gray+alpha PNG as RGBA); their pixels
    are decoded here by pypng or tifffile instead. Other files return None (Pillow's
    decoding is exact for them).
    """
    if im.mode not in ("RGB", "RGBA"):
        return None
    if im.format == "PNG":
        return _read_png16(path)
    if im.format == "TIFF":
        return _read_tiff16(path, im.mode)
    return None


def _read_png16(path: Path) -> tuple[np.ndarray, bool] | None:
    """Rows of a 16-bit PNG through pypng (which checks every chunk's CRC), or None for 8-bit."""
    with open(path, "rb") as handle:  # closed even when the rows are never read (8-bit files)
        width, height, rows, info = png.Reader(file=handle).read()
        if info["bitdepth"] != 16:
            return None
        planes = int(info["planes"])
        data = np.empty((height, width * planes), np.uint16)
        for y, row in enumerate(rows):  # array("H") rows, native byte order
            data[y] = np.frombuffer(row, np.uint16)
    return data.reshape(height, width, planes), bool(info["greyscale"])


def _read_tiff16(path: Path, mode: str) -> tuple[np.ndarray, bool] | None:
    """The first page of a 16-bit RGB(A) TIFF through tifffile, or None (Pillow then reads 8 bits)."""
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if page.bitspersample != 16 or page.photometric != _TIFF_RGB or page.samplesperpixel < 3:
                return None
            data = page.asarray()
            separate = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
    except _TIFF_ERRORS as exc:
        fix = "; `pip install imagecodecs` (spsr-cli[tiff]) reads it in full" if isinstance(exc, KeyError) else ""
        log.warning("%s: 16-bit colour TIFF is read with 8 bits per channel (%s)%s", path, exc, fix)
        return None
    if separate:  # S x H x W
        data = np.moveaxis(data, 0, -1)
    if data.ndim != 3 or data.dtype.kind != "u":
        log.warning("%s: 16-bit colour layout %s %s is read with 8 bits per channel", path, data.shape, data.dtype)
        return None
    return np.ascontiguousarray(data[..., : 4 if mode == "RGBA" else 3], dtype=np.uint16), False


def _image_from_deep_colour(im: PIL.Image.Image, data: np.ndarray, gray_alpha: bool) -> Image:
    exif = im.getexif()
    orientation = exif.get(_ORIENTATION_TAG, 1)
    orientation = orientation if orientation in range(1, 9) else 1
    meta = _metadata(im, im.format)
    if orientation != 1 and meta["exif"] is not None:
        del exif[_ORIENTATION_TAG]
        meta["exif"] = exif.tobytes()
    planes = orient_array(data, orientation).astype(np.float32) / 65535.0
    if gray_alpha:
        return _gray_image(planes[..., 0], planes[..., 1], bit_depth=16, **meta)
    alpha = planes[..., 3] if planes.shape[2] == 4 else None
    return Image(rgb=np.ascontiguousarray(planes[..., :3]), alpha=alpha, bit_depth=16, **meta)


def orient_array(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an H x W (x C) array, like ImageOps.exif_transpose."""
    if orientation in (5, 6, 7, 8):
        arr = np.swapaxes(arr, 0, 1)  # transpose, then flip to reach the rotation
    if orientation in (2, 3, 6, 7):
        arr = arr[:, ::-1]
    if orientation in (3, 4, 7, 8):
        arr = arr[::-1]
    return np.ascontiguousarray(arr)


# ----------------------------------------------------------------------------- resizing


def resize_plane(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize H x W or H x W x C float data in [0, 1] to size=(height, width).

    Each channel is resized as a Pillow "F" image with the Lanczos filter (antialiased
    when shrinking). Returns float32 clipped to [0, 1], same number of dimensions.
    """
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ImageError(f"resize target must be at least 1 x 1 pixels, got {size}")
    if arr.ndim not in (2, 3):
        raise ImageError(f"resize_plane expects an H x W or H x W x C array, got shape {arr.shape}")
    if arr.ndim == 3:
        channels = [resize_plane(arr[..., c], (height, width)) for c in range(arr.shape[2])]
        return np.stack(channels, axis=2) if channels else np.zeros((height, width, 0), np.float32)
    plane = np.ascontiguousarray(arr, dtype=np.float32)
    if plane.shape != (height, width):
        resized = PIL.Image.fromarray(plane).resize((width, height), PIL.Image.Resampling.LANCZOS)
        plane = np.asarray(resized, dtype=np.float32)
    return np.clip(plane, 0.0, 1.0).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- writing


def write_image(path: Path, image: Image, *, format: str | None = None, quality: int = 95) -> None:
    """Write ``image`` atomically (:func:`spsr_cli.files.atomic_open`: a temporary file in the same
    folder, renamed into place; the file gets the umask's usual mode).

    format: Pillow name or extension ("PNG", "jpg", ...); None -> from path's extension.
    quality: 1-100, used by JPEG and WebP. Parent folders are created. On any failure
    the temporary file is removed and an existing file at ``path`` is left untouched.
    """
    path = Path(path)
    fmt = _normalise_format(format) if format is not None else format_for_extension(path.suffix)
    if not 1 <= int(quality) <= 100:
        raise ImageError(f"quality must be between 1 and 100, got {quality}")
    if path.is_dir():
        raise ImageError(f"cannot write {path}: it is a folder")
    try:
        with files.atomic_open(path, "wb") as fh:
            _encode(fh, image, fmt, int(quality), name=path)
    except (OSError, ValueError, KeyError, struct.error, png.Error) as exc:
        raise ImageError(f"cannot write {path} as {fmt}: {exc}") from exc


def _encode(fh: io.BufferedIOBase, image: Image, fmt: str, quality: int, *, name: Path | str = "output") -> None:
    gray = image.grayscale and fmt in _GRAY_FORMATS
    alpha = image.alpha
    if alpha is not None and fmt not in _ALPHA_FORMATS:
        log.warning("%s: %s cannot store transparency; the image is composited over white", name, fmt)
    composite = alpha is not None and fmt not in _ALPHA_FORMATS
    icc = _matching_icc(image.icc_profile, gray)
    if image.bit_depth == 16 and fmt in _SIXTEEN_BIT_FORMATS:
        data = _planes(image, gray, composite, np.uint16)
        if fmt == "PNG":
            fh.write(_png16_bytes(data, icc=icc, dpi=image.dpi, exif=image.exif))
        else:
            if data.shape[2] == 2:  # Pillow cannot read 16-bit gray+alpha TIFF: store it as RGBA
                data = data[..., [0, 0, 0, 1]]
                icc = _matching_icc(image.icc_profile, False)
            fh.write(_tiff16_bytes(data, icc=icc, dpi=image.dpi))
        return
    data = _planes(image, gray, composite, np.uint8)
    pil = PIL.Image.fromarray(data[..., 0] if data.shape[2] == 1 else data)
    pil.save(fh, format=fmt, **_save_options(fmt, image, icc, quality))


def _save_options(fmt: str, image: Image, icc: bytes | None, quality: int) -> dict:
    opts: dict = {}
    if icc and fmt != "BMP":
        opts["icc_profile"] = icc
    if image.dpi and fmt != "WEBP":
        opts["dpi"] = image.dpi
    if image.exif and fmt in _EXIF_FORMATS and not (fmt == "JPEG" and len(image.exif) > _JPEG_MAX_EXIF):
        opts["exif"] = image.exif
    if fmt in _QUALITY_FORMATS:
        opts["quality"] = quality
    if fmt == "JPEG" and quality >= 90:
        opts["subsampling"] = 0  # 4:4:4 keeps the upscaled colour detail
    if fmt == "TIFF":
        opts["compression"] = "tiff_adobe_deflate"
    return opts


def _planes(image: Image, gray: bool, composite: bool, dtype: type) -> np.ndarray:
    """The H x W x C ``dtype`` samples to encode (C: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA).

    ``image.rgb`` and ``image.alpha`` are float in [0, 1] or already quantised (uint8,
    uint16: the engine writes its output so); colour is reduced to luma for ``gray``,
    composited over white for ``composite`` and quantised by :func:`quantise`. The work goes in
    bands of rows, so that memory beyond the result stays small, and quantised RGB that
    needs no change is returned as it is, without a copy.
    """
    rgb, alpha = image.rgb, image.alpha
    ready = rgb.dtype == dtype and not gray and not composite
    if ready and alpha is None:
        return rgb
    height, width = rgb.shape[:2]
    out = np.empty((height, width, (1 if gray else 3) + (alpha is not None and not composite)), dtype)
    if ready and alpha is not None and alpha.dtype == dtype:
        out[..., :3], out[..., 3] = rgb, alpha
        return out
    band = max(1, (1 << 20) // max(1, width))
    for y in range(0, height, band):
        colour = _luma(_unit(rgb[y : y + band])) if gray else _clean(_unit(rgb[y : y + band]))
        a = _clean(_unit(alpha[y : y + band])) if alpha is not None else None
        if a is not None and composite:
            colour = colour * (a if gray else a[..., None]) + (1.0 - (a if gray else a[..., None]))
        out[y : y + band, :, : 1 if gray else 3] = quantise(colour[..., None] if gray else colour, dtype)
        if a is not None and not composite:
            out[y : y + band, :, -1] = quantise(a, dtype)
    return out


def _unit(arr: np.ndarray) -> np.ndarray:
    """Quantised samples (uint8, uint16) -> float32 in [0, 1]; float data unchanged."""
    if arr.dtype.kind in "ui":
        return arr.astype(np.float32) / np.float32(np.iinfo(arr.dtype).max)
    return arr


def _clean(arr: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(np.asarray(arr, dtype=np.float32)), 0.0, 1.0)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return np.clip(_clean(rgb) @ _LUMA, 0.0, 1.0)


def quantise(planes: np.ndarray, dtype: type = np.uint8) -> np.ndarray:
    """Float samples in [0, 1] (any shape) -> ``dtype`` samples: uint8 0..255 or uint16 0..65535.

    The one quantiser of the image output path: NaN becomes 0, values are clipped to [0, 1],
    scaled in float32 and rounded half to even (``np.rint``; the engine's on-device tile
    store, :meth:`spsr_cli.engine.tiling.Upscaler._store`, rounds the same way).
    """
    peak = np.float32(np.iinfo(dtype).max)
    scaled = np.clip(np.nan_to_num(np.asarray(planes, dtype=np.float32)), 0.0, 1.0) * peak
    return np.rint(scaled, out=scaled).astype(dtype)


def _matching_icc(icc: bytes | None, gray: bool) -> bytes | None:
    """The profile if its colour space (header bytes 16-19) fits the written pixels."""
    if not icc or len(icc) < 20:
        return None
    space = icc[16:20]
    return icc if space == (b"GRAY" if gray else b"RGB ") else None


# ----------------------------------------------------------------------------- 16-bit encoders


def _png16_bytes(data: np.ndarray, *, icc: bytes | None, dpi: tuple[float, float] | None, exif: bytes | None) -> bytes:
    """16-bit PNG (pypng) from an H x W x C uint16 array (C: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA).

    pypng writes IHDR, pHYs and the pixels; the iCCP and eXIf chunks it has no option for
    are added before the image data, and no IDAT chunk is longer than ``_PNG_IDAT_CHUNK``.
    """
    height, width, channels = data.shape
    ppm = [max(1, round(d / 0.0254)) for d in dpi] if dpi else [None, None]
    writer = png.Writer(
        width,
        height,
        greyscale=channels <= 2,
        alpha=channels in (2, 4),
        bitdepth=16,
        compression=6,
        x_pixels_per_unit=ppm[0],
        y_pixels_per_unit=ppm[1],
        unit_is_meter=True,
    )
    encoded = io.BytesIO()
    writer.write_packed(encoded, data.astype(">u2").view(np.uint8).reshape(height, width * channels * 2))
    chunks = list(png.Reader(bytes=encoded.getvalue()).chunks())
    del encoded
    header = [c for c in chunks if c[0] not in (b"IDAT", b"IEND")]
    if icc:
        header.append((b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if exif:
        header.append((b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    pixels = [
        (b"IDAT", payload[start : start + _PNG_IDAT_CHUNK])
        for kind, payload in chunks
        if kind == b"IDAT"
        for start in range(0, max(1, len(payload)), _PNG_IDAT_CHUNK)
    ]
    out = io.BytesIO()
    png.write_chunks(out, [*header, *pixels, (b"IEND", b"")])
    return out.getvalue()


def _tiff16_bytes(data: np.ndarray, *, icc: bytes | None, dpi: tuple[float, float] | None) -> bytes:
    """16-bit TIFF (tifffile, Adobe deflate + horizontal predictor) from an H x W x C uint16 array (C: 1, 3 or 4)."""
    channels = data.shape[2]
    out = io.BytesIO()
    tifffile.imwrite(
        out,
        data[..., 0] if channels == 1 else data,
        photometric="minisblack" if channels == 1 else "rgb",
        extrasamples=("unassalpha",) if channels == 4 else None,
        compression="adobe_deflate",
        predictor=True,
        resolution=tuple(dpi) if dpi else None,
        resolutionunit="inch" if dpi else None,
        extratags=[(34675, 7, len(icc), icc, True)] if icc else None,  # InterColorProfile
        metadata=None,
        software=False,
    )
    return out.getvalue()

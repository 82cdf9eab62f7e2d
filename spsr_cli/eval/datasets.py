"""Benchmark datasets: the registry (``datasets.json``), download, unpacking and HR/LR pairing.

A dataset entry names a hub repository pinned to a commit, an HR archive and
optionally a published LR archive (see the JSON file's ``notes``). Archives are
downloaded through :func:`spsr_cli.weights.hub.fetch_hub_file_checked` (huggingface_hub's
cache; the bytes are checked against the hub's content hash for the pinned commit and
against the registry's sha256 where it has one) and unpacked once under
``$SPSR_HOME/datasets/<name>/<revision>/``, with the verified hashes recorded beside the images.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from spsr_cli.errors import ImageError, SPSRError, UsageError, WeightsNotAvailableError

if TYPE_CHECKING:  # eval.degradation imports torch (through imresize): only when a degradation is used
    from spsr_cli.eval.degradation import Degradation

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".ppm", ".webp"}
_COMMIT = re.compile(r"[0-9a-f]{40}")
_COMPLETE = ".complete"
_ORIENTATION_TAG = 0x0112  # EXIF orientation


class DatasetError(SPSRError):
    """A dataset is unknown, not pinned, malformed, or its HR/LR files do not pair up."""


@dataclass(frozen=True)
class ArchiveFile:
    filename: str
    sha256: str | None


@dataclass(frozen=True)
class DatasetSpec:
    """One registry entry (see ``datasets.json``)."""

    name: str
    repo_id: str | None
    revision: str | None
    hr: ArchiveFile | None
    lr: ArchiveFile | None
    scale: int = 4
    repo_type: str = "dataset"
    revision_note: str | None = None
    paper_bicubic: tuple[float, float, float] | None = None  # the SPSR paper's Bicubic PSNR / SSIM / LPIPS

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DatasetSpec:
        def archive(part: Any) -> ArchiveFile | None:
            if not part or not part.get("filename"):
                return None
            return ArchiveFile(filename=part["filename"], sha256=part.get("sha256"))

        return cls(
            name=raw["name"],
            repo_id=raw.get("repo_id"),
            revision=raw.get("revision"),
            hr=archive(raw.get("hr")),
            lr=archive(raw.get("lr")),
            scale=int(raw.get("scale", 4)),
            repo_type=raw.get("repo_type", "dataset"),
            revision_note=raw.get("revision_note"),
            paper_bicubic=tuple(raw["paper_bicubic"]) if raw.get("paper_bicubic") else None,  # type: ignore[arg-type]
        )

    def describe_source(self) -> str:
        """One line for help texts: where the set comes from, or why it has no source."""
        if self.repo_id is None or self.revision is None:
            where = f"{self.repo_id} (no pinned revision)" if self.repo_id else "no hub source"
            return f"{self.name}: {where}; {self.revision_note or 'use --hr-dir'}"
        lr = "published LR" if self.lr is not None else "LR generated from HR"
        return f"{self.name}: {self.repo_id}@{self.revision[:12]}, {lr}"


@dataclass(frozen=True)
class ImagePair:
    """One benchmark image: ``hr`` (H x W x 3 uint8 RGB, cropped to a multiple of the scale)
    and ``lr`` (H/scale x W/scale x 3 uint8 RGB)."""

    name: str
    hr: np.ndarray
    lr: np.ndarray


@dataclass(frozen=True)
class DatasetSource:
    """Where the images of one evaluation come from (recorded in the results)."""

    name: str
    hr_dir: Path
    lr_dir: Path | None
    repo_id: str | None = None
    revision: str | None = None
    lr_generated: bool = False
    #: "hr"/"lr" -> {"filename", "sha256", "etag", "verified_by"} of the archives the images came from
    files: dict[str, dict[str, Any]] | None = None
    #: The scale the published LR images were made for (None: not known); a model of another
    #: scale is scored on LR made from HR instead.
    lr_scale: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "repo_id": self.repo_id,
            "revision": self.revision,
            "hr_dir": str(self.hr_dir),
            "lr_dir": None if self.lr_dir is None else str(self.lr_dir),
            "lr": "generated (MATLAB bicubic)" if self.lr_generated else "published",
            "files": self.files,
        }


# ---------------------------------------------------------------- registry


def load_registry(path: Path | None = None) -> dict[str, DatasetSpec]:
    """Dataset name -> spec, from ``path`` or the packaged ``datasets.json``."""
    text = (
        path.read_text(encoding="utf-8")
        if path
        else (resources.files("spsr_cli.eval") / "datasets.json").read_text(encoding="utf-8")
    )
    data = json.loads(text)
    return {raw["name"]: DatasetSpec.from_dict(raw) for raw in data["datasets"]}


def get_spec(name: str, registry: dict[str, DatasetSpec] | None = None) -> DatasetSpec:
    registry = registry if registry is not None else load_registry()
    lowered = {key.lower(): key for key in registry}
    if name.lower() not in lowered:
        raise UsageError(f"unknown dataset {name!r}; known: {', '.join(registry)} (or use --hr-dir for a local folder)")
    return registry[lowered[name.lower()]]


def datasets_home() -> Path:
    from spsr_cli.weights.manifest import spsr_home

    return spsr_home() / "datasets"


# ---------------------------------------------------------------- download + unpack


def prepare_dataset(
    spec: DatasetSpec,
    *,
    offline: bool | None = None,
    trust_unverified: bool = False,
    revision: str | None = None,
) -> DatasetSource:
    """Download (or find cached), verify and unpack ``spec``.

    ``revision`` (a 40-hex commit) overrides the registry's pin. Every archive is checked
    against the hub's content hash for that commit and the registry's sha256 where known;
    a file neither can verify is used only with ``trust_unverified``. LR comes from the
    published archive when it verifies, else it is generated from HR (MATLAB bicubic).
    Raises :class:`DatasetError` (no source), or the hub's errors with a hint to ``--hr-dir``.
    """
    from spsr_cli.weights.hub import fetch_hub_file_checked

    revision = revision or spec.revision
    if spec.repo_id is None or revision is None or spec.hr is None:
        hint = " or pin one with --revision COMMIT" if spec.repo_id and spec.hr else ""
        raise DatasetError(
            f"dataset {spec.name} has no pinned hub source in this version of spsr-cli"
            f" ({spec.revision_note or 'none known'}); download it yourself and run "
            f"`spsr eval --hr-dir DIR [--lr-dir DIR]`{hint}"
        )
    if not _COMMIT.fullmatch(revision):
        raise DatasetError(f"dataset {spec.name}: revision {revision!r} is not a 40-hex commit id")
    root = datasets_home() / spec.name / revision[:12]
    repo_id: str = spec.repo_id

    def fetch_and_unpack(part: ArchiveFile, sub: str) -> tuple[Path, dict[str, Any]]:
        dest = root / sub
        record = _read_record(dest)
        if (
            record is not None
            and record.get("filename") == part.filename
            and (part.sha256 is None or record.get("sha256") == part.sha256)
        ):
            return dest, record
        got = fetch_hub_file_checked(
            repo_id=repo_id,
            filename=part.filename,
            revision=revision,
            sha256=part.sha256,  # type: ignore[arg-type]
            repo_type=spec.repo_type,
            offline=offline,
            trust_unverified=trust_unverified,
        )
        record = {"filename": part.filename, **got.to_dict()}
        unpack_images(got.path, dest, record=record)
        return dest, record

    try:
        hr_dir, hr_record = fetch_and_unpack(spec.hr, "HR")
    except WeightsNotAvailableError as err:
        raise type(err)(f"{err}. To evaluate a local copy instead: spsr eval --hr-dir DIR [--lr-dir DIR]") from None
    files = {"hr": hr_record}
    lr_dir: Path | None = None
    if spec.lr is not None:
        try:
            lr_dir, files["lr"] = fetch_and_unpack(spec.lr, f"LR_x{spec.scale}")
        except WeightsNotAvailableError as err:  # missing or unverifiable; a corrupted download is an error
            log.warning("published LR of %s not used (%s); generating it from HR", spec.name, err)
    return DatasetSource(
        name=spec.name,
        hr_dir=hr_dir,
        lr_dir=lr_dir,
        repo_id=spec.repo_id,
        revision=revision,
        lr_generated=lr_dir is None,
        files=files,
        lr_scale=spec.scale if lr_dir is not None else None,
    )


def _read_record(dest: Path) -> dict[str, Any] | None:
    """The verification record of an unpacked archive (None: not unpacked, or unpacked by an older version)."""
    try:
        record = json.loads((dest / _COMPLETE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("sha256") else None


def _archive_images(archive: Path) -> Iterator[tuple[str, bytes]]:
    """(base name, bytes) of every regular image file in a tar/zip archive; links and folders are skipped."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir() and Path(info.filename).suffix.lower() in IMAGE_SUFFIXES:
                    yield Path(info.filename).name, zf.read(info)
        return
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:
            if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                handle = tf.extractfile(member)
                if handle is not None:
                    yield Path(member.name).name, handle.read()


def unpack_images(archive: Path, dest: Path, *, record: dict[str, Any] | None = None) -> Path:
    """Unpack the images of ``archive`` flat into ``dest`` (atomically: a temp folder, then rename).

    Only regular image files are written, under their base names, so no archive path can
    escape ``dest``. ``record`` (the archive's verified hashes) is kept in ``dest/.complete``.
    Raises :class:`DatasetError` for an unreadable archive, no images, or two images with the same name.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        seen: set[str] = set()
        for name, data in _archive_images(archive):
            if name.startswith("."):
                continue  # macOS resource forks and other hidden files
            if name in seen:
                raise DatasetError(f"{archive.name} holds two images named {name!r}")
            seen.add(name)
            (tmp / name).write_bytes(data)
        if not seen:
            raise DatasetError(f"{archive.name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        (tmp / _COMPLETE).write_text(json.dumps(record or {}, indent=1) + "\n", encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise DatasetError(f"cannot unpack {archive}: {err}; delete it from the cache and retry") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


# ---------------------------------------------------------------- pairing + loading

_SUFFIX_TOKENS = re.compile(r"(?:[_\-.]?(?:hr|lr|x\d|srf_?\d|bicubic|gt))+$", re.IGNORECASE)


def pair_key(stem: str) -> str:
    """Name used to pair HR and LR files: ``baby_HR`` / ``baby_LR_x4`` / ``img_001_SRF_4_LR`` -> same key."""
    key = _SUFFIX_TOKENS.sub("", stem)
    return (key or stem).lower()


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside ``folder`` (by suffix, :data:`IMAGE_SUFFIXES`), sorted by name.

    The one listing evaluation and training share; ``folder`` must exist (callers say which option named it).
    """
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` sorted by name; two files with one name and different extensions are refused."""
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    files = image_files(folder)
    if not files:
        raise UsageError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    by_stem: dict[str, list[str]] = {}
    for p in files:
        by_stem.setdefault(p.stem, []).append(p.name)
    clashes = [" and ".join(names) for names in by_stem.values() if len(names) > 1]
    if clashes:
        raise UsageError(
            f"{folder} holds images that differ only in extension ({'; '.join(clashes[:3])}): each would be "
            "scored under the same name; keep one of each"
        )
    return files


def pair_files(
    hr_dir: Path,
    lr_dir: Path | None,
    *,
    unpaired: list[tuple[str, str]] | None = None,
) -> list[tuple[str, Path, Path | None]]:
    """(name, HR path, LR path or None) sorted by name; every HR needs exactly one LR when ``lr_dir`` is given.

    An HR image without its LR is a usage error, or with ``unpaired`` (a list) is appended
    there as (name, reason) and left out, so that the caller reports it as a failed image.
    """
    hr_files = list_images(hr_dir)
    if lr_dir is None:
        return [(p.stem, p, None) for p in hr_files]
    lr_by_stem = {p.stem: p for p in list_images(lr_dir)}
    lr_by_key: dict[str, list[Path]] = {}
    for p in lr_by_stem.values():
        lr_by_key.setdefault(pair_key(p.stem), []).append(p)
    pairs, missing = [], []
    for hr in hr_files:
        match = lr_by_stem.get(hr.stem)
        if match is None:
            candidates = lr_by_key.get(pair_key(hr.stem), [])
            match = candidates[0] if len(candidates) == 1 else None
        if match is None:
            missing.append(hr.name)
            if unpaired is not None:
                unpaired.append((hr.stem, f"no LR image in {lr_dir} matches {hr.name}"))
        else:
            pairs.append((pair_key(hr.stem) if match.stem != hr.stem else hr.stem, hr, match))
    if missing and unpaired is None:
        raise UsageError(
            f"no LR image in {lr_dir} matches {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "")
        )
    return pairs


def read_rgb(path: Path) -> np.ndarray:
    """An image file -> H x W x 3 uint8 RGB, as the benchmark toolboxes read it.

    Grey is replicated to three channels; alpha is dropped. 16-bit files (grey or colour) are
    brought to 8 bits by rounding ``value * 255 / 65535`` (not clipped or truncated). Raises
    :class:`ImageError` naming the file when it cannot be read.
    """
    from spsr_cli.io.images import read_image

    image = read_image(path)  # H x W x 3 float32 in [0, 1]; 16-bit sources keep their precision
    return to_uint8(image.rgb.astype(np.float64))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """The one float -> uint8 quantiser of evaluation and training: values in [0, 1] (any shape, float)
    -> ``round(255 x)`` as uint8 of the same shape, halves rounded up like MATLAB's ``im2uint8``;
    values outside [0, 1] are clipped. Computed in the input's float precision."""
    return np.floor(np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file as :func:`read_rgb` returns it (EXIF orientation applied),
    without decoding the pixels. Raises :class:`ImageError` naming the file when it cannot be read."""
    import struct

    import PIL.Image

    try:
        with PIL.Image.open(path) as im:
            im.verify()  # header and (PNG) checksums
        with PIL.Image.open(path) as im:
            width, height = im.size
            try:
                orientation = im.getexif().get(_ORIENTATION_TAG, 1)
            except (ValueError, SyntaxError, struct.error, KeyError):
                orientation = 1  # read_rgb ignores an unreadable orientation too
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, PIL.Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot read {path}: {exc or type(exc).__name__}") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def is_scale_pair(hr_size: tuple[int, int], lr_size: tuple[int, int], scale: int) -> bool:
    """Whether an LR image of ``lr_size`` is the x``scale`` LR of an HR image of ``hr_size`` (both (w, h) or
    both (h, w)): HR may have up to ``scale - 1`` more pixels per side, which :func:`load_pair` crops away."""
    return all(hr // scale == lr for hr, lr in zip(hr_size, lr_size))


def load_pair(
    name: str, hr_path: Path, lr_path: Path | None, scale: int, *, degradation: Degradation | None = None
) -> ImagePair:
    """Read one pair; HR is cropped to a multiple of ``scale`` (and to scale x LR); a missing LR is generated
    (MATLAB bicubic, or ``degradation``'s pipeline seeded by ``name``; ``lr_path`` must then be None)."""
    from spsr_cli.io.imresize import bicubic_downscale, crop_to_multiple  # torch: imported when needed

    full = read_rgb(hr_path)
    hr = crop_to_multiple(full, scale)
    if degradation is not None:
        if lr_path is not None:
            raise ValueError(f"{name}: an LR file and a degradation were both given; the degradation makes the LR")
        return ImagePair(name=name, hr=hr, lr=degradation.apply(hr, name, scale))
    if lr_path is None:
        return ImagePair(name=name, hr=hr, lr=bicubic_downscale(hr, scale))
    lr = read_rgb(lr_path)
    h, w = lr.shape[0] * scale, lr.shape[1] * scale
    if not is_scale_pair(full.shape[:2], lr.shape[:2], scale):
        raise ImageError(
            f"{hr_path} is {full.shape[1]}x{full.shape[0]} but {lr_path} is {lr.shape[1]}x{lr.shape[0]}: "
            f"not a x{scale} pair (HR should be {w}x{h}, up to {scale - 1} more pixels per side)"
        )
    return ImagePair(name=name, hr=np.ascontiguousarray(hr[:h, :w]), lr=lr)


def local_source(hr_dir: Path, lr_dir: Path | None) -> DatasetSource:
    """Local folders; the set is named after the HR folder (or its parent if that is called ``HR``)."""
    name = hr_dir.resolve().parent.name if hr_dir.name.lower() in ("hr", "gt") else hr_dir.name
    return DatasetSource(name=name, hr_dir=hr_dir, lr_dir=lr_dir, lr_generated=lr_dir is None)


__all__ = [
    "DatasetError",
    "DatasetSource",
    "DatasetSpec",
    "ImagePair",
    "datasets_home",
    "get_spec",
    "image_files",
    "image_size",
    "is_scale_pair",
    "load_pair",
    "load_registry",
    "local_source",
    "pair_files",
    "pair_key",
    "prepare_dataset",
    "read_rgb",
    "to_uint8",
    "unpack_images",
]

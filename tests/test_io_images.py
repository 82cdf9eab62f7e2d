"""Tests for spsr_cli.io.images: every image is generated (seeded) in tmp_path."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageCms
import PIL.ImageOps
import pytest

from spsr_cli.errors import ImageError
from spsr_cli.io import images
from spsr_cli.io.images import (
    SUPPORTED_EXTENSIONS,
    Image,
    format_for_extension,
    is_image_path,
    read_image,
    resize_plane,
    write_image,
)

ORIENTATION = 0x0112


# ----------------------------------------------------------------------------- helpers


def smooth_rgb(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """H x W x 3 float32 in [0, 1]: smooth gradients (compress well, survive JPEG) plus fine noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / (width - 1), y / (height - 1), 0.5 + 0.4 * np.sin(x / 5 + y / 7)], axis=2)
    return np.clip(rgb + rng.normal(0, 0.01, rgb.shape), 0, 1).astype(np.float32)


def srgb_icc() -> bytes:
    return PIL.ImageCms.ImageCmsProfile(PIL.ImageCms.createProfile("sRGB")).tobytes()


def u16(arr: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(arr, np.float64) * 65535).astype(np.uint16)


def u8(arr: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(arr, np.float64) * 255).astype(np.uint8)


def random_u16(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """uint16 values with non-zero low bytes, so 8-bit precision loss would be visible."""
    values = np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)
    return values | 1


def paeth_png16(data: np.ndarray) -> bytes:
    """A 16-bit PNG written by hand (Paeth filter on every row), independent of the module."""
    height, width, channels = data.shape
    rows = data.astype(">u2").reshape(height, -1).view(np.uint8).astype(np.int16)
    bpp = 2 * channels
    left = np.zeros_like(rows)
    left[:, bpp:] = rows[:, :-bpp]
    up = np.zeros_like(rows)
    up[1:] = rows[:-1]
    upleft = np.zeros_like(rows)
    upleft[1:, bpp:] = rows[:-1, :-bpp]
    p = left + up - upleft
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    filtered = ((rows - pred) % 256).astype(np.uint8)
    raw = np.concatenate([np.full((height, 1), 4, np.uint8), filtered], axis=1).tobytes()
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def raw_tiff16(data: np.ndarray, *, big_endian: bool) -> bytes:
    """An uncompressed 16-bit RGB(A) TIFF written by hand, independent of the module."""
    height, width, channels = data.shape
    order = ">" if big_endian else "<"
    pixels = data.astype(order + "u2").tobytes()
    bits_offset, data_offset = 8, 16
    ifd_offset = data_offset + len(pixels)

    def short(tag: int, value: int) -> bytes:
        return struct.pack(order + "HHIHH", tag, 3, 1, value, 0)

    def long(tag: int, value: int) -> bytes:
        return struct.pack(order + "HHII", tag, 4, 1, value)

    entries = [
        long(256, width),
        long(257, height),
        struct.pack(order + "HHII", 258, 3, channels, bits_offset),
        short(259, 1),
        short(262, 2),
        long(273, data_offset),
        short(277, channels),
        long(278, height),
        long(279, len(pixels)),
        short(284, 1),
    ] + ([short(338, 2)] if channels == 4 else [])
    header = (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(order + "I", ifd_offset)
    bits = struct.pack(order + "4H", *([16] * channels + [0] * (4 - channels)))
    ifd = struct.pack(order + "H", len(entries)) + b"".join(entries) + struct.pack(order + "I", 0)
    return header + bits + pixels + ifd


# ----------------------------------------------------------------------------- names and formats


def test_supported_extensions_and_is_image_path() -> None:
    assert set(SUPPORTED_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"}
    assert is_image_path(Path("a/photo.JPG"))
    assert is_image_path(Path("scan.tiff"))
    assert not is_image_path(Path("notes.txt"))
    assert not is_image_path(Path("folder"))


@pytest.mark.parametrize(
    ("ext", "fmt"),
    [
        (".png", "PNG"),
        (".jpg", "JPEG"),
        (".JPEG", "JPEG"),
        (".webp", "WEBP"),
        (".tif", "TIFF"),
        ("tiff", "TIFF"),
        (".bmp", "BMP"),
    ],
)
def test_format_for_extension(ext: str, fmt: str) -> None:
    assert format_for_extension(ext) == fmt


def test_format_for_unknown_extension_names_it_and_lists_supported() -> None:
    with pytest.raises(ImageError, match=r"'\.gif'.*\.png.*\.webp"):
        format_for_extension(".gif")


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("ext", "fmt", "tolerance"),
    [
        (".png", "PNG", 0.5 / 255),
        (".bmp", "BMP", 0.5 / 255),
        (".tif", "TIFF", 0.5 / 255),
        (".jpg", "JPEG", 0.1),
        (".webp", "WEBP", 0.1),
    ],
)
def test_round_trip_per_format(tmp_path: Path, ext: str, fmt: str, tolerance: float) -> None:
    rgb = smooth_rgb()
    path = tmp_path / f"out{ext}"
    write_image(path, Image(rgb=rgb))
    with PIL.Image.open(path) as written:
        assert (written.format, written.mode, written.size) == (fmt, "RGB", (32, 24))
    back = read_image(path)
    assert back.rgb.dtype == np.float32 and back.rgb.shape == (24, 32, 3)
    assert (back.bit_depth, back.grayscale, back.alpha) == (8, False, None)
    assert np.abs(back.rgb - rgb).max() <= tolerance + 1e-6
    if fmt in ("PNG", "BMP", "TIFF"):  # lossless: exactly the rounded 8-bit values
        np.testing.assert_array_equal(u8(back.rgb), u8(rgb))


def pillow_input(mode: str, seed: int) -> tuple[PIL.Image.Image, dict]:
    """A 16 x 12 Pillow image in ``mode`` and the save options that keep it."""
    rng = np.random.default_rng(seed)
    if mode == "1":
        return PIL.Image.fromarray(rng.random((12, 16)) > 0.5), {}
    if mode == "I;16":
        return PIL.Image.fromarray(random_u16((12, 16), seed)), {}
    if mode in ("P", "P+transparency"):
        image = PIL.Image.frombytes("P", (16, 12), rng.integers(0, 16, 12 * 16, dtype=np.uint8).tobytes())
        image.putpalette(rng.integers(0, 256, 16 * 3, dtype=np.uint8).tobytes())
        return image, ({"transparency": 3} if mode == "P+transparency" else {})
    pixels = rng.integers(0, 256, 12 * 16 * len(mode), dtype=np.uint8).tobytes()
    return PIL.Image.frombytes(mode, (16, 12), pixels), {}


@pytest.mark.parametrize(
    ("mode", "grayscale", "bit_depth", "has_alpha"),
    [
        ("1", True, 8, False),
        ("L", True, 8, False),
        ("LA", True, 8, True),
        ("I;16", True, 16, False),
        ("P", False, 8, False),
        ("P+transparency", False, 8, True),
        ("RGB", False, 8, False),
        ("RGBA", False, 8, True),
        ("CMYK", False, 8, False),
    ],
)
def test_read_input_modes(tmp_path: Path, mode: str, grayscale: bool, bit_depth: int, has_alpha: bool) -> None:
    source, options = pillow_input(mode, seed=len(mode))
    path = tmp_path / ("in.tif" if mode == "CMYK" else "in.png")
    source.save(path, **options)
    with PIL.Image.open(path) as stored:
        assert stored.mode == mode.split("+")[0]
    back = read_image(path)
    assert (back.grayscale, back.bit_depth, back.alpha is not None) == (grayscale, bit_depth, has_alpha)
    assert back.rgb.shape == (12, 16, 3) and back.rgb.dtype == np.float32
    if mode == "I;16":
        np.testing.assert_array_equal(u16(back.rgb[..., 0]), np.asarray(source))
    elif grayscale:
        np.testing.assert_array_equal(u8(back.rgb[..., 0]), np.asarray(source.convert("L")))
    else:
        np.testing.assert_array_equal(u8(back.rgb), np.asarray(source.convert("RGB")))
    if grayscale:
        np.testing.assert_array_equal(back.rgb[..., 0], back.rgb[..., 2])
    if mode == "P+transparency":
        np.testing.assert_array_equal(back.alpha, (np.asarray(source) != 3).astype(np.float32))
    elif has_alpha:
        np.testing.assert_array_equal(u8(back.alpha), np.asarray(source)[..., -1])


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_gray_survives_round_trip(tmp_path: Path, ext: str) -> None:
    values = random_u16((10, 14), seed=1)
    source = tmp_path / f"in{ext}"
    PIL.Image.fromarray(values).save(source)
    image = read_image(source)
    assert (image.bit_depth, image.grayscale) == (16, True)
    np.testing.assert_array_equal(u16(image.rgb[..., 1]), values)

    out = tmp_path / f"out{ext}"
    write_image(out, image)
    with PIL.Image.open(out) as written:  # Pillow reads 16-bit grayscale natively
        assert written.mode.startswith("I;16")
        np.testing.assert_array_equal(np.asarray(written), values)


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_survives_round_trip(tmp_path: Path, ext: str, channels: int) -> None:
    values = random_u16((9, 13, channels), seed=channels)
    image = Image(
        rgb=values[..., :3] / 65535.0,
        alpha=values[..., 3] / 65535.0 if channels == 4 else None,
        bit_depth=16,
        icc_profile=srgb_icc(),
    )
    out = tmp_path / f"out{ext}"
    write_image(out, image)
    with PIL.Image.open(out) as written:  # Pillow itself only sees the high bytes
        assert written.mode == ("RGBA" if channels == 4 else "RGB")
        np.testing.assert_array_equal(np.asarray(written), (values >> 8).astype(np.uint8))
        assert written.info.get("icc_profile") == image.icc_profile
    back = read_image(out)
    assert (back.bit_depth, back.grayscale) == (16, False)
    np.testing.assert_array_equal(u16(back.rgb), values[..., :3])
    if channels == 4:
        np.testing.assert_array_equal(u16(back.alpha), values[..., 3])
    assert back.icc_profile == image.icc_profile


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_png_from_another_encoder_is_read_losslessly(tmp_path: Path, channels: int) -> None:
    values = random_u16((7, 11, channels), seed=10 + channels)
    path = tmp_path / "paeth.png"
    path.write_bytes(paeth_png16(values))
    back = read_image(path)
    assert back.bit_depth == 16
    if channels == 2:
        assert back.grayscale
        np.testing.assert_array_equal(u16(back.rgb), np.repeat(values[..., :1], 3, axis=2))
        np.testing.assert_array_equal(u16(back.alpha), values[..., 1])
    else:
        np.testing.assert_array_equal(u16(back.rgb), values[..., :3])
        assert (back.alpha is not None) == (channels == 4)


@pytest.mark.parametrize("big_endian", [False, True])
def test_16bit_tiff_from_another_encoder_is_read_losslessly(tmp_path: Path, big_endian: bool) -> None:
    values = random_u16((6, 9, 3), seed=20)
    path = tmp_path / "raw.tif"
    path.write_bytes(raw_tiff16(values, big_endian=big_endian))
    back = read_image(path)
    assert back.bit_depth == 16
    np.testing.assert_array_equal(u16(back.rgb), values)


def test_16bit_gray_with_alpha_round_trip(tmp_path: Path) -> None:
    gray, alpha = random_u16((8, 10), seed=30), random_u16((8, 10), seed=31)
    rgb = np.repeat(gray[..., None] / 65535.0, 3, axis=2)
    image = Image(rgb=rgb, alpha=alpha / 65535.0, bit_depth=16, grayscale=True)
    for name in ("out.png", "out.tif"):
        write_image(tmp_path / name, image)
        back = read_image(tmp_path / name)
        np.testing.assert_array_equal(u16(back.rgb[..., 0]), gray)
        np.testing.assert_array_equal(u16(back.alpha), alpha)
        assert back.bit_depth == 16
    assert read_image(tmp_path / "out.png").grayscale


@pytest.mark.parametrize("ext", [".jpg", ".webp", ".bmp"])
def test_16bit_source_written_as_8bit_where_format_has_no_16bit(tmp_path: Path, ext: str) -> None:
    rgb = smooth_rgb(seed=3)
    write_image(tmp_path / f"out{ext}", Image(rgb=rgb, bit_depth=16))
    back = read_image(tmp_path / f"out{ext}")
    assert back.bit_depth == 8
    assert np.abs(back.rgb - rgb).mean() < 0.02


# ----------------------------------------------------------------------------- orientation


def blocks_image() -> np.ndarray:
    """16 x 32 RGB, uint8: red left half, blue right half, green top-left quarter."""
    arr = np.zeros((16, 32, 3), np.uint8)
    arr[:, :16] = (255, 0, 0)
    arr[:, 16:] = (0, 0, 255)
    arr[:8, :16] = (0, 255, 0)
    return arr


@pytest.mark.parametrize(("orientation", "turns"), [(6, -1), (8, 1), (3, 2)])
def test_exif_orientation_applied_on_read(tmp_path: Path, orientation: int, turns: int) -> None:
    exif = PIL.Image.Exif()
    exif[ORIENTATION] = orientation
    path = tmp_path / "camera.jpg"
    PIL.Image.fromarray(blocks_image()).save(path, quality=95, exif=exif.tobytes())
    back = read_image(path)
    expected = np.rot90(blocks_image(), turns)  # np.rot90: k > 0 is counter-clockwise
    assert back.rgb.shape == expected.shape
    assert np.abs(back.rgb - expected / 255.0).mean() < 0.03
    assert back.exif is not None
    reloaded = PIL.Image.Exif()
    reloaded.load(back.exif)
    assert ORIENTATION not in reloaded

    out = tmp_path / "out.jpg"  # written upright, without the tag: not rotated twice
    write_image(out, back)
    assert read_image(out).rgb.shape == expected.shape


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_array_matches_pillow(orientation: int) -> None:
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4) * 10
    exif = PIL.Image.Exif()
    exif[ORIENTATION] = orientation
    buffer = io.BytesIO()
    PIL.Image.fromarray(arr).save(buffer, format="PNG", exif=exif.tobytes())
    with PIL.Image.open(buffer) as opened:
        expected = np.asarray(PIL.ImageOps.exif_transpose(opened))
    np.testing.assert_array_equal(images.orient_array(arr, orientation), expected)


def test_exif_orientation_applied_to_16bit_colour(tmp_path: Path) -> None:
    values = random_u16((4, 6, 3), seed=40)
    exif = PIL.Image.Exif()
    exif[ORIENTATION] = 6
    path = tmp_path / "rotated16.png"
    write_image(path, Image(rgb=values / 65535.0, bit_depth=16, exif=exif.tobytes()))
    back = read_image(path)
    np.testing.assert_array_equal(u16(back.rgb), np.rot90(values, -1))


# ----------------------------------------------------------------------------- ICC profile


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif"])
def test_icc_profile_carried_to_output(tmp_path: Path, ext: str) -> None:
    icc = srgb_icc()
    source = tmp_path / "in.png"
    PIL.Image.fromarray(u8(smooth_rgb())).save(source, icc_profile=icc)
    image = read_image(source)
    assert image.icc_profile == icc
    out = tmp_path / f"out{ext}"
    write_image(out, image)
    with PIL.Image.open(out) as written:
        assert written.info.get("icc_profile") == icc
    assert read_image(out).icc_profile == icc


def test_icc_profile_of_wrong_colour_space_is_not_embedded(tmp_path: Path) -> None:
    gray = Image(rgb=np.full((4, 4, 3), 0.5, np.float32), grayscale=True, icc_profile=srgb_icc())
    write_image(tmp_path / "gray.png", gray)  # an RGB profile would make the grayscale PNG invalid
    with PIL.Image.open(tmp_path / "gray.png") as written:
        assert written.mode == "L" and "icc_profile" not in written.info


# ----------------------------------------------------------------------------- alpha and resizing


def test_alpha_resized_separately_and_reattached(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rgba = np.concatenate([u8(smooth_rgb(12, 16)), rng.integers(0, 256, (12, 16, 1), dtype=np.uint8)], axis=2)
    source = tmp_path / "in.png"
    PIL.Image.fromarray(rgba).save(source)
    image = read_image(source)
    assert image.alpha is not None

    big_alpha = resize_plane(image.alpha, (24, 32))
    big = Image(rgb=resize_plane(image.rgb, (24, 32)), alpha=big_alpha, icc_profile=image.icc_profile)
    out = tmp_path / "out.png"
    write_image(out, big)
    with PIL.Image.open(out) as written:
        assert written.mode == "RGBA" and written.size == (32, 24)
        np.testing.assert_array_equal(np.asarray(written)[..., 3], u8(big_alpha))


def test_resize_plane_contract() -> None:
    rng = np.random.default_rng(6)
    plane = rng.random((10, 8)).astype(np.float32)
    up = resize_plane(plane, (40, 32))
    assert up.shape == (40, 32) and up.dtype == np.float32
    assert up.min() >= 0.0 and up.max() <= 1.0
    assert abs(float(up.mean()) - float(plane.mean())) < 0.02
    np.testing.assert_allclose(resize_plane(np.full((5, 7), 0.25, np.float32), (9, 3)), 0.25, atol=1e-5)
    stack = resize_plane(rng.random((6, 6, 3)).astype(np.float32), (12, 18))
    assert stack.shape == (12, 18, 3)
    hard_edge = np.zeros((8, 8), np.float32)
    hard_edge[:, 4:] = 1.0  # Lanczos overshoots here; the result is clipped
    edge_up = resize_plane(hard_edge, (32, 32))
    assert edge_up.min() == 0.0 and edge_up.max() == 1.0
    with pytest.raises(ImageError, match="at least 1 x 1"):
        resize_plane(plane, (0, 4))


@pytest.mark.parametrize("ext", [".jpg", ".bmp"])
def test_alpha_composited_on_white_where_format_has_none(tmp_path: Path, ext: str) -> None:
    rgb = np.zeros((8, 8, 3), np.float32)
    alpha = np.ones((8, 8), np.float32)
    alpha[:, :4] = 0.0  # transparent black left half -> white
    write_image(tmp_path / f"out{ext}", Image(rgb=rgb, alpha=alpha))
    back = read_image(tmp_path / f"out{ext}")
    assert back.alpha is None
    assert back.rgb[:, :3].mean() > 0.95 and back.rgb[:, 5:].mean() < 0.05


@pytest.mark.parametrize(("ext", "mode"), [(".png", "LA"), (".tif", "LA"), (".webp", "RGBA")])
def test_alpha_kept_where_format_has_it(tmp_path: Path, ext: str, mode: str) -> None:
    alpha = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    image = Image(rgb=np.full((8, 8, 3), 0.5, np.float32), alpha=alpha, grayscale=True)
    write_image(tmp_path / f"out{ext}", image)
    with PIL.Image.open(tmp_path / f"out{ext}") as written:
        assert written.mode == mode
    np.testing.assert_allclose(read_image(tmp_path / f"out{ext}").alpha, alpha, atol=3 / 255)


def test_grayscale_written_as_grayscale(tmp_path: Path) -> None:
    gray = smooth_rgb()[..., :1].repeat(3, axis=2)
    for ext in (".png", ".jpg", ".tif", ".bmp"):
        write_image(tmp_path / f"g{ext}", Image(rgb=gray, grayscale=True))
        with PIL.Image.open(tmp_path / f"g{ext}") as written:
            assert written.mode == "L", ext
        assert read_image(tmp_path / f"g{ext}").grayscale


# ----------------------------------------------------------------------------- format choice and quality


def test_format_from_extension_and_explicit_format(tmp_path: Path) -> None:
    image = Image(rgb=smooth_rgb())
    write_image(tmp_path / "a.tiff", image)
    write_image(tmp_path / "b.png", image, format="JPEG")
    write_image(tmp_path / "c.out", image, format=".webp")
    write_image(tmp_path / "d.img", image, format="tif")
    formats = {}
    for name in ("a.tiff", "b.png", "c.out", "d.img"):
        with PIL.Image.open(tmp_path / name) as written:
            formats[name] = written.format
    assert formats == {"a.tiff": "TIFF", "b.png": "JPEG", "c.out": "WEBP", "d.img": "TIFF"}
    with pytest.raises(ImageError, match="'.gif'"):
        write_image(tmp_path / "e.gif", image)
    with pytest.raises(ImageError, match="'exr'"):
        write_image(tmp_path / "e.png", image, format="exr")
    assert not (tmp_path / "e.gif").exists() and not (tmp_path / "e.png").exists()


@pytest.mark.parametrize("ext", [".jpg", ".webp"])
def test_quality_changes_file_size(tmp_path: Path, ext: str) -> None:
    image = Image(rgb=smooth_rgb(48, 64, seed=8))
    write_image(tmp_path / f"low{ext}", image, quality=20)
    write_image(tmp_path / f"high{ext}", image, quality=95)
    assert (tmp_path / f"low{ext}").stat().st_size < (tmp_path / f"high{ext}").stat().st_size


def test_quality_out_of_range_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="quality.*101"):
        write_image(tmp_path / "x.jpg", Image(rgb=smooth_rgb()), quality=101)


def test_image_contract_is_checked() -> None:
    with pytest.raises(ImageError, match="H x W x 3"):
        Image(rgb=np.zeros((4, 4), np.float32))
    with pytest.raises(ImageError, match="alpha shape"):
        Image(rgb=np.zeros((4, 4, 3), np.float32), alpha=np.zeros((8, 8), np.float32))
    with pytest.raises(ImageError, match="bit_depth"):
        Image(rgb=np.zeros((4, 4, 3), np.float32), bit_depth=12)


def test_out_of_range_values_are_clipped_and_rounded(tmp_path: Path) -> None:
    rgb = np.array([[[-0.5, 0.5 / 255 + 1e-4, 2.0]]], np.float32)
    write_image(tmp_path / "c.png", Image(rgb=rgb))
    with PIL.Image.open(tmp_path / "c.png") as written:
        assert np.asarray(written)[0, 0].tolist() == [0, 1, 255]


# ----------------------------------------------------------------------------- atomic writes and errors


def test_atomic_write_leaves_only_the_output(tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    write_image(out, Image(rgb=smooth_rgb()))
    write_image(out, Image(rgb=smooth_rgb(seed=9)))  # replacing an existing file works too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("bit_depth", [8, 16])
def test_failed_write_keeps_existing_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ext: str, bit_depth: int
) -> None:
    out = tmp_path / f"precious{ext}"
    out.write_bytes(b"original content")

    def half_written(fh, *args, **kwargs) -> None:
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(PIL.Image.Image, "save", lambda self, fh, **kw: half_written(fh))
    monkeypatch.setattr(images, "_png16_bytes", lambda *a, **kw: (_ for _ in ()).throw(OSError("disk full")))
    monkeypatch.setattr(images, "_tiff16_bytes", lambda *a, **kw: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(ImageError, match=r"precious.*disk full"):
        write_image(out, Image(rgb=smooth_rgb(), bit_depth=bit_depth))
    assert out.read_bytes() == b"original content"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_write_creates_parent_folders(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out.png"
    write_image(out, Image(rgb=smooth_rgb()))
    assert read_image(out).rgb.shape == (24, 32, 3)


def test_corrupt_truncated_and_missing_files_raise_image_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(np.random.default_rng(11).integers(0, 256, 200, dtype=np.uint8).tobytes())
    with pytest.raises(ImageError, match="garbage.png"):
        read_image(garbage)

    whole = tmp_path / "whole.png"
    PIL.Image.fromarray(u8(smooth_rgb(64, 64))).save(whole)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ImageError, match="truncated.png"):
        read_image(truncated)

    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.jpg")


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_transparent_colour_becomes_alpha(tmp_path: Path, mode: str) -> None:
    source, _ = pillow_input(mode, seed=12)
    key = source.getpixel((0, 0))
    source.save(tmp_path / "trns.png", transparency=key)
    back = read_image(tmp_path / "trns.png")
    pixels = np.asarray(source)
    expected = (pixels != key) if mode == "L" else np.any(pixels != np.array(key, np.uint8), axis=2)
    assert back.alpha is not None and back.grayscale == (mode == "L")
    np.testing.assert_array_equal(back.alpha, expected.astype(np.float32))


def test_16bit_png_split_over_several_idat_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "_PNG_IDAT_CHUNK", 64)
    values = random_u16((16, 16, 3), seed=50)
    write_image(tmp_path / "split.png", Image(rgb=values / 65535.0, bit_depth=16))
    assert (tmp_path / "split.png").read_bytes().count(b"IDAT") > 2
    np.testing.assert_array_equal(u16(read_image(tmp_path / "split.png").rgb), values)


def test_cmyk_profile_is_not_kept_for_the_converted_rgb(tmp_path: Path) -> None:
    icc = srgb_icc()
    cmyk_icc = icc[:16] + b"CMYK" + icc[20:]  # header colour-space field: a CMYK profile
    source, _ = pillow_input("CMYK", seed=13)
    source.save(tmp_path / "cmyk.tif", icc_profile=cmyk_icc)
    with PIL.Image.open(tmp_path / "cmyk.tif") as stored:
        assert stored.info.get("icc_profile") == cmyk_icc
    back = read_image(tmp_path / "cmyk.tif")
    assert back.icc_profile is None
    np.testing.assert_array_equal(u8(back.rgb), np.asarray(source.convert("RGB")))


# ---------------------------------------------------------------- hardening (issue 10)


def test_the_jpeg_alpha_warning_names_the_file(tmp_path, caplog):
    from spsr_cli.io.images import Image, write_image

    image = Image(rgb=np.zeros((4, 4, 3), np.float32), alpha=np.full((4, 4), 0.5, np.float32))
    with caplog.at_level("WARNING", logger="spsr_cli"):
        write_image(tmp_path / "flat.jpg", image)
    assert str(tmp_path / "flat.jpg") in caplog.text and "transparency" in caplog.text


def test_an_animated_input_says_only_its_first_frame_is_used(tmp_path, caplog):
    from spsr_cli.io.images import is_image_path, read_image

    frames = [PIL.Image.new("RGB", (6, 5), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with caplog.at_level("WARNING", logger="spsr_cli"):
        image = read_image(tmp_path / "anim.gif")
    assert "anim.gif has 3 frames" in caplog.text and "only the first frame" in caplog.text
    assert image.rgb[0, 0, 0] > 0.9 and image.rgb[0, 0, 1] < 0.1  # the first (red) frame
    assert is_image_path(tmp_path / "anim.gif")


def _tiff_without_second_width(path: Path) -> None:
    """A 2-page TIFF whose second page lacks its ImageWidth tag (renamed to an unknown tag)."""
    pages = [PIL.Image.new("RGB", (6, 5), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:])
    data = bytearray(buffer.getvalue())
    end = "<" if data[:2] == b"II" else ">"
    first = struct.unpack(end + "I", data[4:8])[0]
    count = struct.unpack(end + "H", data[first : first + 2])[0]
    second = struct.unpack(end + "I", data[first + 2 + 12 * count : first + 6 + 12 * count])[0]
    for i in range(struct.unpack(end + "H", data[second : second + 2])[0]):
        entry = second + 2 + 12 * i
        if struct.unpack(end + "H", data[entry : entry + 2])[0] == 256:  # ImageWidth
            data[entry : entry + 2] = struct.pack(end + "H", 65000)
    path.write_bytes(bytes(data))


def test_a_damaged_later_page_or_frame_leaves_the_first_readable(tmp_path, caplog):
    """Issue 26, defect 2: Pillow's frame counting raised TypeError (TIFF) / IndexError (a cut GIF)."""
    from spsr_cli.io.images import read_image

    _tiff_without_second_width(tmp_path / "two.tif")
    with PIL.Image.open(tmp_path / "two.tif") as im, pytest.raises(TypeError):
        im.n_frames  # noqa: B018 - Pillow's own failure, which read_image must survive
    with caplog.at_level("WARNING", logger="spsr_cli"):
        image = read_image(tmp_path / "two.tif")
    assert image.size == (5, 6) and image.rgb[0, 0, 0] > 0.9
    assert "frames cannot be counted" in caplog.text

    rng = np.random.default_rng(0)
    frames = [PIL.Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)) for _ in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF")
    one = len(buffer.getvalue())
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    whole = buffer.getvalue()
    survived = 0
    for cut in range(one - 40, len(whole), 3):  # cuts inside the later frames
        (tmp_path / "cut.gif").write_bytes(whole[:cut])
        try:
            survived += read_image(tmp_path / "cut.gif").size == (24, 24)
        except ImageError:
            pass  # a cut inside the first frame: a clear error is right
    assert survived > 10


def test_temporary_files_finds_only_our_naming(tmp_path):
    from spsr_cli.io.images import temporary_files

    ours = tmp_path / ".a_x4.png.k2j_9xq0.tmp"
    for name in (ours.name, ".a_x4.png.tmp", "a_x4.png", ".b_x4.png.abcdefgh.tmp", ".a_x4.png.abcdefgh.tmp.keep"):
        (tmp_path / name).write_bytes(b"")
    assert temporary_files(tmp_path / "a_x4.png") == [ours]


@pytest.mark.parametrize(
    "ext, gray, alpha, depth",
    [
        ("png", False, True, 8),
        ("jpg", False, True, 8),
        ("png", True, False, 8),
        ("tif", True, True, 8),
        ("png", False, True, 16),
        ("tif", True, False, 16),
        ("bmp", False, False, 16),
    ],
)
def test_quantised_samples_write_the_same_pixels_as_floats(tmp_path, ext, gray, alpha, depth):
    """The engine hands write_image uint8/uint16 samples; the file must be what floats give."""
    rng = np.random.default_rng(3)
    rgb = rng.random((9, 11, 3), dtype=np.float32)
    a = rng.random((9, 11), dtype=np.float32) if alpha else None
    dtype, peak = (np.uint16, 65535) if depth == 16 else (np.uint8, 255)
    q = lambda x: np.rint(x * peak).astype(dtype)  # noqa: E731
    as_float = Image(
        rgb=q(rgb) / np.float32(peak),
        alpha=None if a is None else q(a) / np.float32(peak),
        bit_depth=depth,
        grayscale=gray,
    )
    quantised = Image(rgb=q(rgb), alpha=None if a is None else q(a), bit_depth=depth, grayscale=gray)
    write_image(tmp_path / f"f.{ext}", as_float)
    write_image(tmp_path / f"q.{ext}", quantised)
    f, g = read_image(tmp_path / f"f.{ext}"), read_image(tmp_path / f"q.{ext}")
    assert np.array_equal(f.rgb, g.rgb) and (f.alpha is None) == (g.alpha is None)
    assert f.alpha is None or np.array_equal(f.alpha, g.alpha)


def test_a_16bit_tiff_tifffile_cannot_decode_falls_back_to_8_bits_and_says_so(tmp_path, monkeypatch, caplog):
    values = random_u16((6, 9, 3), seed=21)
    path = tmp_path / "lzw.tif"
    path.write_bytes(raw_tiff16(values, big_endian=False))

    def missing_codec(*args, **kwargs):
        raise KeyError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(images.tifffile, "TiffFile", missing_codec)
    with caplog.at_level("WARNING", logger="spsr_cli"):
        back = read_image(path)
    assert back.bit_depth == 8 and "8 bits per channel" in caplog.text and "pip install imagecodecs" in caplog.text
    np.testing.assert_array_equal(u8(back.rgb), (values >> 8).astype(np.uint8))


# ---------------------------------------------------------------- issue 18: the probe's last bad inputs


def test_a_legal_long_output_name_is_written(tmp_path: Path) -> None:
    target = tmp_path / ("n" * 239 + ".png")  # 243 characters: legal, but ".NAME.XXXXXXXX.tmp" would not be
    write_image(target, Image(rgb=np.full((4, 5, 3), 0.5, np.float32)))
    assert PIL.Image.open(target).size == (5, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    assert images.temporary_files(target) == []


def test_a_fifo_is_not_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ImageError, match="not a regular file"):
        read_image(tmp_path / "pipe.png")
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_image_size_reads_the_header_only(tmp_path: Path) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path = tmp_path / "big.png"  # claims 12000 x 9000 pixels and holds almost nothing
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 9000, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")
    )
    assert images.image_size(path) == (9000, 12000)


def test_pillows_bomb_warning_becomes_our_message(tmp_path: Path, monkeypatch, caplog) -> None:
    import warnings

    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 100)
    PIL.Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "a.png")  # 144 pixels: a "bomb"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's own warning would fail here
        assert read_image(tmp_path / "a.png").size == (12, 12)
    assert "12 x 12 pixels" in caplog.text
    PIL.Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "b.png")  # past twice the limit
    with pytest.raises(ImageError, match="decompression bomb"):
        read_image(tmp_path / "b.png")

"""spsr_cli.eval.datasets: registry, download through a local hub, unpacking, pairing, LR generation."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hubserver import local_hub
from PIL import Image

from spsr_cli.errors import ChecksumMismatchError, ImageError, UsageError, WeightsNotAvailableError
from spsr_cli.eval.datasets import (
    ArchiveFile,
    DatasetError,
    DatasetSpec,
    datasets_home,
    get_spec,
    image_files,
    image_size,
    is_scale_pair,
    load_pair,
    load_registry,
    local_source,
    pair_files,
    pair_key,
    prepare_dataset,
    read_rgb,
    to_uint8,
    unpack_images,
)
from spsr_cli.io.imresize import bicubic_downscale
from spsr_cli.weights.hub import cached_hub_file

REV = "0123456789abcdef0123456789abcdef01234567"
REPO = "tester/TinySet"


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _images(n: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {f"img_{i:03d}": rng.integers(0, 256, (34, 41, 3), dtype=np.uint8) for i in range(1, n + 1)}


def _hub_files() -> tuple[dict, DatasetSpec]:
    hr = _images()
    hr_tar = _tar({f"TinySet_HR/{k}.png": _png(v) for k, v in hr.items()})
    lr_tar = _tar({f"TinySet_LR_x4/{k}.png": _png(bicubic_downscale(v, 4)) for k, v in hr.items()})
    files = {
        ("dataset", REPO, REV, "data/HR.tar.gz"): hr_tar,
        ("dataset", REPO, REV, "data/LR.tar.gz"): lr_tar,
    }
    spec = DatasetSpec(
        name="TinySet",
        repo_id=REPO,
        revision=REV,
        hr=ArchiveFile("data/HR.tar.gz", hashlib.sha256(hr_tar).hexdigest()),
        lr=ArchiveFile("data/LR.tar.gz", hashlib.sha256(lr_tar).hexdigest()),
    )
    return files, spec


def test_packaged_registry_is_pinned_or_marked() -> None:
    registry = load_registry()
    assert {"Set5", "Set14", "BSD100", "Urban100", "Manga109", "General100", "DIV2K-val"} <= set(registry)
    for spec in registry.values():
        assert spec.scale == 4
        assert spec.revision is None or re.fullmatch(r"[0-9a-f]{40}", spec.revision)
        for part in (spec.hr, spec.lr):
            assert part is None or part.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", part.sha256)
    assert get_spec("set5").name == "Set5"
    with pytest.raises(UsageError, match="--hr-dir"):
        get_spec("Set99")


def test_download_unpack_and_cache_via_local_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    files, spec = _hub_files()
    with local_hub(files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        source = prepare_dataset(spec)
        assert source.revision == REV and not source.lr_generated
        assert sorted(p.name for p in source.hr_dir.glob("*.png")) == ["img_001.png", "img_002.png"]
        assert source.lr_dir is not None and len(list(source.lr_dir.glob("*.png"))) == 2
        asked = len(hub.requests)
        # a second run neither downloads nor unpacks again
        again = prepare_dataset(spec)
        assert again == source and len(hub.requests) == asked
    # and works offline from the cache with the server gone
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert prepare_dataset(spec, offline=True).hr_dir == source.hr_dir


def test_checksum_mismatch_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    files, spec = _hub_files()
    bad = DatasetSpec(name=spec.name, repo_id=REPO, revision=REV, hr=ArchiveFile("data/HR.tar.gz", "0" * 64), lr=None)
    with local_hub(files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        with pytest.raises(ChecksumMismatchError):
            prepare_dataset(bad)


def test_pinned_revision_verifies_files_without_a_sha256_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    """At a pinned commit the hub's etag is the LFS sha256: no --trust-unverified needed, and it is recorded."""
    files, spec = _hub_files()
    unpinned = DatasetSpec(
        name="T",
        repo_id=REPO,
        revision=REV,
        hr=ArchiveFile("data/HR.tar.gz", None),
        lr=ArchiveFile("data/LR.tar.gz", None),
    )
    with local_hub(files) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        source = prepare_dataset(unpinned)
    assert not source.lr_generated and source.lr_dir is not None
    hr_sha = hashlib.sha256(files[("dataset", REPO, REV, "data/HR.tar.gz")]).hexdigest()
    assert source.files is not None and source.files["hr"]["sha256"] == hr_sha
    assert source.files["hr"]["verified_by"] == ["hub-etag"] and source.to_dict()["files"]["lr"]["etag"]
    # recorded beside the unpacked images, so a later (offline) run reports the same provenance
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert prepare_dataset(unpinned, offline=True).files == source.files


def test_bytes_differing_from_the_hub_etag_are_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    files, spec = _hub_files()
    lr_key = ("dataset", REPO, REV, "data/LR.tar.gz")
    unpinned = DatasetSpec(
        name="T",
        repo_id=REPO,
        revision=REV,
        hr=ArchiveFile("data/HR.tar.gz", None),
        lr=ArchiveFile("data/LR.tar.gz", None),
    )
    broken_lr = {lr_key: bytes(len(files[lr_key]))}
    with local_hub(files, corrupt=broken_lr) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        with pytest.raises(ChecksumMismatchError, match="hub's .* deleted"):
            prepare_dataset(unpinned)  # a corrupted LR is an error, not silently replaced
    assert cached_hub_file(repo_id=REPO, filename="data/LR.tar.gz", revision=REV, repo_type="dataset") is None
    hr2_key = ("dataset", REPO, REV, "data/HR2.tar.gz")  # other bytes: not in the (content-addressed) cache yet
    hr2 = _tar({"x/a.png": _png(np.full((8, 8, 3), 7, np.uint8))})
    with local_hub({**files, hr2_key: hr2}, corrupt={hr2_key: bytes(len(hr2))}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        other = DatasetSpec(name="T2", repo_id=REPO, revision=REV, hr=ArchiveFile("data/HR2.tar.gz", None), lr=None)
        with pytest.raises(ChecksumMismatchError, match="hub's"):
            prepare_dataset(other)
    assert not list((datasets_home() / "T2").glob("*/HR/*.png"))  # nothing unpacked from the bad file


def test_missing_published_lr_falls_back_to_generating_it(monkeypatch: pytest.MonkeyPatch) -> None:
    files, spec = _hub_files()
    no_lr = {k: v for k, v in files.items() if k[3] != "data/LR.tar.gz"}
    with local_hub(no_lr) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        source = prepare_dataset(spec)
    assert source.lr_generated and source.lr_dir is None and "lr" not in (source.files or {})


def test_no_pinned_revision_names_the_alternatives() -> None:
    no_source = DatasetSpec(name="T3", repo_id=None, revision=None, hr=None, lr=None)
    with pytest.raises(DatasetError, match="--hr-dir"):
        prepare_dataset(no_source)
    unpinned_repo = DatasetSpec(name="T4", repo_id=REPO, revision=None, hr=ArchiveFile("a.zip", None), lr=None)
    with pytest.raises(DatasetError, match="--revision COMMIT"):
        prepare_dataset(unpinned_repo)
    with pytest.raises(DatasetError, match="40-hex"):
        prepare_dataset(unpinned_repo, revision="main")


def test_unreachable_hub_fails_at_once_and_names_local_folders(monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    """Issue 10, item 8: no huggingface_hub retry storm, and the message names --hr-dir/--lr-dir."""
    import huggingface_hub.utils._http as hf_http

    slept: list[float] = []
    monkeypatch.setattr(hf_http.time, "sleep", slept.append)
    _, spec = _hub_files()
    with pytest.raises(WeightsNotAvailableError, match=r"could not reach .* --hr-dir DIR \[--lr-dir DIR\]"):
        prepare_dataset(spec)  # HF_ENDPOINT is 127.0.0.1:9 in every test: nothing listens
    assert slept == [] and "Retrying" not in capfd.readouterr().err


def test_offline_without_cache_is_a_clear_error() -> None:
    _, spec = _hub_files()
    with pytest.raises(WeightsNotAvailableError, match="offline"):
        prepare_dataset(spec, offline=True)


def test_unpack_keeps_only_images_inside_dest(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    png = _png(np.zeros((8, 8, 3), np.uint8))
    archive.write_bytes(_tar({"../../escape.png": png, "dir/ok.png": png, "notes.txt": b"x", "._ok.png": b"junk"}))
    dest = unpack_images(archive, tmp_path / "out" / "HR")
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == ["escape.png", "ok.png"]
    assert not (tmp_path / "escape.png").exists()
    empty = tmp_path / "empty.tar.gz"
    empty.write_bytes(_tar({"a.txt": b"x"}))
    with pytest.raises(DatasetError, match="no images"):
        unpack_images(empty, tmp_path / "out2")


def test_pairing_by_name() -> None:
    assert pair_key("baby_HR") == pair_key("baby_LR_x4") == "baby"
    assert pair_key("img_001_SRF_4_HR") == pair_key("img_001_SRF_4_LR") == "img_001"
    assert pair_key("0801") == pair_key("0801x4") == "0801"


def test_pair_files_and_missing_lr(tmp_path: Path) -> None:
    hr_dir, lr_dir = tmp_path / "HR", tmp_path / "LR"
    hr_dir.mkdir()
    lr_dir.mkdir()
    img = np.zeros((8, 8, 3), np.uint8)
    for name in ("a_HR", "b_HR"):
        Image.fromarray(img).save(hr_dir / f"{name}.png")
    Image.fromarray(img[:2, :2]).save(lr_dir / "a_LR_x4.png")
    with pytest.raises(UsageError, match="b_HR.png"):
        pair_files(hr_dir, lr_dir)
    Image.fromarray(img[:2, :2]).save(lr_dir / "b_LR_x4.png")
    assert [name for name, _, _ in pair_files(hr_dir, lr_dir)] == ["a", "b"]
    assert [lr for _, _, lr in pair_files(hr_dir, None)] == [None, None]
    assert local_source(hr_dir, None).name == tmp_path.name  # a folder called HR takes its parent's name


def test_load_pair_crops_generates_and_checks_sizes(tmp_path: Path) -> None:
    hr = np.random.default_rng(3).integers(0, 256, (34, 41), dtype=np.uint8)  # grey, not a multiple of 4
    Image.fromarray(hr).save(tmp_path / "g.png")
    pair = load_pair("g", tmp_path / "g.png", None, 4)
    assert pair.hr.shape == (32, 40, 3) and pair.lr.shape == (8, 10, 3)
    np.testing.assert_array_equal(pair.hr[..., 0], pair.hr[..., 2])  # grey replicated to RGB
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "wrong.png")
    with pytest.raises(ImageError, match="not a x4 pair") as info:
        load_pair("g", tmp_path / "g.png", tmp_path / "wrong.png", 4)
    # both full paths, and the HR size before the crop to a multiple of 4
    assert str(tmp_path / "g.png") in str(info.value) and str(tmp_path / "wrong.png") in str(info.value)
    assert "41x34" in str(info.value)


def test_same_name_with_two_extensions_is_refused(tmp_path: Path) -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "baby.png")
    Image.fromarray(img).save(tmp_path / "baby.bmp")
    with pytest.raises(UsageError, match="baby.bmp and baby.png"):
        pair_files(tmp_path, None)


def test_read_rgb_rounds_16_bit_grey_and_colour(tmp_path: Path) -> None:
    """16-bit values v become round(v * 255 / 65535): not clipped to white, not truncated."""
    values = np.array([[0, 128, 129, 385, 32767], [32768, 65278, 65279, 65407, 65535]], dtype=np.uint16)
    expected = np.floor(values.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    Image.fromarray(values).save(tmp_path / "grey16.png")  # mode I;16
    grey = read_rgb(tmp_path / "grey16.png")
    assert grey.dtype == np.uint8 and grey.shape == (2, 5, 3)
    np.testing.assert_array_equal(grey[..., 0], expected)
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
    from spsr_cli.io.images import Image as SpsrImage
    from spsr_cli.io.images import write_image

    rgb16 = np.stack([values, values[::-1], 65535 - values], axis=-1)
    write_image(tmp_path / "rgb16.png", SpsrImage(rgb=(rgb16 / 65535.0).astype(np.float32), bit_depth=16))
    colour = read_rgb(tmp_path / "rgb16.png")
    np.testing.assert_array_equal(colour, np.floor(rgb16.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8))


def test_to_uint8_rounds_half_up_and_clips() -> None:
    x = np.array([-0.2, 0.0, 0.5 / 255, 1.49 / 255, 2.5 / 255, 1.0, 1.2])
    out = to_uint8(x)
    assert out.dtype == np.uint8 and out.tolist() == [0, 0, 1, 1, 3, 255, 255]  # 2.5 -> 3, not to even
    assert to_uint8(x.astype(np.float32)).tolist() == out.tolist()


def test_image_size_applies_the_exif_orientation_without_decoding(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(np.zeros((10, 30, 3), np.uint8)).save(tmp_path / "turned.png", exif=exif)
    Image.fromarray(np.zeros((10, 30, 3), np.uint8)).save(tmp_path / "plain.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert [p.name for p in image_files(tmp_path)] == ["broken.png", "plain.jpg", "turned.png"]
    assert image_size(tmp_path / "turned.png") == (10, 30) == read_rgb(tmp_path / "turned.png").shape[1::-1]
    assert image_size(tmp_path / "plain.jpg") == (30, 10)
    with pytest.raises(ImageError, match="broken.png"):
        image_size(tmp_path / "broken.png")


def test_an_lr_image_pairs_with_an_hr_up_to_scale_minus_one_pixels_larger() -> None:
    assert is_scale_pair((64, 48), (16, 12), 4) and is_scale_pair((67, 51), (16, 12), 4)
    assert not is_scale_pair((68, 48), (16, 12), 4) and not is_scale_pair((63, 48), (16, 12), 4)

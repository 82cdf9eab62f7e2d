"""Video files: recognising them, probing, colour conversion both ways, one frame for compare, no PyAV."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from spsr_cli.errors import UsageError, VideoError
from spsr_cli.io import video
from spsr_cli.io.video import INSTALL, is_video_file, muxer_for, sniff_container


def test_containers_are_recognised_by_their_bytes_not_their_names(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from videoclips import make_clip

    for name, expected in (("a.mp4", "mp4"), ("b.mkv", "matroska"), ("c.webm", "webm")):
        clip = make_clip(
            tmp_path / name,
            seconds=0.25,
            codec="libvpx-vp9" if expected == "webm" else "libx264",
            audio="libopus" if expected == "webm" else "aac",
        )
        renamed = clip.rename(tmp_path / f"{clip.stem}.bin")
        assert sniff_container(renamed) == expected and is_video_file(renamed)
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    assert sniff_container(tmp_path / "photo.png") is None and not is_video_file(tmp_path / "photo.png")
    (tmp_path / "broken.mp4").write_bytes(b"garbage")
    assert is_video_file(tmp_path / "broken.mp4")  # the name says video: reading it says what is wrong
    assert not is_video_file(tmp_path)
    assert muxer_for(Path("x.MKV")) == "matroska"
    with pytest.raises(UsageError, match=r"\.avi is not one of them"):
        muxer_for(Path("x.avi"))


def test_without_pyav_a_video_fails_with_the_install_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(16))
    assert is_video_file(tmp_path / "clip.mp4")  # recognised without PyAV
    with pytest.raises(VideoError, match="not installed: " + INSTALL.replace("[", r"\[").replace("]", r"\]")):
        video.probe(tmp_path / "clip.mp4")


def test_probe_reads_streams_rotation_and_colour(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from videoclips import FPS, make_clip

    info = video.probe(make_clip(tmp_path / "c.mp4", rotation=90))
    assert (info.width, info.height, info.frames, info.rotation) == (64, 48, 2 * FPS, 90)
    assert [(o.type, o.codec) for o in info.others] == [("audio", "aac")]
    assert info.colour.matrix == 5 and not info.colour.full_range  # untagged SD: BT.601, limited range
    with pytest.raises(VideoError, match="no video stream"):
        video.probe(make_clip(tmp_path / "a.mkv", video=False))
    (tmp_path / "bad.mkv").write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(200)))
    with pytest.raises(VideoError, match="bad.mkv: not a readable video"):
        video.probe(tmp_path / "bad.mkv")


@pytest.mark.parametrize("matrix, space", [(1, 1), (5, 6)])
def test_colours_survive_writing_and_reading_with_each_matrix(tmp_path: Path, matrix: int, space: int) -> None:
    """Flat saturated patches written lossless (crf 0) with one matrix and read back by their tags: a
    matrix mismatch between writer and reader would move them by 10 levels or more."""
    pytest.importorskip("av")
    from videoclips import make_clip

    source = video.probe(make_clip(tmp_path / "src.mp4", seconds=0.25, audio=None))
    info = dataclasses.replace(source, colour=dataclasses.replace(source.colour, matrix=matrix, space=space))
    colours = np.array([[230, 30, 30], [30, 200, 40], [20, 40, 220], [240, 240, 20]], np.uint8)
    frame = np.repeat(np.repeat(colours[None], 32, axis=0), 16, axis=1)  # 32 x 64: four 16-pixel patches
    writer = video.VideoWriter(
        tmp_path / "out.mkv", "matroska", info, None, size=(64, 32), encoding=video.Encoding("h264", 0, "medium")
    )
    writer.write_frame(frame, 0, 1)
    writer.close()
    back = video.probe(tmp_path / "out.mkv")
    assert back.colour.matrix == matrix and back.colour.space == space
    with video.VideoReader(back) as reader:
        (first,) = list(reader.events(video.Window(), (), ()))
        rgb = reader.rgb(first)
    assert rgb.dtype == np.float32 and rgb.shape == (32, 64, 3)
    inner = (rgb[4:28, 4:12] * 255, rgb[4:28, 20:28] * 255, rgb[4:28, 36:44] * 255, rgb[4:28, 52:60] * 255)
    for patch, colour in zip(inner, colours):
        assert np.abs(patch - colour).max() <= 4


def test_frames_deeper_than_8_bits_are_read_through_16_bit_rgb(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    colours = np.array([[230, 30, 30], [30, 200, 40], [20, 40, 220], [240, 240, 20]], np.uint8)
    frame = np.repeat(np.repeat(colours[None], 32, axis=0), 16, axis=1)
    out = av.open(str(tmp_path / "deep.mkv"), "w")
    stream = out.add_stream("libx264", rate=8, options={"preset": "ultrafast", "crf": "0"})
    stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p10le"
    stream.codec_context.colorspace, stream.codec_context.color_range = 1, 1  # BT.709, limited
    picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
        format="yuv420p10le", dst_colorspace=1, dst_color_range=1
    )
    picture.pts = 0
    out.mux(stream.encode(picture))
    out.mux(stream.encode(None))
    out.close()
    info = video.probe(tmp_path / "deep.mkv")
    assert info.bit_depth == 10 and info.colour.matrix == 1
    with video.VideoReader(info) as reader:
        (first,) = list(reader.events(video.Window(), (), ()))
        rgb = reader.rgb(first)
    for i, colour in enumerate(colours):
        assert np.abs(rgb[4:28, 16 * i + 4 : 16 * i + 12] * 255 - colour).max() <= 1.5


def test_the_frame_at_a_time_is_shown_as_a_player_shows_it(tmp_path: Path) -> None:
    pytest.importorskip("av")
    from videoclips import FPS, make_clip, pattern

    clip = make_clip(tmp_path / "c.mp4")
    frame = video.read_frame_at(clip, 1.0)
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    errors = [np.abs(frame.astype(int) - pattern(i)).mean() for i in range(2 * FPS)]
    assert int(np.argmin(errors)) == FPS  # the frame shown at 1 s
    turned = video.read_frame_at(make_clip(tmp_path / "t.mp4", rotation=90, seconds=0.5), 0)
    assert turned.shape == (64, 48, 3)
    with pytest.raises(VideoError, match="lasts"):
        video.read_frame_at(clip, 5)
    with pytest.raises(UsageError, match="--at -1"):
        video.read_frame_at(clip, -1)


def test_encoding_defaults_and_limits() -> None:
    assert video.Encoding("h264").resolved() == video.Encoding("h264", 18, "medium")
    assert video.Encoding("av1").resolved() == video.Encoding("av1", 24, "8")
    assert video.Encoding("vp9", preset="2").resolved().options()["cpu-used"] == "2"
    with pytest.raises(UsageError, match="--video-codec 'mpeg2'"):
        video.Encoding("mpeg2").resolved()
    assert video.even_size(83, 62) == (82, 62) and video.even_size(1, 1) == (2, 2)

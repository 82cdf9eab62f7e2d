"""Reading and writing video with PyAV (the optional extra ``spsr-cli[video]``; FFmpeg inside its wheel).

Nothing here imports PyAV at module level: :func:`sniff_container` tells a video from its
first bytes without it, so a video given without PyAV installed fails with the install
command (:data:`INSTALL`) instead of a confusing image error.

Pixels cross this module's boundary as arrays:

* decoded frames: H x W x 3 float32 RGB in [0, 1] (:meth:`VideoReader.rgb`), converted from
  the stream's YUV with the stream's own matrix (BT.601/709/2020) and range (limited/full);
  frames deeper than 8 bits are converted through 16-bit RGB;
* frames to encode: H x W x 3 RGB, uint8 (0..255) or uint16 (0..65535)
  (:meth:`VideoWriter.write_frame`), converted to YUV 4:2:0 with the same matrix and range,
  and tagged with the source's range, primaries, transfer and matrix.

The display rotation (a display matrix beside the stream), the sample aspect ratio, the time
base and every frame's presentation time and duration are carried from the input to the
output, so a variable frame rate stays variable. Audio and subtitle packets are copied
byte for byte where the output container takes their codec; audio it does not take is
re-encoded (AAC, or Opus for WebM, which takes no AAC); subtitles and data streams it does
not take are left out with a warning.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from spsr_cli.errors import UsageError, VideoError

log = logging.getLogger(__name__)

#: How to get PyAV (FFmpeg) for video inputs.
INSTALL = 'pip install "spsr-cli[video]"'
#: Extensions taken as video without looking inside (the contents still decide how it is read).
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".m4v", ".mov", ".mkv", ".webm")
#: FFmpeg muxer for each output extension.
MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
#: ``--video-codec`` -> the FFmpeg encoder in PyAV's wheel.
ENCODERS = {"h264": "libx264", "hevc": "libx265", "av1": "libsvtav1", "vp9": "libvpx-vp9"}
#: Default ``--crf`` per codec (each encoder has its own scale; 18 is x264's "visually lossless" region).
DEFAULT_CRF = {"h264": 18, "hevc": 20, "av1": 24, "vp9": 24}
#: ``--preset`` values per codec and the default: x264/x265 speed names, SVT-AV1 0 (slowest) .. 13,
#: libvpx-vp9 ``cpu-used`` 0 (slowest) .. 8.
_X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
PRESETS: dict[str, tuple[str, ...]] = {
    "h264": _X26X_PRESETS,
    "hevc": _X26X_PRESETS,
    "av1": tuple(str(n) for n in range(14)),
    "vp9": tuple(str(n) for n in range(9)),
}
DEFAULT_PRESET = {"h264": "medium", "hevc": "medium", "av1": "8", "vp9": "4"}
#: Codecs each output container takes for the re-encoded video.
_VIDEO_CODECS_BY_MUXER = {
    "mp4": ("h264", "hevc", "av1", "vp9"),
    "mov": ("h264", "hevc", "av1", "vp9"),
    "matroska": ("h264", "hevc", "av1", "vp9"),
    "webm": ("av1", "vp9"),
}
#: The audio codec used when the output container does not take the source's.
_FALLBACK_AUDIO = {"webm": "libopus"}
_ATTACHED_PIC = 1024  # AV_DISPOSITION_ATTACHED_PIC: cover art, not a video

# AVColorSpace (stream/frame tags) -> swscale's SWS_CS_* matrix used for the conversion.
_SWS_ITU709, _SWS_FCC, _SWS_ITU601, _SWS_SMPTE240M, _SWS_BT2020 = 1, 4, 5, 7, 9
_MATRIX_BY_COLORSPACE = {1: _SWS_ITU709, 4: _SWS_FCC, 5: _SWS_ITU601, 6: _SWS_ITU601, 7: _SWS_SMPTE240M}
_MATRIX_BY_COLORSPACE.update({9: _SWS_BT2020, 10: _SWS_BT2020})
# SWS_CS_* -> the AVColorSpace tag written when the source had none (so players see what we used).
_TAG_BY_MATRIX = {_SWS_ITU709: 1, _SWS_FCC: 4, _SWS_ITU601: 6, _SWS_SMPTE240M: 7, _SWS_BT2020: 9}
_RANGE_MPEG, _RANGE_JPEG = 1, 2
_UNSPECIFIED = 2  # AVCOL_PRI/TRC/SPC_UNSPECIFIED


def _av():
    """The ``av`` module, or :class:`VideoError` naming the install command."""
    try:
        import av
    except ImportError:
        raise VideoError(f"video needs PyAV (FFmpeg), which is not installed: {INSTALL}") from None
    return av


# ---------------------------------------------------------------- recognising a video


def sniff_container(path: Path) -> str | None:
    """The container of ``path`` from its first bytes: ``mp4``, ``mov``, ``matroska``, ``webm`` or None.

    ISO base media files (MP4, MOV) start with a box whose type is ``ftyp`` (the brand ``qt``
    marks QuickTime), ``moov``, ``mdat``, ``wide``, ``free`` or ``skip``; Matroska and WebM
    with the EBML magic, and name their DocType in the header. No PyAV needed.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return None
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "mov" if head[8:12] == b"qt  " else "mp4"
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if b"webm" in head else "matroska"
    return None


def is_video_file(path: Path) -> bool:
    """True for a regular file whose contents are a video container, or whose extension names one
    (a damaged ``.mp4`` is still a video: reading it then says what is wrong)."""
    path = Path(path)
    try:
        if not path.is_file():
            return False
    except OSError:
        return False
    return path.suffix.lower() in VIDEO_EXTENSIONS or sniff_container(path) is not None


def muxer_for(path: Path) -> str:
    """The FFmpeg muxer for an output path, by its extension; :class:`UsageError` for others."""
    try:
        return MUXERS[Path(path).suffix.lower()]
    except KeyError:
        raise UsageError(
            f"{Path(path).name}: a video is written as {', '.join(sorted(set(MUXERS)))}; "
            f"{Path(path).suffix or '(no extension)'} is not one of them"
        ) from None


def check_codec(codec: str, muxer: str) -> None:
    """Refuse a ``--video-codec`` the output container cannot hold (WebM: VP9 and AV1 only)."""
    if codec not in ENCODERS:
        raise UsageError(f"--video-codec {codec!r} is not one of {', '.join(ENCODERS)}")
    if codec not in _VIDEO_CODECS_BY_MUXER[muxer]:
        takes = ", ".join(_VIDEO_CODECS_BY_MUXER[muxer])
        raise UsageError(f"--video-codec {codec}: a {muxer} file cannot hold it; use one of {takes}")


def default_codec(muxer: str) -> str:
    """H.264, except in WebM (which takes none): VP9."""
    return "vp9" if muxer == "webm" else "h264"


# ---------------------------------------------------------------- probing


@dataclass(frozen=True)
class Colour:
    """Colour tags of a stream (FFmpeg's AVColorRange / AVColorPrimaries / AVColorTransferCharacteristic /
    AVColorSpace numbers) and the matrix used to convert its YUV to RGB (swscale's SWS_CS_*)."""

    range: int
    primaries: int
    trc: int
    space: int
    matrix: int

    @property
    def full_range(self) -> bool:
        return self.range == _RANGE_JPEG


@dataclass(frozen=True)
class StreamInfo:
    """A stream besides the video: its index in the file, type (audio, subtitle, data) and codec."""

    index: int
    type: str
    codec: str


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video file.

    Sizes are in stored (coded-display) pixels, before the rotation a player applies.
    ``frames`` is the count the container states (None where it states none, as Matroska);
    ``duration`` is in seconds (None when unknown); ``rate`` the average frame rate.
    """

    path: Path
    container: str
    width: int
    height: int
    frames: int | None
    duration: float | None
    rate: Fraction | None
    time_base: Fraction
    codec: str
    pix_fmt: str
    bit_depth: int
    rotation: int
    colour: Colour
    sample_aspect_ratio: Fraction | None
    bit_rate: int | None
    size_bytes: int
    video_index: int
    others: tuple[StreamInfo, ...] = field(default_factory=tuple)


def _ffmpeg_errors() -> tuple[type[BaseException], ...]:
    av = _av()
    return (av.error.FFmpegError, OSError, ValueError, EOFError)


def _open_input(path: Path):
    av = _av()
    try:
        return av.open(os.fspath(path), "r")
    except _ffmpeg_errors() as err:
        raise VideoError(
            f"cannot read {path}: not a readable video ({_reason(err)}); is it corrupt or truncated?"
        ) from None


def _reason(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return str(text).strip().rstrip(".")


def _video_stream(container: Any, path: Path) -> Any:
    for stream in container.streams.video:
        if not int(stream.disposition) & _ATTACHED_PIC:
            return stream
    kinds = sorted({s.type for s in container.streams}) or ["no streams"]
    raise VideoError(f"{path} has no video stream (it holds {', '.join(kinds)}); give a video file")


def _colour(frame: Any, height: int) -> Colour:
    """The conversion matrix and tags of a decoded frame; an untagged matrix is taken as BT.709 for HD
    (720 lines and more) and BT.601 below, as players do."""
    space = int(frame.colorspace)
    if space == 0:  # RGB source (gbrp...): no matrix of its own; the output uses BT.709
        matrix = _SWS_ITU709
    else:
        matrix = _MATRIX_BY_COLORSPACE.get(space, _SWS_ITU709 if height >= 720 else _SWS_ITU601)
    fmt = frame.format.name
    rng = int(frame.color_range) or (_RANGE_JPEG if fmt.startswith("yuvj") else _RANGE_MPEG)
    return Colour(
        range=rng,
        primaries=int(frame.color_primaries),
        trc=int(frame.color_trc),
        space=space if space in _MATRIX_BY_COLORSPACE else _TAG_BY_MATRIX[matrix],
        matrix=matrix,
    )


def _check_index(container: Any, stream: Any, path: Path) -> None:
    """Refuse an MP4/MOV whose sample index points past the end of the file (it was cut short: the
    index is written first with ``faststart``). Matroska and WebM keep no full index: a truncated one
    ends early (see :func:`spsr_cli.engine.video.upscale_video`)."""
    if not container.format.name.startswith("mov"):
        return
    size = path.stat().st_size
    end = max((entry.pos + entry.size for entry in stream.index_entries), default=0)
    if end > size:
        raise VideoError(
            f"{path} is truncated: its frame index reaches byte {end:,} but the file has {size:,} bytes; "
            "copy or download it again"
        )


def probe(path: Path) -> VideoInfo:
    """Read a video's streams and its first frame; :class:`VideoError` names what is wrong
    (no PyAV, unreadable or truncated file, audio only, no decodable frame)."""
    path = Path(path)
    container = _open_input(path)
    try:
        stream = _video_stream(container, path)
        try:
            first = next(iter(container.decode(stream)), None)
        except _ffmpeg_errors() as err:
            raise VideoError(f"cannot decode {path}: {_reason(err)}; is it corrupt or truncated?") from None
        if first is None:
            raise VideoError(f"{path} holds no decodable video frame; is it corrupt or truncated?")
        _check_index(container, stream, path)
        components = first.format.components
        depth = max((c.bits for c in components), default=8)
        cc = stream.codec_context
        duration = None
        if stream.duration is not None and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        others = tuple(
            StreamInfo(index=s.index, type=s.type, codec=s.codec_context.name if s.codec_context else "unknown")
            for s in container.streams
            if s.index != stream.index and s.type in ("audio", "subtitle", "data")
        )
        return VideoInfo(
            path=path,
            container=container.format.name,
            width=first.width,
            height=first.height,
            frames=int(stream.frames) or None,
            duration=duration,
            rate=stream.average_rate or stream.guessed_rate,
            time_base=stream.time_base,
            codec=cc.name,
            pix_fmt=first.format.name,
            bit_depth=depth,
            rotation=int(round(first.rotation or 0)),
            colour=_colour(first, first.height),
            sample_aspect_ratio=stream.sample_aspect_ratio or None,
            bit_rate=(cc.bit_rate or container.bit_rate or None),
            size_bytes=path.stat().st_size,
            video_index=stream.index,
            others=others,
        )
    finally:
        container.close()


def frame_times(path: Path, index: int) -> np.ndarray:
    """Presentation times (in the stream's time base) of every frame of video stream ``index``, sorted.

    Reads packets only (nothing is decoded): the frame count where the container states none,
    and where ``--frames START:END`` falls in time. 8 bytes per frame.
    """
    container = _open_input(path)
    try:
        stream = container.streams[index]
        times = np.empty(1024, np.int64)
        count = 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                if count == len(times):
                    times = np.resize(times, 2 * count)
                times[count] = packet.pts
                count += 1
        except _ffmpeg_errors() as err:
            raise VideoError(f"cannot read {path}: {_reason(err)}; is it corrupt or truncated?") from None
        return np.sort(times[:count])
    finally:
        container.close()


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class Frame:
    """A decoded frame travelling to the network: ``index`` in presentation order (from 0), ``pts`` and
    ``duration`` in the video stream's time base, ``picture`` the PyAV frame (see :meth:`VideoReader.rgb`)."""

    index: int
    pts: int
    duration: int
    picture: Any


@dataclass(frozen=True)
class Other:
    """A packet of a copied stream (``decoded`` False) or a decoded audio frame of a re-encoded one,
    from the input stream ``index``."""

    index: int
    item: Any
    decoded: bool


@dataclass(frozen=True)
class Window:
    """Which part of the video to take: frames ``start`` .. ``end`` (exclusive; None: to the end),
    at most ``fps_limit`` frames per second (None: all), and the time span in seconds that the
    copied streams are cut to (None: everything)."""

    start: int = 0
    end: int | None = None
    fps_limit: float | None = None
    seconds: tuple[float, float] | None = None


class VideoReader:
    """Demuxes and decodes one input for :class:`VideoWriter`; use as a context manager.

    :meth:`events` yields, in file order, :class:`Frame` s of the video stream and the packets
    (copied) or decoded audio frames (re-encoded) of the other streams the writer keeps.
    """

    def __init__(self, info: VideoInfo) -> None:
        self.info = info
        self._container = _open_input(info.path)
        self._stream = self._container.streams[info.video_index]
        self._stream.thread_type = "AUTO"

    def stream(self, index: int) -> Any:
        return self._container.streams[index]

    def events(self, window: Window, copy: Sequence[int], decode: Sequence[int]) -> Iterator[object]:
        """:class:`Frame` s, and :class:`Other` s of the streams ``copy`` (packets) and ``decode`` (audio frames).

        Timestamps are shifted so the output starts where the first kept frame starts when
        ``window.start`` > 0. Raises :class:`VideoError` when the file cannot be read on.
        """
        info, tb = self.info, self._stream.time_base
        streams = [self._stream] + [self._container.streams[i] for i in (*copy, *decode)]
        index = 0
        next_time = None
        offset = 0.0
        if window.start > 0 and window.seconds is not None:
            offset = window.seconds[0]
        last_pts = None

        def shifted(value: int | None, time_base: Fraction) -> int | None:
            return None if value is None or not offset else value - round(offset / time_base)

        try:
            for packet in self._container.demux(*streams):
                if packet.stream.index != info.video_index:
                    if packet.size == 0 or packet.pts is None:
                        continue
                    if window.seconds is not None:
                        begin = float(packet.pts * packet.time_base)
                        end = begin + float((packet.duration or 0) * packet.time_base)
                        if end <= window.seconds[0] or begin >= window.seconds[1]:
                            continue
                    if offset:
                        packet.pts = shifted(packet.pts, packet.time_base)
                        packet.dts = shifted(packet.dts, packet.time_base)
                    if packet.stream.index in copy:
                        yield Other(packet.stream.index, packet, decoded=False)
                    else:
                        for audio in packet.decode():
                            yield Other(packet.stream.index, audio, decoded=True)
                    continue
                for picture in packet.decode():
                    if window.end is not None and index >= window.end:
                        return
                    position = index
                    index += 1
                    if position < window.start:
                        continue
                    pts = picture.pts if picture.pts is not None else (last_pts + 1 if last_pts is not None else 0)
                    if window.fps_limit is not None:
                        now = float(pts * tb)
                        if next_time is not None and now < next_time - 1e-9:
                            continue
                        next_time = (now if next_time is None else next_time) + 1 / window.fps_limit
                    if last_pts is not None and pts <= last_pts:
                        pts = last_pts + 1  # encoders need strictly increasing times
                    last_pts = pts
                    duration = int(picture.duration or 0) or (round(1 / (info.rate * tb)) if info.rate else 1)
                    yield Frame(
                        index=position, pts=shifted(pts, tb) if offset else pts, duration=duration, picture=picture
                    )
        except _ffmpeg_errors() as err:
            raise VideoError(
                f"cannot read {info.path} after frame {index}: {_reason(err)}; is it corrupt or truncated?"
            ) from None

    def rgb(self, frame: Frame) -> np.ndarray:
        """H x W x 3 float32 RGB in [0, 1] of a decoded frame (the stream's matrix and range)."""
        colour = self.info.colour
        deep = self.info.bit_depth > 8
        array = frame.picture.to_ndarray(
            format="rgb48le" if deep else "rgb24",
            src_colorspace=colour.matrix,
            src_color_range=colour.range,
            dst_color_range=_RANGE_JPEG,
            interpolation="BICUBIC",
        )
        return array.astype(np.float32) * np.float32(1 / (65535 if deep else 255))

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_frame_at(path: Path, seconds: float) -> np.ndarray:
    """The frame shown at ``seconds`` (the last one starting at or before it) as H x W x 3 uint8 RGB,
    turned as the display rotation says. :class:`VideoError` for unreadable files or times past the end."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise UsageError(f"--at {seconds}: give a time in seconds from the start, >= 0")
    info = probe(path)
    if info.duration is not None and seconds > info.duration:
        raise VideoError(f"--at {seconds:g}: {path} lasts {info.duration:.2f} s")
    with VideoReader(info) as reader:
        chosen = None
        target = None
        for event in reader.events(Window(), copy=(), decode=()):
            assert isinstance(event, Frame)
            start = float(event.pts * info.time_base)
            if target is None:
                target = start + seconds
            if start > target + 1e-9:
                break
            chosen = event
        if chosen is None:
            raise VideoError(f"{path} has no frame to show")
        rgb = (reader.rgb(chosen) * 255 + 0.5).astype(np.uint8) if info.bit_depth > 8 else None
        if rgb is None:
            rgb = chosen.picture.to_ndarray(
                format="rgb24",
                src_colorspace=info.colour.matrix,
                src_color_range=info.colour.range,
                dst_color_range=_RANGE_JPEG,
            )
    turns = round(info.rotation / 90) % 4  # counter-clockwise quarter turns
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


# ---------------------------------------------------------------- writing


@dataclass(frozen=True)
class Encoding:
    """How the video stream is encoded: ``codec`` (a key of :data:`ENCODERS`), ``crf`` and ``preset``."""

    codec: str = "h264"
    crf: int | None = None
    preset: str | None = None

    def resolved(self) -> Encoding:
        """With the codec's defaults filled in; :class:`UsageError` for values the codec does not take."""
        if self.codec not in ENCODERS:
            raise UsageError(f"--video-codec {self.codec!r} is not one of {', '.join(ENCODERS)}")
        crf = DEFAULT_CRF[self.codec] if self.crf is None else self.crf
        top = 51 if self.codec in ("h264", "hevc") else 63
        if not 0 <= crf <= top:
            raise UsageError(f"--crf {crf}: {self.codec} takes 0 (best) .. {top}")
        preset = DEFAULT_PRESET[self.codec] if self.preset is None else str(self.preset).lower()
        if preset not in PRESETS[self.codec]:
            raise UsageError(f"--preset {self.preset!r}: {self.codec} takes one of {', '.join(PRESETS[self.codec])}")
        return Encoding(codec=self.codec, crf=crf, preset=preset)

    def options(self) -> dict[str, str]:
        """The encoder's FFmpeg options."""
        crf, preset = str(self.crf), str(self.preset)
        if self.codec == "h264":
            return {"crf": crf, "preset": preset}
        if self.codec == "hevc":
            return {"crf": crf, "preset": preset, "x265-params": "log-level=error"}
        if self.codec == "av1":
            return {"crf": crf, "preset": preset}
        return {"crf": crf, "b": "0", "deadline": "good", "cpu-used": preset, "row-mt": "1"}


def even_size(width: int, height: int) -> tuple[int, int]:
    """The largest size <= (width, height) that 4:2:0 chroma can hold (both even, at least 2)."""
    return max(2, width - width % 2), max(2, height - height % 2)


class VideoWriter:
    """Encodes frames and muxes kept streams into ``path`` (any name: ``muxer`` says the format).

    The video stream gets the source's time base, frame rate, colour tags, sample aspect ratio
    and display rotation; frames are passed with their own presentation times. Streams of
    ``info.others`` (taken from ``reader``; None or ``keep=False``: video only) are copied where
    ``muxer`` takes their codec (:attr:`copied`), audio it does not take is re-encoded
    (:attr:`reencoded`), the rest left out (:attr:`dropped`).
    All methods but the constructor run on one thread (the writer's).
    """

    def __init__(
        self,
        path: Path,
        muxer: str,
        info: VideoInfo,
        reader: VideoReader | None,
        *,
        size: tuple[int, int],
        encoding: Encoding,
        keep: bool = True,
    ) -> None:
        av = _av()
        self.info = info
        self.encoding = encoding
        self.width, self.height = size
        self.frames = 0
        self.copied: dict[int, Any] = {}
        self.reencoded: dict[int, Any] = {}
        self.dropped: list[StreamInfo] = []
        try:
            self._out = av.open(os.fspath(path), "w", format=muxer)
        except _ffmpeg_errors() as err:
            raise VideoError(f"cannot write {path}: {_reason(err)}") from None
        try:
            self._video = self._add_video(encoding, info)
            for other in info.others if keep and reader is not None else ():
                self._add_other(other, reader.stream(other.index), muxer)
        except BaseException:
            self._out.close()
            raise
        self._reformat = None

    def _add_video(self, encoding: Encoding, info: VideoInfo) -> Any:
        stream = self._out.add_stream(ENCODERS[encoding.codec], rate=info.rate or None, options=encoding.options())
        stream.width, stream.height, stream.pix_fmt = self.width, self.height, "yuv420p"
        stream.time_base = info.time_base
        cc = stream.codec_context
        cc.time_base = info.time_base
        if info.rate:
            cc.framerate = info.rate
        colour = info.colour
        cc.color_range, cc.colorspace = colour.range, colour.space
        cc.color_primaries, cc.color_trc = colour.primaries, colour.trc
        if info.sample_aspect_ratio:
            cc.sample_aspect_ratio = info.sample_aspect_ratio
        cc.thread_count = 0
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        return stream

    def _add_other(self, other: StreamInfo, source: Any, muxer: str) -> None:
        try:
            self.copied[other.index] = self._out.add_stream_from_template(source)
            return
        except (ValueError, _av().error.FFmpegError) as err:
            reason = _reason(err)
        if other.type == "audio":
            codec = _FALLBACK_AUDIO.get(muxer, "aac")
            stream = self._out.add_stream(codec, rate=source.codec_context.sample_rate)
            stream.layout = source.codec_context.layout
            self.reencoded[other.index] = stream
            log.warning(
                "%s: audio stream %d (%s) cannot go into %s as it is (%s); re-encoding it as %s",
                self.info.path.name,
                other.index,
                other.codec,
                muxer,
                reason,
                stream.codec_context.name,
            )
            return
        self.dropped.append(other)
        log.warning(
            "%s: %s stream %d (%s) cannot go into %s (%s); it is left out",
            self.info.path.name,
            other.type,
            other.index,
            other.codec,
            muxer,
            reason,
        )

    def write_frame(self, rgb: np.ndarray, pts: int, duration: int) -> None:
        """Encode one H x W x 3 RGB frame (uint8 or uint16, cropped to the stream's size) at ``pts``."""
        av = _av()
        rgb = rgb[: self.height, : self.width]
        fmt = "rgb48le" if rgb.dtype == np.uint16 else "rgb24"
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=fmt)
        colour = self.info.colour
        yuv = picture.reformat(
            format="yuv420p",
            src_colorspace=colour.matrix,
            dst_colorspace=colour.matrix,
            src_color_range=_RANGE_JPEG,
            dst_color_range=colour.range,
            interpolation="BICUBIC",
        )
        yuv.pts, yuv.time_base, yuv.duration = pts, self.info.time_base, duration
        self._out.mux(self._video.encode(yuv))
        self.frames += 1

    def write_other(self, other: Other) -> None:
        """Mux a copied packet, or encode a decoded audio frame of a re-encoded stream."""
        if not other.decoded and other.index in self.copied:
            other.item.stream = self.copied[other.index]
            self._out.mux(other.item)
        elif other.decoded and other.index in self.reencoded:
            other.item.pts = None  # the encoder counts the samples from the start itself
            self._out.mux(self.reencoded[other.index].encode(other.item))

    def close(self) -> None:
        """Flush the encoders and finish the file."""
        self._out.mux(self._video.encode(None))
        for stream in self.reencoded.values():
            self._out.mux(stream.encode(None))
        self._out.close()

    def abandon(self) -> None:
        """Close without finishing (the file is removed by its caller)."""
        try:
            self._out.close()
        except _ffmpeg_errors():
            pass

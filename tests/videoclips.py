"""Small test clips made with PyAV in the test (no files shipped): a moving test pattern with a sine tone."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

#: Frames per second of the clips (few frames keep the tests fast: 2 s are 16 frames).
FPS = 8
SAMPLE_RATE = 48000


def pattern(index: int, width: int = 64, height: int = 48) -> np.ndarray:
    """Frame ``index`` of the test pattern: colour bars over a moving ramp, H x W x 3 uint8."""
    yy, xx = np.mgrid[0:height, 0:width]
    frame = np.stack([(xx * 4 + index * 9) % 256, (yy * 5) % 256, ((xx + yy) * 3 + index * 5) % 256], axis=-1)
    bars = [(255, 255, 255), (255, 255, 0), (0, 255, 255), (0, 255, 0), (255, 0, 255), (255, 0, 0), (0, 0, 255)]
    for i, colour in enumerate(bars):
        frame[: height // 3, i * width // len(bars) : (i + 1) * width // len(bars)] = colour
    return frame.astype(np.uint8)


def make_clip(
    path: Path,
    *,
    seconds: float = 2.0,
    size: tuple[int, int] = (64, 48),
    audio: str | None = "aac",
    video: bool = True,
    vfr: bool = False,
    rotation: int = 0,
    codec: str = "libx264",
    faststart: bool = False,
    subtitles: bool = False,
) -> Path:
    """Write a clip: ``seconds`` of the pattern at :data:`FPS` (``vfr``: frames 40 ms and 210 ms apart in
    turn, the same average), a 440 Hz sine tone in ``audio`` (None: no audio), ``rotation`` degrees of
    display rotation, and with ``subtitles`` a SubRip stream of one cue per second. The container follows
    the extension."""
    import av

    options = {"movflags": "+faststart"} if faststart else {}
    out = av.open(str(path), "w", options=options)
    time_base = Fraction(1, 1000)
    if video:
        stream = out.add_stream(codec, rate=FPS, options={"preset": "ultrafast"} if codec == "libx264" else {})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
    if audio:
        sound = out.add_stream(audio, rate=SAMPLE_RATE)
        sound.layout = "mono"
    if subtitles:
        text = out.add_mux_stream("subrip")
        text.time_base = time_base
        for second in range(int(seconds)):
            cue = av.Packet(f"line {second}".encode())
            cue.stream, cue.time_base = text, time_base
            cue.pts = cue.dts = second * 1000
            cue.duration = 800
            out.mux(cue)
    if video:
        pts = 0
        for index in range(round(seconds * FPS)):
            frame = av.VideoFrame.from_ndarray(pattern(index, *size), format="rgb24")
            step = (40 if index % 2 == 0 else 210) if vfr else 1000 // FPS
            frame.pts, frame.time_base, frame.duration = pts, time_base, step
            pts += step
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    if audio:
        samples = int(seconds * SAMPLE_RATE)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / SAMPLE_RATE)).astype(np.float32)
        for start in range(0, samples, 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="flt", layout="mono")
            chunk.sample_rate, chunk.pts = SAMPLE_RATE, start
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    out.close()
    return path


def packets(path: Path, kind: str) -> list[bytes]:
    """The payloads of every packet of the first ``kind`` (audio, video, subtitles) stream, in file order."""
    import av

    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        return [bytes(p) for p in container.demux(stream) if p.size]


def frames(path: Path) -> list:
    """(pts in seconds, width, height, rotation) of every decoded video frame."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(float(f.pts * f.time_base), f.width, f.height, f.rotation) for f in container.decode(stream)]


def duration(path: Path) -> float:
    """The container's duration in seconds."""
    import av

    with av.open(str(path)) as container:
        return container.duration / 1_000_000

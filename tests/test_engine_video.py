"""Videos through the engine: frames, times, audio, rotation, failures, trials (clips made with PyAV here)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("av")

import torch  # noqa: E402
from conftest import make_generator  # noqa: E402
from videoclips import FPS, duration, frames, make_clip, packets, pattern  # noqa: E402

from spsr_cli.engine.batch import Job, OutputSpec  # noqa: E402
from spsr_cli.engine.options import InferenceOptions  # noqa: E402
from spsr_cli.engine.tiling import Upscaler  # noqa: E402
from spsr_cli.engine.video import (  # noqa: E402
    DECODE_AHEAD,
    ENCODE_BEHIND,
    VideoSettings,
    disk_space_warning,
    estimate_output_bytes,
    parse_frames,
    plan_video_jobs,
    run_video_jobs,
    split_inputs,
    upscale_video,
)
from spsr_cli.errors import UsageError  # noqa: E402
from spsr_cli.files import temporary_files  # noqa: E402
from spsr_cli.io.video import Encoding, probe  # noqa: E402

CPU = InferenceOptions(device="cpu", precision="fp32", tile=0)


@pytest.fixture(scope="module")
def upscaler():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Upscaler(make_generator(), CPU)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4")


@pytest.fixture(scope="module")
def upscaled(clip: Path, upscaler):
    """The clip upscaled once with the defaults (several tests read it)."""
    target = clip.with_name("clip_x4.mp4")
    return upscale_video(probe(clip), target, upscaler), target


def test_same_frames_x4_size_same_duration_and_audio_bit_identical(clip, upscaled):
    report, target = upscaled
    before, after = frames(clip), frames(target)
    assert len(after) == len(before) == 2 * FPS == report.frames
    assert {(w, h) for _, w, h, _ in after} == {(256, 192)}
    assert [t for t, *_ in after] == pytest.approx([t for t, *_ in before], abs=1e-3)  # each frame at its time
    assert abs(duration(target) - duration(clip)) <= 1 / FPS
    audio = packets(clip, "audio")
    assert audio and packets(target, "audio") == audio  # copied byte for byte, every packet
    assert report.codecs == {"video": "h264 -> h264 (crf 18)", "audio": ["aac copied"]}
    assert not temporary_files(target)


def test_colour_tags_are_kept_and_the_untagged_matrix_is_written(clip, upscaled):
    _, target = upscaled
    source, out = probe(clip), probe(target)
    assert out.colour.range == source.colour.range
    assert out.colour.matrix == source.colour.matrix  # BT.601 for this small clip: said in the output's tags
    assert out.colour.space == 6 and out.pix_fmt == "yuv420p"
    assert out.time_base == source.time_base


def test_few_frames_are_in_flight_whatever_the_length(upscaled):
    report, _ = upscaled
    # decoded ahead + the one in the network + the ones waiting for the encoder, plus one handed over
    assert 1 <= report.max_in_flight <= DECODE_AHEAD + ENCODE_BEHIND + 2 < report.frames


def test_variable_frame_rate_stays_variable(tmp_path, upscaler):
    clip = make_clip(tmp_path / "vfr.mkv", vfr=True)
    upscale_video(probe(clip), tmp_path / "vfr_x4.mp4", upscaler)  # into another container, too
    before, after = [t for t, *_ in frames(clip)], [t for t, *_ in frames(tmp_path / "vfr_x4.mp4")]
    assert after == pytest.approx(before, abs=1e-3)
    gaps = {round(b - a, 3) for a, b in zip(after, after[1:])}
    assert gaps == {0.04, 0.21}
    assert packets(tmp_path / "vfr_x4.mp4", "audio") == packets(clip, "audio")


def test_rotation_metadata_is_kept(tmp_path, upscaler):
    clip = make_clip(tmp_path / "turned.mp4", rotation=90, seconds=0.5)
    upscale_video(probe(clip), tmp_path / "out.mp4", upscaler)
    assert {r for *_, r in frames(tmp_path / "out.mp4")} == {90}
    assert probe(tmp_path / "out.mp4").rotation == probe(clip).rotation == 90


def test_frames_range_and_fps_limit_for_trials(clip, tmp_path, upscaler):
    report = upscale_video(probe(clip), tmp_path / "part.mp4", upscaler, VideoSettings(frames=(4, 12)))
    assert report.frames == report.total == 8 == len(frames(tmp_path / "part.mp4"))
    assert frames(tmp_path / "part.mp4")[0][0] == pytest.approx(0.0)  # the range starts the output
    assert abs(duration(tmp_path / "part.mp4") - 8 / FPS) <= 1 / FPS + 0.03  # audio cut to the range (AAC frames)
    report = upscale_video(probe(clip), tmp_path / "half.mp4", upscaler, VideoSettings(fps_limit=FPS / 2))
    assert report.frames == report.total == FPS == len(frames(tmp_path / "half.mp4"))
    times = [t for t, *_ in frames(tmp_path / "half.mp4")]
    assert times == pytest.approx([2 * i / FPS for i in range(FPS)], abs=1e-3)  # every other frame, at its time


def test_odd_output_sizes_fit_4_2_0(clip, tmp_path, upscaler):
    report = upscale_video(
        probe(clip), tmp_path / "odd.mkv", upscaler, VideoSettings(frames=(0, 2)), outscale=1.3
    )  # 83 x 62 wanted
    assert report.output_size == (82, 62)
    assert {(w, h) for _, w, h, _ in frames(tmp_path / "odd.mkv")} == {(82, 62)}


def test_a_10_bit_source_goes_through_16_bit_frames_into_8_bit_output(tmp_path, upscaler):
    import av

    out = av.open(str(tmp_path / "deep.mkv"), "w")
    stream = out.add_stream("libx264", rate=FPS, options={"preset": "ultrafast"})
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p10le"
    for index in range(2):
        picture = av.VideoFrame.from_ndarray(pattern(index), format="rgb24").reformat(format="yuv420p10le")
        picture.pts = index
        out.mux(stream.encode(picture))
    out.mux(stream.encode(None))
    out.close()
    report = upscale_video(probe(tmp_path / "deep.mkv"), tmp_path / "out.mkv", upscaler)
    assert report.frames == 2 and probe(tmp_path / "out.mkv").pix_fmt == "yuv420p"
    assert {(w, h) for _, w, h, _ in frames(tmp_path / "out.mkv")} == {(256, 192)}


def test_audio_the_container_cannot_take_is_reencoded(clip, tmp_path, upscaler):
    report = upscale_video(probe(clip), tmp_path / "out.webm", upscaler, VideoSettings(frames=(0, 3)))
    assert report.codecs == {"video": "h264 -> vp9 (crf 24)", "audio": ["aac -> libopus"]}
    out = probe(tmp_path / "out.webm")
    assert out.codec == "vp9" and [o.codec for o in out.others] == ["opus"]


def test_subtitles_are_copied_where_the_container_takes_them(tmp_path, upscaler, caplog):
    clip = make_clip(tmp_path / "sub.mkv", subtitles=True)
    assert packets(clip, "subtitles") == [b"line 0", b"line 1"]
    settings = VideoSettings(frames=(0, 2))
    report = upscale_video(probe(clip), tmp_path / "out.mkv", upscaler, settings)
    assert packets(tmp_path / "out.mkv", "subtitles") == [b"line 0"]  # the range's cue, byte for byte
    assert report.codecs["subtitle"] == ["srt copied"]
    report = upscale_video(probe(clip), tmp_path / "out.mp4", upscaler, settings)  # MP4 takes no SubRip
    assert report.codecs["subtitle"] == ["srt left out"] and "it is left out" in caplog.text
    assert report.codecs["audio"] == ["aac copied"]


def test_a_bad_video_fails_alone_and_leaves_nothing(tmp_path, upscaler):
    good = make_clip(tmp_path / "good.mp4", seconds=0.5)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 20)
    whole = make_clip(tmp_path / "whole.mp4", faststart=True)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    sound = make_clip(tmp_path / "sound.m4a", video=False)
    sound = sound.rename(tmp_path / "sound.mp4")
    jobs = [Job(p, tmp_path / "out" / f"{p.stem}_x4.mp4") for p in (corrupt, truncated, sound, good)]
    result = run_video_jobs(jobs, upscaler._source, CPU)
    status = {r.source.name: (r.status, r.reason) for r in result.reports}
    assert status["good.mp4"] == ("written", None)
    assert "corrupt.mp4: not a readable video" in status["corrupt.mp4"][1]
    assert "truncated.mp4 is truncated: its frame index reaches byte" in status["truncated.mp4"][1]
    assert "no video stream (it holds audio)" in status["sound.mp4"][1]
    assert result.exit_code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_x4.mp4"]  # no temporaries, no claims


def test_an_interrupted_video_leaves_nothing_and_a_rerun_starts_again(clip, tmp_path, upscaler):
    target = tmp_path / "clip_x4.mp4"

    def stop(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_video_jobs([Job(clip, target)], upscaler._source, CPU, on_frame=stop)
    assert list(tmp_path.iterdir()) == []  # no half video, no temporary, no claim
    seen = []
    result = run_video_jobs([Job(clip, target)], upscaler._source, CPU, on_frame=lambda d, t: seen.append(d))
    assert result.reports[0].status == "written" and seen[0] == 1 and seen[-1] == 2 * FPS
    again = run_video_jobs([Job(clip, target)], lambda: pytest.fail("loaded"), CPU, skip_existing=True)
    assert again.reports[0].status == "skipped"


def test_frames_are_timed_without_one_off_costs_and_auto_names_the_model(tmp_path, upscaler):
    """Issue 26 carried to videos: the model's load and warm-up are recorded apart from the video's seconds,
    and under ``--model auto`` each video names the model it got and why."""
    from spsr_cli.engine.model_choice import AUTO, ModelChoice

    clip = make_clip(tmp_path / "clip.mp4", seconds=0.25, audio=None)
    loads: list[str | None] = []

    def load(name):
        loads.append(name)
        return upscaler._source

    choice = ModelChoice(AUTO, CPU, load=load, default_name="house", warm_up=True)
    result = run_video_jobs([Job(clip, tmp_path / "a.mp4")], choice, CPU)
    (report,) = result.reports
    assert report.status == "written" and loads == [None]
    assert report.model == {"model": "house", "reason": "not a JPEG"} and report.to_json()["model"] == report.model
    assert set(result.one_off) == {"house"} and result.one_off["house"]["warm_up_seconds"] > 0
    plain = run_video_jobs([Job(clip, tmp_path / "b.mp4")], upscaler._source, CPU, warm_up=True)
    assert plain.reports[0].model is None and "model" not in plain.reports[0].to_json()
    (costs,) = plain.one_off.values()
    assert costs["warm_up_seconds"] > 0 and plain.settings["backend"] == "torch"
    cold = run_video_jobs([Job(clip, tmp_path / "c.mp4")], upscaler._source, CPU)
    assert next(iter(cold.one_off.values()))["warm_up_seconds"] is None


def test_names_too_long_fail_alone_or_as_usage_errors(clip, tmp_path):
    """Issue 26 defect 3 for videos: an output name over 255 bytes fails that video alone; a --suffix or an
    -o name too long for any file name is a usage error before any work."""
    long_clip = tmp_path / ("v" * 251 + ".mp4")  # 255 bytes: its output v..v_x4.mp4 has 258
    long_clip.symlink_to(clip)
    (job,) = plan_video_jobs([long_clip], OutputSpec(), scale=4, settings=VideoSettings())
    assert "258 bytes, more than the 255" in job.problem
    result = run_video_jobs([job], lambda: pytest.fail("loaded"), CPU)
    assert result.reports[0].status == "failed" and "258 bytes" in result.reports[0].reason
    with pytest.raises(UsageError, match="choose a shorter --suffix"):
        plan_video_jobs([clip], OutputSpec(suffix="s" * 300), scale=4, settings=VideoSettings())
    with pytest.raises(UsageError, match="choose a shorter -o"):
        plan_video_jobs([clip], OutputSpec(output=tmp_path / ("o" * 300)), scale=4, settings=VideoSettings())


def test_disk_space_is_estimated_from_the_bit_rate(clip):
    info = probe(clip)
    base = estimate_output_bytes(info, (256, 192), 16, Encoding("h264", 18))
    assert base > info.size_bytes  # 16 times the pixels
    assert estimate_output_bytes(info, (256, 192), 16, Encoding("h264", 12)) > 1.9 * base - info.size_bytes
    assert disk_space_warning(Path("out.mp4"), base, free=base + 1) is None
    warning = disk_space_warning(Path("out.mp4"), 300 << 20, free=100 << 20)
    assert "out.mp4 may not fit: about 300 MiB" in warning and "100 MiB free" in warning and "--crf" in warning


def test_planning_names_outputs_like_images_and_refuses_bad_settings(clip, tmp_path):
    (job,) = plan_video_jobs([clip], OutputSpec(), scale=4, settings=VideoSettings())
    assert job.target == clip.with_name("clip_x4.mp4")
    (job,) = plan_video_jobs([clip], OutputSpec(output=tmp_path / "o.mkv"), scale=4, settings=VideoSettings())
    assert job.target == tmp_path / "o.mkv"
    (job,) = plan_video_jobs([clip], OutputSpec(ext="webm", suffix="big"), scale=4, settings=VideoSettings())
    assert job.target.name == "clip_big.webm"
    with pytest.raises(UsageError, match="webm file cannot hold it"):
        plan_video_jobs([clip], OutputSpec(ext="webm"), scale=4, settings=VideoSettings(codec="h264"))
    (job,) = plan_video_jobs([clip], OutputSpec(ext="png"), scale=4, settings=VideoSettings())
    assert job.target.name == "clip_x4.mp4"  # --ext png is for the images of the run
    with pytest.raises(UsageError, match="--ext xyz is neither"):
        plan_video_jobs([clip], OutputSpec(ext="xyz"), scale=4, settings=VideoSettings())
    with pytest.raises(UsageError, match="overwrite the input"):
        plan_video_jobs([clip], OutputSpec(output=clip), scale=4, settings=VideoSettings())
    with pytest.raises(UsageError, match="--preset 'fastest'"):
        VideoSettings(codec="h264", preset="fastest").check()
    with pytest.raises(UsageError, match="--crf 70"):
        VideoSettings(codec="vp9", crf=70).check()
    assert split_inputs([str(clip), "photos/", "*.png"]) == ([clip], ["photos/", "*.png"])


def test_parse_frames():
    assert parse_frames("0:48") == (0, 48)
    assert parse_frames("10:") == (10, None)
    assert parse_frames(":5") == (0, 5)
    assert parse_frames(None) is None
    for bad in ("5", "5:5", "a:b", "-1:3", "9:2"):
        with pytest.raises(UsageError, match="START:END"):
            parse_frames(bad)

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from spsr_cli.engine.batch import OutputSpec, plan_jobs, run_jobs, shard
from spsr_cli.engine.options import InferenceOptions
from spsr_cli.errors import UsageError

OPTS = InferenceOptions(device="cpu", tile=0)


def save(path, size=(12, 10), mode="RGB", **kw):
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    data = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    PILImage.fromarray(data.squeeze() if channels == 1 else data, mode).save(path, **kw)
    return path


def test_folder_recursive_mirrors_tree_into_output(tmp_path):
    save(tmp_path / "in/a.png")
    save(tmp_path / "in/sub/b.jpg")
    (tmp_path / "in/notes.txt").write_text("not an image")
    jobs = plan_jobs([str(tmp_path / "in")], OutputSpec(output=tmp_path / "out"), scale=4, recursive=True)
    assert sorted(str(j.target.relative_to(tmp_path)) for j in jobs) == ["out/a_x4.png", "out/sub/b_x4.jpg"]
    flat = plan_jobs([str(tmp_path / "in")], OutputSpec(output=tmp_path / "out"), scale=4)
    assert len(flat) == 1


def test_glob_suffix_ext_and_single_file_output(tmp_path):
    save(tmp_path / "p1.png")
    save(tmp_path / "p2.png")
    jobs = plan_jobs([str(tmp_path / "p*.png")], OutputSpec(suffix="_big", ext="webp"), scale=4)
    assert [j.target.name for j in jobs] == ["p1_big.webp", "p2_big.webp"]
    (job,) = plan_jobs([str(tmp_path / "p1.png")], OutputSpec(output=tmp_path / "x/result.tif"), scale=4)
    assert job.target == tmp_path / "x/result.tif"


def test_refuses_to_overwrite_an_input(tmp_path):
    save(tmp_path / "p.png")
    with pytest.raises(UsageError, match="overwrite the input"):
        plan_jobs([str(tmp_path / "p.png")], OutputSpec(suffix=""), scale=4)
    with pytest.raises(UsageError, match="overwrite the input"):
        plan_jobs([str(tmp_path / "p.png")], OutputSpec(output=tmp_path / "p.png"), scale=4)


@pytest.mark.parametrize(
    "inputs, message",
    [([], "no input"), (["/nonexistent/x.png"], "does not exist"), (["/nonexistent/*.png"], "matches no")],
)
def test_bad_inputs(inputs, message):
    with pytest.raises(UsageError, match=message):
        plan_jobs(inputs, OutputSpec(), scale=4)


def test_bad_extension(tmp_path):
    save(tmp_path / "p.png")
    with pytest.raises(Exception, match="gif"):
        plan_jobs([str(tmp_path / "p.png")], OutputSpec(ext="gif"), scale=4)


def test_shard_splits_without_overlap(tmp_path):
    for i in range(5):
        save(tmp_path / f"{i}.png")
    jobs = plan_jobs([str(tmp_path)], OutputSpec(output=tmp_path / "o"), scale=4)
    parts = [shard(jobs, r, 2) for r in range(2)]
    assert sorted(parts[0] + parts[1], key=str) == sorted(jobs, key=str) and not set(parts[0]) & set(parts[1])
    with pytest.raises(UsageError):
        shard(jobs, 2, 2)


def test_batch_goes_on_after_a_bad_file(tmp_path, tiny_model):
    save(tmp_path / "good.png", mode="RGBA")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    jobs = plan_jobs([str(tmp_path)], OutputSpec(output=tmp_path / "out"), scale=4)
    result = run_jobs(jobs, tiny_model, OPTS)
    assert result.exit_code == 1 and len(result.done) == 1 and len(result.failed) == 1
    assert "bad.png" in str(result.failed[0][0].source)
    out = PILImage.open(tmp_path / "out/good_x4.png")
    assert out.size == (48, 40) and out.mode == "RGBA"
    assert not list((tmp_path / "out").glob("*.tmp")) and not (tmp_path / "out/bad_x4.png").exists()


def test_alpha_is_resized_not_run_through_the_network(tmp_path, tiny_model):
    path = tmp_path / "a.png"
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 3] = 77  # constant alpha survives exactly
    PILImage.fromarray(rgba, "RGBA").save(path)
    run_jobs(plan_jobs([str(path)], OutputSpec(), scale=4), tiny_model, OPTS)
    alpha = np.asarray(PILImage.open(tmp_path / "a_x4.png"))[..., 3]
    assert np.all(alpha == 77)


def test_skip_existing_and_outscale(tmp_path, tiny_model):
    save(tmp_path / "a.png")
    jobs = plan_jobs([str(tmp_path / "a.png")], OutputSpec(), scale=4)
    assert len(run_jobs(jobs, tiny_model, OPTS, outscale=2).done) == 1
    assert PILImage.open(tmp_path / "a_x4.png").size == (24, 20)
    again = run_jobs(jobs, tiny_model, OPTS, skip_existing=True)
    assert len(again.skipped) == 1 and not again.done


def test_sixteen_bit_stays_sixteen_bit(tmp_path, tiny_model):
    path = tmp_path / "g16.png"
    data = (np.arange(120, dtype=np.uint16).reshape(10, 12) * 500).astype(np.uint16)
    PILImage.fromarray(data).save(path)
    run_jobs(plan_jobs([str(path)], OutputSpec(), scale=4), tiny_model, OPTS)
    out = PILImage.open(tmp_path / "g16_x4.png")
    assert out.mode.startswith("I") and out.size == (48, 40)


# ---------------------------------------------------------------- memory and the pipeline (issue 9)


def test_an_image_too_large_for_memory_fails_alone(tmp_path, tiny_model):
    save(tmp_path / "in/a_small.png")
    save(tmp_path / "in/b_huge.png", size=(1400, 1300))
    save(tmp_path / "in/c_small.png")
    jobs = plan_jobs([str(tmp_path / "in")], OutputSpec(output=tmp_path / "out"), scale=4)
    options = InferenceOptions(device="cpu", precision="fp32", tile="auto", memory_limit=96 << 20)
    result = run_jobs(jobs, tiny_model, options)
    assert [j.source.name for j in result.done] == ["a_small.png", "c_small.png"]
    ((job, message),) = result.failed
    assert job.source.name == "b_huge.png"
    assert "1400 x 1300 image (output 5600 x 5200)" in message and "--max-memory allows 96 MiB" in message
    assert not (tmp_path / "out/b_huge_x4.png").exists()


def test_an_allocation_failure_fails_that_file_only(tmp_path, tiny_model, monkeypatch):
    import spsr_cli.engine.pipeline as pipeline

    real = pipeline.upscale_image

    def fake(image, upscaler, **kw):
        if image.size == (30, 20):
            raise MemoryError("Unable to allocate 3.2 GiB for an array")
        return real(image, upscaler, **kw)

    monkeypatch.setattr(pipeline, "upscale_image", fake)
    save(tmp_path / "a.png")
    save(tmp_path / "b.png", size=(20, 30))
    save(tmp_path / "c.png")
    result = run_jobs(plan_jobs([str(tmp_path)], OutputSpec(output=tmp_path / "out"), scale=4), tiny_model, OPTS)
    assert [j.source.name for j in result.done] == ["a.png", "c.png"]
    assert [(j.source.name, m) for j, m in result.failed] == [("b.png", "Unable to allocate 3.2 GiB for an array")]


def test_decoding_and_writing_run_on_worker_threads_results_in_order(tmp_path, tiny_model, monkeypatch):
    import threading

    import spsr_cli.engine.batch as batch

    threads = {"read": set(), "write": set()}
    real_read, real_write = batch.read_image, batch.write_image
    monkeypatch.setattr(
        batch, "read_image", lambda p: threads["read"].add(threading.current_thread().name) or real_read(p)
    )
    monkeypatch.setattr(
        batch,
        "write_image",
        lambda *a, **k: threads["write"].add(threading.current_thread().name) or real_write(*a, **k),
    )
    for name in ("a", "c", "d"):
        save(tmp_path / f"{name}.png")
    (tmp_path / "b.png").write_bytes(b"not a png")
    (tmp_path / "out").mkdir()
    save(tmp_path / "out/d_x4.png")  # exists: skipped
    order = []
    jobs = plan_jobs([str(tmp_path)], OutputSpec(output=tmp_path / "out"), scale=4)
    result = run_jobs(
        jobs, tiny_model, OPTS, skip_existing=True, on_done=lambda job, problem: order.append(job.source.name)
    )
    assert order == ["a.png", "b.png", "c.png", "d.png"]  # reported in job order
    assert [j.source.name for j in result.done] == ["a.png", "c.png"] and len(result.skipped) == 1
    assert threads == {"read": {"spsr-decode"}, "write": {"spsr-encode_0"}}
    assert PILImage.open(tmp_path / "out/c_x4.png").size == (48, 40)


# ---------------------------------------------------------------- hardening (issue 10)


def _gif(path, frames=3):
    images = [PILImage.new("RGB", (12, 10), (60 * i, 100, 200 - 50 * i)) for i in range(frames)]
    images[0].save(path, save_all=frames > 1, append_images=images[1:])
    return path


def test_a_gif_fails_alone_naming_ext_in_lists_and_folders_alike(tmp_path, tiny_model):
    save(tmp_path / "in/good.png")
    _gif(tmp_path / "in/anim.gif")
    listed = plan_jobs(
        [str(tmp_path / "in/good.png"), str(tmp_path / "in/anim.gif")], OutputSpec(output=tmp_path / "a"), scale=4
    )
    folder = plan_jobs([str(tmp_path / "in")], OutputSpec(output=tmp_path / "b"), scale=4)
    for jobs, out in ((listed, "a"), (folder, "b")):
        result = run_jobs(jobs, tiny_model, OPTS)
        assert [j.source.name for j in result.done] == ["good.png"]
        ((job, message),) = result.failed
        assert job.source.name == "anim.gif" and "--ext png" in message
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == ["good_x4.png"]


def test_with_ext_an_animated_gif_is_upscaled_from_its_first_frame_with_a_warning(tmp_path, tiny_model, caplog):
    _gif(tmp_path / "anim.gif")
    jobs = plan_jobs([str(tmp_path)], OutputSpec(output=tmp_path / "out", ext="png"), scale=4)
    with caplog.at_level("WARNING", logger="spsr_cli"):
        assert len(run_jobs(jobs, tiny_model, OPTS).done) == 1
    assert "anim.gif has 3 frames" in caplog.text
    assert PILImage.open(tmp_path / "out/anim_x4.png").size == (48, 40)


def test_outputs_are_named_by_the_real_factor(tmp_path):
    save(tmp_path / "a.png")
    assert plan_jobs([str(tmp_path / "a.png")], OutputSpec(), scale=2)[0].target.name == "a_x2.png"
    assert plan_jobs([str(tmp_path / "a.png")], OutputSpec(), scale=3.5)[0].target.name == "a_x3.5.png"


def test_bad_destinations_are_refused_before_any_work(tmp_path, monkeypatch):
    save(tmp_path / "a.png")
    save(tmp_path / "b.png")
    inputs = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    (tmp_path / "taken.png").write_bytes(b"x")
    with pytest.raises(UsageError, match="is an existing file"):
        plan_jobs(inputs, OutputSpec(output=tmp_path / "taken.png"), scale=4)
    (tmp_path / "notes").write_text("a file")
    with pytest.raises(UsageError, match="is an existing file"):
        plan_jobs(inputs, OutputSpec(output=tmp_path / "notes"), scale=4)
    with pytest.raises(UsageError, match="looks like a file name"):
        plan_jobs(inputs, OutputSpec(output=tmp_path / "name.png"), scale=4)
    assert not (tmp_path / "name.png").exists()
    with pytest.raises(UsageError, match="--ext 'xyz'"):
        plan_jobs(inputs, OutputSpec(ext="xyz"), scale=4)
    with pytest.raises(UsageError, match="is a file, not a folder"):  # one input, -o below a file
        plan_jobs(inputs[:1], OutputSpec(output=tmp_path / "notes/sub"), scale=4)
    readonly = tmp_path / "ro"
    readonly.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == readonly else real_access(p, mode))
    with pytest.raises(UsageError, match="permission denied"):
        plan_jobs(inputs, OutputSpec(output=readonly / "new"), scale=4)


def test_a_rerun_removes_what_a_killed_run_left_and_skips_what_another_run_writes(tmp_path, tiny_model):
    import signal
    import time

    from spsr_cli.engine.claims import claim_output

    for name in ("a", "b", "c"):
        save(tmp_path / f"in/{name}.png")
    out = tmp_path / "out"
    out.mkdir()
    leftover = out / ".a_x4.png.zz12ab34.tmp"  # what kill -9 during a write leaves
    leftover.write_bytes(b"half")
    (out / ".a_x4.png.spsr-claim").write_text("999999\n")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - another run, busy writing b
        try:
            held = claim_output(out / "b_x4.png")
            os.write(write, b"1" if held else b"0")
            time.sleep(30)
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    try:
        result = run_jobs(plan_jobs([str(tmp_path / "in")], OutputSpec(output=out), scale=4), tiny_model, OPTS)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert [j.source.name for j in result.done] == ["a.png", "c.png"]
    assert [j.source.name for j in result.busy] == ["b.png"] and result.exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == [".b_x4.png.spsr-claim", "a_x4.png", "c_x4.png"]


# ---------------------------------------------------------------- issue 26, low defects


def test_a_dangling_symlink_is_named_as_one(tmp_path):
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(UsageError, match="symbolic link to .*gone.png.*does not exist"):
        plan_jobs([str(tmp_path / "link.png")], OutputSpec(), scale=4)


def test_a_world_size_that_is_not_a_number_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "abc")
    with pytest.raises(UsageError, match="WORLD_SIZE='abc' is not a whole number"):
        shard([], None, None)


def test_an_output_dated_after_the_run_began_is_rewritten_not_called_busy(tmp_path, tiny_model):
    """An existing output newer than the run's start (a clock ahead, a touch) was skipped as "written by
    another process"; only an output that changes during the run is."""
    save(tmp_path / "a.png")
    save(tmp_path / "a_x4.png", size=(48, 40))
    future = os.stat(tmp_path / "a_x4.png").st_mtime + 3600
    os.utime(tmp_path / "a_x4.png", (future, future))
    jobs = plan_jobs([str(tmp_path / "a.png")], OutputSpec(), scale=4)
    result = run_jobs(jobs, tiny_model, OPTS)
    assert [j.source.name for j in result.done] == ["a.png"] and not result.busy


def test_max_memory_applies_to_decoding_small_images_too(tmp_path, tiny_model, monkeypatch):
    """``--max-memory`` was ignored for decoding images under 16 MP: they were decoded ahead, unchecked."""
    from spsr_cli.engine import batch

    decoded = []
    real = batch.read_image
    monkeypatch.setattr(batch, "read_image", lambda path: decoded.append(path.name) or real(path))
    save(tmp_path / "a.png", size=(64, 64))
    jobs = plan_jobs([str(tmp_path / "a.png")], OutputSpec(output=tmp_path / "o"), scale=4)
    result = run_jobs(jobs, tiny_model, InferenceOptions(device="cpu", tile=0, memory_limit=4096))
    assert len(result.failed) == 1 and decoded == []  # refused from the header, never decoded

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


@pytest.mark.parametrize("inputs, message", [([], "no input"), (["/nonexistent/x.png"], "does not exist"), (["/nonexistent/*.png"], "matches no")])
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
